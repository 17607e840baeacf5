"""The packaging metadata ships every subpackage and every resource the app opens at run time."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def test_every_subpackage_is_listed():
    listed = set(_project()["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "lora_studio").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    missing = on_disk - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_resource_files_match_package_data():
    import fnmatch

    patterns = _project()["tool"]["setuptools"]["package-data"]["lora_studio.resources"]
    res = ROOT / "resources"
    needed = [
        p.relative_to(res).as_posix()
        for p in res.rglob("*")
        if p.is_file() and p.suffix in {".qss", ".svg", ".png", ".jsonl"}
    ]
    assert needed, "resources/ holds no data files"
    unshipped = [n for n in needed if not any(fnmatch.fnmatch(n, pat) for pat in patterns)]
    assert not unshipped, f"resources not covered by package-data: {unshipped}"
