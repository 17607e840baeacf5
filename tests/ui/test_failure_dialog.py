"""ui/failure_dialog.py: the one dialog for an engine Failure (warning for what the user can change,
critical with where the details are for a bug)."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QWidget

from lora_studio.engine.errors import Failure, UserError
from lora_studio.ui import bug_report
from lora_studio.ui.failure_dialog import show_failure


def test_what_the_user_can_change_is_a_warning_in_the_windows_words(qtbot, dialogs):
    parent = QWidget()
    qtbot.addWidget(parent)
    for kind in ("user", "disk", "oom", "nonfinite"):
        show_failure(parent, Failure("/x exists: choose another name, or pass --overwrite to replace it", kind),
                     title=f"Cannot {kind}")
    show_failure(parent, UserError("no data: pass --data FILE"))  # an exception, no title
    assert dialogs.kinds() == ["warning"] * 5
    assert [s.title for s in dialogs.shown][:4] == ["Cannot user", "Cannot disk", "Cannot oom", "Cannot nonfinite"]
    assert dialogs.shown[-1].title == "Something went wrong"
    assert all("--overwrite" not in s.text and "bug" not in s.text for s in dialogs.shown)
    assert "no data" in dialogs.shown[-1].text


def test_a_bug_is_critical_and_says_where_its_details_are(qtbot, dialogs, tmp_path, monkeypatch):
    log = tmp_path / "logs" / "lora-studio.log"
    monkeypatch.setattr(bug_report, "log_path", lambda: log)
    parent = QWidget()
    qtbot.addWidget(parent)
    text = show_failure(parent, Failure("KeyError: 'lora_A'", "bug", detail="Traceback: boom"), "Export failed")
    shown = dialogs.shown[-1]
    assert (shown.kind, shown.title, shown.text) == ("critical", "Export failed", text)
    assert text.startswith("KeyError: 'lora_A'") and "This is a bug in LoRA Studio" in text and str(log) in text
    assert "boom" in log.read_text() and "boom" in QApplication.clipboard().text()


def test_the_export_dialog_shows_a_bug_as_a_bug(qtbot, dialogs, finished_run, tmp_path, monkeypatch):
    """The export dialog used its own box (a bare message, no details); now the one dialog."""
    from lora_studio.ui.export_dialog import ExportDialog

    monkeypatch.setattr(bug_report, "log_path", lambda: tmp_path / "log.txt")
    dialog = ExportDialog(str(finished_run))
    qtbot.addWidget(dialog)
    dialog._failed(Failure("ValueError: shapes", "bug", detail="Traceback: merge"))
    assert dialogs.kinds() == ["critical"] and "This is a bug" in dialogs.shown[-1].text
    assert dialog.export.isEnabled()
