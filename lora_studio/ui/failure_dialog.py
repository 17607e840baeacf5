"""The one failure dialog: an engine `Failure` (or an exception, or a line of text) shown to the user.

Kinds (engine/errors.py): user, disk, oom, nonfinite — the user can act on the message: a warning
that says what to change; bug — a critical dialog that says it is a bug and where its details are
(a log file and the clipboard, ui/bug_report.py: a desktop user has no console). Every view that
shows a Failure in a dialog calls `show_failure`; the message is in the window's words (wording.py).
"""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox


def show_failure(parent, failure, title: str = "Something went wrong") -> str:
    """Show `failure` (a Failure, an exception or a str) in a dialog on `parent`; returns its text."""
    from lora_studio.ui.wording import for_gui

    message = for_gui(getattr(failure, "message", None) or str(failure))
    if getattr(failure, "kind", "user") != "bug":
        QMessageBox.warning(parent, title, message)
        return message
    from lora_studio.ui.bug_report import keep_details

    where = keep_details(title, message, getattr(failure, "detail", "") or "")
    text = f"{message}\n\nThis is a bug in LoRA Studio. {where} Please attach them to a bug report."
    QMessageBox.critical(parent, title, text)
    return text
