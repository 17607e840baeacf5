"""The Spectra tab's frame: a hint until a model is loaded, then the SpectraView (built lazily:
its module imports torch), fed the newest Spectra event only while the tab is shown."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from lora_studio.ui.widgets import label
from lora_studio.ui.parts import Part


class SpectraTab(QWidget, Part):
    def __init__(self, parent=None):
        super().__init__(parent)
        QVBoxLayout(self).setContentsMargins(0, 12, 0, 0)
        self.hint = label("The spectra of ΔW appear here once a run has trained.", "Hint")
        self.layout().addWidget(self.hint)
        self.view = None  # None: not built yet; False: unavailable
        self._pending = None

    def ensure(self):
        """The spectra view, created on first use; None when it cannot be built."""
        if self.view is not None:
            return self.view or None
        try:
            from lora_studio.ui.spectra.view import SpectraView

            self.view = SpectraView()
        except Exception as e:  # noqa: BLE001 - the tab is optional; the rest works without it
            self.view = False
            self.hint.setText(f"The spectra view is not available ({e}).")
            return None
        scroll = QScrollArea()  # the view reflows to the width; on a small screen it scrolls down only
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(self.view)
        self.layout().replaceWidget(self.hint, scroll)
        self.hint.deleteLater()
        return self.view

    def set_run_dir(self, run_dir: str):
        view = self.ensure()
        if view:
            view.set_run_dir(run_dir)

    def load_run(self, run_dir: str) -> str:
        """Show a reopened run's spectra; returns an error message, or ""."""
        view = self.ensure()
        if not view:
            return ""
        try:
            view.load_run(run_dir)
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint must not stop the run from opening
            return str(e)
        return ""

    def training_ended(self):
        if self.view:
            self.view.training_ended()

    def apply_theme(self, name: str):
        if self.view:
            self.view.apply_theme(name)

    def event_arrived(self, ev, shown: bool, live: bool):
        """Spectra are drawn when their tab is shown: redrawing a hidden view would cost the GUI
        thread tens of milliseconds per event while the user watches the curves."""
        self._pending = ev
        if shown:
            self.show_pending(live)

    def show_pending(self, live: bool):
        ev, self._pending = self._pending, None
        view = self.ensure() if ev is not None else None
        if view:
            view.set_spectra(ev.step, ev.modules, live=live)

    def forget_pending(self):
        self._pending = None
