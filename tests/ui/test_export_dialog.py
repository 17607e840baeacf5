"""The export dialog: GGUF as one of its outputs, results kept across exports, fields never squashed."""

from __future__ import annotations

from PySide6.QtCore import Qt

import tiny


def test_second_export_keeps_the_first(qtbot, tmp_path, dialogs):
    from lora_studio import LoraSpec, inject, save_adapter
    from lora_studio.engine.models import load_model
    from lora_studio.ui.export_dialog import ExportDialog

    base = tiny.model_folder(tmp_path / "base", "llama")
    model = load_model(str(base), "causal-lm")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8.0))
    tiny.randomize_adapters(model, scale=0.3)
    run = tmp_path / "run"
    save_adapter(model, run, str(base))

    dialog = ExportDialog(str(run))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.gguf.out.text() == str(tmp_path / "run.gguf")
    fields = (dialog.run_dir, dialog.merged_dir, dialog.adapter_dir, dialog.gguf.out)
    heights = [w.height() for w in fields]

    dialog.merged_on.click()  # off: the GGUF alone
    dialog.gguf.enabled.click()
    assert dialog.gguf.enabled.isChecked() and not dialog.merged_on.isChecked()
    files = []
    for kind in ("f32", "f16"):
        dialog.gguf.type.setCurrentIndex(dialog.gguf.type.findData(kind))
        files.append(tmp_path / f"adapter-{kind}.gguf")
        dialog.gguf.out.setText(str(files[-1]))
        dialog.result = None
        qtbot.mouseClick(dialog.export, Qt.LeftButton)
        qtbot.waitUntil(lambda: dialog.export.isEnabled(), timeout=60_000)
        assert files[-1].is_file() and set(dialog.result) == {"gguf"}, (dialog.state.text(), dialogs.shown)
    text = dialog.outcome.toPlainText()
    first, second = text.index(f"GGUF (f32) written to {files[0]}"), text.index(f"GGUF (f16) written to {files[1]}")
    assert 0 == first < second
    qtbot.wait(50)
    assert [w.height() for w in fields] == heights
    assert all(w.height() >= w.sizeHint().height() for w in fields)
    dialog.close()
