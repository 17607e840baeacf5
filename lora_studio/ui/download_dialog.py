"""Downloading a model from the Hugging Face Hub: a dialog with a progress bar, the bytes, speed and
time left, and Cancel. The download (engine/hub.py) runs in a worker; Cancel sets a flag its
progress callback reads, so it stops within one chunk and keeps what it fetched: choosing the model
again continues from there."""

from __future__ import annotations

import threading

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QProgressBar, QVBoxLayout

from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.widgets import label


def needs_download(ref: str) -> bool:
    """A hub id whose files are not in the HF cache, and a hub to ask (not HF_HUB_OFFLINE)."""
    from lora_studio.engine import hub

    return hub.is_hub_id(ref) and not hub.offline() and not hub.cached(ref)


def fetch_model(repo: str, cancel: threading.Event, allow_pickle: bool = False, progress=None) -> str | None:
    """In a worker: the snapshot folder, or None when cancelled. `progress(line, fraction)` is the Task's."""
    from lora_studio.engine import hub

    def report(p: hub.Progress):
        if progress is not None:
            progress(p.line(), p.done / p.total if p.total else 0.0)
        return not cancel.is_set()

    try:
        return str(hub.download(repo, report, allow_pickle=allow_pickle))
    except hub.Cancelled:
        return None


class DownloadDialog(QDialog):
    """Signals:
        sig_done(str): the model is in the cache (its snapshot folder)
        sig_cancelled(): the user cancelled; the partial download is kept
        sig_failed(object): a Failure (unknown name, no network, …)
    """

    sig_done = Signal(str)
    sig_cancelled = Signal()
    sig_failed = Signal(object)

    def __init__(self, repo: str, allow_pickle: bool = False, parent=None):
        super().__init__(parent)
        self.repo = repo
        self.setWindowTitle("Downloading a model")
        self.setMinimumWidth(520)
        lay = QVBoxLayout(self)
        self.title = label(f"Downloading <b>{repo}</b> from the Hugging Face Hub into its cache", wrap=True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.detail = label("Asking the hub which files the model has …", "Hint", wrap=True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.buttons.rejected.connect(self.cancel)
        for w in (self.title, self.bar, self.detail, self.buttons):
            lay.addWidget(w)
        self._cancel = threading.Event()
        self._ended = False
        self.runner = TaskRunner(self)
        self.runner.start(fetch_model, repo, self._cancel, allow_pickle,
                          on_done=self._done, on_failed=self._failed, on_progress=self._progress)

    def _progress(self, line: str, fraction: float):
        if self._cancel.is_set():
            return
        self.bar.setValue(round(1000 * fraction))
        self.bar.setFormat(f"{fraction:.0%}")
        self.detail.setText(line.removeprefix(f"downloading {self.repo}: "))

    def cancel(self):
        """Stop the download (the worker notices within one chunk); the dialog closes when it has."""
        if self._ended:
            return
        self._cancel.set()
        self.detail.setText("Cancelling … (what was fetched is kept for next time)")
        self.buttons.setEnabled(False)

    def reject(self):  # Escape / the window's close button: cancel, close once the worker stopped
        if self._ended:
            super().reject()
        else:
            self.cancel()

    def _done(self, folder):
        self._ended = True
        if folder is None:
            self.sig_cancelled.emit()
            super().reject()
        else:
            self.sig_done.emit(folder)
            self.accept()

    def _failed(self, failure):
        self._ended = True
        self.sig_failed.emit(failure)
        super().reject()
