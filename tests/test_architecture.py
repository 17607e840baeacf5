"""The layering rules, checked: engine/ never imports Qt; the core that the GUI thread uses before
torch has loaded (config, events, errors, runfolder, layers) never imports torch; every module
imports on a system without `resource` (Windows). Contracts live in .importlinter."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    out = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


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
