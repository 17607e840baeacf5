"""The export dialog: GGUF as one of its outputs, results kept across exports, fields never squashed, the
dialog never taller than the screen, "Open folder" on what was written."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QRect, Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QLineEdit, QWidget

import tiny


def _run(tmp_path):
    """A tiny llama run folder (random adapters, so the merge changes the logits)."""
    from lora_studio import LoraSpec, inject, save_adapter
    from lora_studio.engine.models import load_model

    base = tiny.model_folder(tmp_path / "base", "llama")
    model = load_model(str(base), "causal-lm")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8.0))
    tiny.randomize_adapters(model, scale=0.3)
    run = tmp_path / "run"
    save_adapter(model, run, str(base))
    return run


def squashed(dialog) -> list[str]:
    """The visible rows given less height than they ask for (wrapped text: for its width)."""
    out = []
    for w in dialog.findChildren(QWidget):
        if not w.isVisible() or not isinstance(w, (QLineEdit, QAbstractButton, QComboBox, QLabel)):
            continue
        if isinstance(w, QLabel) and not w.text():
            continue
        need = w.heightForWidth(w.width()) if isinstance(w, QLabel) and w.wordWrap() else w.sizeHint().height()
        if w.height() < need:
            out.append(f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}: {w.height()} < {need}")
    return out


def openings(monkeypatch) -> list[QUrl]:
    """The URLs the dialog asks the desktop to open (nothing is opened)."""
    urls = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: urls.append(url) or True))
    return urls


def test_second_export_keeps_the_first(qtbot, tmp_path, monkeypatch, dialogs):
    from lora_studio.ui.export_dialog import ExportDialog

    urls = openings(monkeypatch)
    run = _run(tmp_path)
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
    qtbot.mouseClick(dialog.open_folder, Qt.LeftButton)  # the GGUF's folder
    assert urls == [QUrl.fromLocalFile(str(tmp_path))]
    dialog.close()


@pytest.mark.parametrize("screen", [(1366, 768), (1280, 800)])
def test_fits_the_screen_and_never_squashes_a_row(qtbot, tmp_path, monkeypatch, dialogs, screen):
    """GUI walkthrough #33: before an export the GGUF rows were squashed (650 px for a 664 px hint; here
    with the long "no converter" hint); after one the dialog grew to 868 px, past a 768 px screen.
    #34: "Open folder" opens what the export wrote. #36: no "adapter only" with both outputs ticked."""
    from lora_studio.ui import export_dialog
    from lora_studio.ui.export_dialog import ExportDialog

    width, height = screen
    usable = QRect(0, 28, width, height - 28)  # less a 28 px panel
    monkeypatch.setattr(export_dialog, "room", lambda widget: usable)
    (tmp_path / "no-llama").mkdir()
    monkeypatch.setenv("LORA_STUDIO_LLAMA_CPP", str(tmp_path / "no-llama"))
    urls = openings(monkeypatch)
    run = _run(tmp_path)
    dialog = ExportDialog(str(run))
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.height() >= dialog.sizeHint().height()  # shown at its size, not grown afterwards
    qtbot.waitExposed(dialog)
    qtbot.waitUntil(lambda: "holds no convert_hf_to_gguf.py" in dialog.gguf.hint.text(), timeout=10_000)
    qtbot.wait(50)
    assert squashed(dialog) == []
    assert dialog.scroll.verticalScrollBar().maximum() == 0  # the screen has room: the dialog grew for the hint
    assert usable.contains(dialog.frameGeometry())
    assert not dialog.open_folder.isEnabled()

    qtbot.mouseClick(dialog.adapter_on, Qt.LeftButton, pos=QPoint(8, dialog.adapter_on.height() // 2))
    assert dialog.merged_on.isChecked() and dialog.adapter_on.isChecked()
    assert "only" not in dialog.merged_on.text() + dialog.adapter_on.text()
    qtbot.mouseClick(dialog.export, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.export.isEnabled(), timeout=60_000)
    assert set(dialog.result) == {"merged", "adapter"}, (dialog.state.text(), dialogs.shown)
    qtbot.wait(50)
    assert dialog.outcome.isVisible() and dialog.outcome.height() >= dialog.outcome.HEIGHT
    assert squashed(dialog) == []
    assert usable.contains(dialog.frameGeometry())

    assert dialog.open_folder.isEnabled()
    qtbot.mouseClick(dialog.open_folder, Qt.LeftButton)
    assert urls == [QUrl.fromLocalFile(str(tmp_path / "run-merged"))]
    dialog.close()
