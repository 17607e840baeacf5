"""The layering rules, checked: engine/ never imports Qt; the core that the GUI thread uses before
torch has loaded (core/, config, events, errors, runfolder) never imports torch; the layers ui > cli > engine >
config > core hold; there is no import circle; every module
imports on a system without `resource` (Windows). Contracts live in .importlinter."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    out = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout  # no Qt in engine, a torch-free core, the layers


def _all_modules() -> list[str]:
    pkg = ROOT / "lora_studio"
    mods = []
    for p in sorted(pkg.rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        if p.name == "__main__.py":
            continue
        mods.append(".".join(rel.parts[:-1] if p.name == "__init__.py" else rel.parts))
    return mods


def test_every_module_imports_without_resource():
    """`resource` does not exist on Windows: no module may need it at import time."""
    # psutil's own Linux backend uses resource; on Windows it does not: load it first, as there
    code = ("import sys, psutil; psutil.Process().memory_info(); sys.modules['resource'] = None\n"
            "import importlib\n"
            f"for m in {_all_modules()!r}:\n"
            "    importlib.import_module(m)\n"
            "import lora_studio.engine.setup as s; rss, peak = s.process_memory(); assert 0 < rss <= peak, (rss, peak)\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_core_modules_load_no_torch():
    """What the GUI thread imports before torch is warm (engine/__init__ included)."""
    code = ("import sys\n"
            "import lora_studio.config, lora_studio.engine.events, lora_studio.engine.errors, "
            "lora_studio.engine.runfolder, lora_studio.engine.layers\n"
            "from lora_studio.config import RunConfig\n"
            "c = RunConfig.from_dict({'lora': {'targets': ['q', 'v']}})\n"
            "c.save(sys.argv[1])\n"
            "print(' '.join(m for m in ('torch', 'transformers', 'PySide6') if m in sys.modules))")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, "-c", code, str(Path(d) / "run.toml")], capture_output=True,
                             text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"loaded: {out.stdout}"  # RunConfig.save() no longer imports torch


def _import_circles() -> list[list[str]]:
    """Strongly connected groups of lora_studio modules (lazy imports inside functions count)."""
    import grimp

    g = grimp.build_graph("lora_studio")
    mods = sorted(g.modules)
    adj = {m: sorted(set(g.find_modules_directly_imported_by(m)) & set(mods)) for m in mods}
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for m in mods:
        if m not in index:
            visit(m)
    return found


def test_no_import_circles():
    assert _import_circles() == []


def test_argparse_and_config_read_the_core_enumerations():
    from lora_studio.cli import build_parser
    from lora_studio.core import names

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: tuple(a.choices) for a in train._actions if a.choices}
    assert choices["task"] == names.TASKS and choices["init"] == names.INITS
    assert choices["precision"] == names.PRECISIONS and choices["quantize"] == names.QUANTIZE
    assert choices["optimizer"] == names.OPTIMIZERS and choices["distributed"] == names.DISTRIBUTED
    assert choices["schedule"] == names.SCHEDULES and choices["format"] == names.FORMATS
    from lora_studio import config

    assert config.INITS is names.INITS and config.PRECISIONS is names.PRECISIONS  # re-exported, not copied


def test_scaling_and_precision_are_pure_core_functions():
    import math

    import pytest

    from lora_studio.core.errors import UserError
    from lora_studio.core.names import resolve_precision, scaling

    assert scaling(8, 16) == 2.0 and scaling(16, 16, rslora=True) == 16 / math.sqrt(16)
    assert resolve_precision("auto", "cuda", bf16_ok=True) == "bf16"
    assert resolve_precision("auto", "cuda", bf16_ok=False) == "fp16"
    assert resolve_precision("auto", "cpu") == resolve_precision("auto", "mps") == "fp32"
    with pytest.raises(UserError, match="fp16 training is for GPUs"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(UserError, match="T4 has no native bf16"):
        resolve_precision("bf16", "cuda", bf16_ok=False, gpu_name="T4")


def test_docs_name_every_module():
    """docs/architecture.md lists every module of lora_studio/ (a new module joins its table)."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    pkg = ROOT / "lora_studio"
    missing = [str(p.relative_to(pkg)) for p in sorted(pkg.rglob("*.py")) if f"`{p.relative_to(pkg)}`" not in doc]
    assert missing == [], f"add these to docs/architecture.md's module table: {missing}"


def test_no_function_over_100_lines_and_no_file_over_500():
    """Issue 23's limits: a function longer than 100 lines or a module longer than 500 is split
    before it lands (the loop, the CLI's parser and the main window were, this round)."""
    import ast

    long_files, long_functions = [], []
    for path in sorted((ROOT / "lora_studio").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(ROOT))
        if len(text.splitlines()) > 500:
            long_files.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 100:
                    long_functions.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert long_files == [], f"split these modules (≤ 500 lines): {long_files}"
    assert long_functions == [], f"split these functions (≤ 100 lines): {long_functions}"
