"""The GGUF section: choices a user makes become the engine call's arguments; "merged" follows the
engine's converter check; an adapter GGUF is written and its result shown."""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import QPoint, Qt

import tiny

pytest.importorskip("gguf", reason="pip install 'lora-studio[gguf]'")


def click(qtbot, button):
    qtbot.mouseClick(button, Qt.LeftButton, pos=QPoint(8, button.height() // 2))


def set_llama_cpp(qtbot, w, folder):
    w.llama_cpp.setFocus()
    w.llama_cpp.selectAll()
    qtbot.keyClicks(w.llama_cpp, str(folder))
    with qtbot.waitSignal(w.converter_checked, timeout=10_000) as got:
        qtbot.keyClick(w.llama_cpp, Qt.Key_Return)
    return got.args[0]


def test_merged_follows_the_converter_and_q8_needs_merged(qtbot, tmp_path):
    from lora_studio.ui.gguf_section import GGUFSection

    w = GGUFSection(str(tmp_path / "runs" / "demo"))
    qtbot.addWidget(w)
    w.show()
    assert w.out.text() == str(tmp_path / "runs" / "demo.gguf")
    assert not w.type.isEnabled()
    click(qtbot, w.enabled)
    assert w.type.isEnabled() and w.adapter_only.isChecked()
    empty = tmp_path / "no-llama"
    empty.mkdir()
    assert set_llama_cpp(qtbot, w, empty) is False
    assert not w.merged.isEnabled()
    assert "holds no convert_hf_to_gguf.py" in w.hint.text()
    q8 = w.type.model().item(w.type.findData("q8_0"))
    assert not q8.isEnabled()
    checkout = tmp_path / "llama.cpp"
    checkout.mkdir()
    (checkout / "convert_hf_to_gguf.py").write_text("# stands in for llama.cpp's converter\n")
    assert set_llama_cpp(qtbot, w, checkout) is True
    assert w.merged.isEnabled()
    click(qtbot, w.merged)
    assert q8.isEnabled()
    w.type.setCurrentIndex(w.type.findData("q8_0"))
    assert w.options() == {"merged": True, "type": "q8_0", "llama_cpp": str(checkout)}
    click(qtbot, w.adapter_only)  # q8_0 is for merged files: back to f16
    assert w.options() == {"merged": False, "type": "f16", "llama_cpp": str(checkout)}
    w.runner.wait_all()


def test_adapter_gguf_is_written_and_shown(qtbot, tmp_path):
    from gguf import GGUFReader

    from lora_studio import LoraSpec, inject, save_adapter
    from lora_studio.engine.models import load_model
    from lora_studio.ui.gguf_section import GGUFSection

    base = tiny.model_folder(tmp_path / "base", "llama")
    model = load_model(str(base), "causal-lm")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8.0))
    tiny.randomize_adapters(model, scale=0.3)
    save_adapter(model, tmp_path / "run", str(base))

    w = GGUFSection(str(tmp_path / "run"))
    qtbot.addWidget(w)
    w.resize(420, 300)
    w.show()
    click(qtbot, w.enabled)
    w.type.setCurrentIndex(w.type.findData("f32"))
    with qtbot.waitSignal(w.exported, timeout=60_000) as got:
        w.export(str(tmp_path / "run"))
    res = got.args[0]
    out = tmp_path / "run.gguf"
    assert res.path == str(out) and out.is_file()
    r = GGUFReader(str(out))
    assert len(r.tensors) == res.tensors == 2 * 2 * 2  # (A, B) x (q, v) x 2 layers
    assert {t.tensor_type.name for t in r.tensors} == {"F32"}
    assert w.outcome.isVisible() and w.outcome.text().startswith(f"GGUF (f32) written to {out}")
    if os.environ.get("LORA_STUDIO_SHOTS"):
        w.grab().save(os.path.join(os.environ["LORA_STUDIO_SHOTS"], "gguf.png"))
    w.runner.wait_all()
