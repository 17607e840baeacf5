"""engine/ never imports Qt; the config and layer parsing never import torch (the GUI thread uses
them before torch has loaded). Each check runs in a fresh interpreter."""

import subprocess
import sys

import pytest

from lora_studio.engine.layers import format_layers, parse_layers
from lora_studio.engine import UserError

ENGINE = ["adapters", "budget", "data", "export", "fast", "layers", "lora", "loss", "models", "spectra",
          "targets", "train"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return set(out.split())


def test_engine_imports_no_qt():
    mods = _modules_after("".join(f"import lora_studio.engine.{m}\n" for m in ENGINE) + "import lora_studio.cli\n")
    assert "torch" in mods  # the imports really happened
    qt = sorted(m for m in mods if m.split(".")[0] in {"PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6"})
    assert not qt, f"engine/ pulled in Qt: {qt}"


def test_config_and_layers_import_no_torch():
    mods = _modules_after(
        "from lora_studio.config import RunConfig\n"
        "c = RunConfig.from_dict({'lora': {'targets': ['q', 'v'], 'layers': '0-3,5'}})\n"
        "from lora_studio.engine.layers import parse_layers\n"
        "assert parse_layers(c.lora.layers) == [0, 1, 2, 3, 5]\n"
    )
    assert "torch" not in mods and "transformers" not in mods


@pytest.mark.parametrize("text,layers", [(None, None), ("", None), ("all", None), (" ALL ", None),
                                         ("3", [3]), ("0-2,5", [0, 1, 2, 5]), ("5, 1-2 ,1", [1, 2, 5])])
def test_parse_layers(text, layers):
    assert parse_layers(text) == layers
    if layers:
        assert parse_layers(format_layers(layers)) == layers


@pytest.mark.parametrize("text", ["a", "1-", "-1", "5-2", "1-2-3", "0;1"])
def test_parse_layers_rejects(text):
    with pytest.raises(UserError, match="layers"):
        parse_layers(text)
