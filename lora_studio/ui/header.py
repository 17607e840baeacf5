"""The header: app name, the model and run state at a glance, and the run buttons."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from lora_studio.ui.style import repolish
from lora_studio.ui.widgets import ElidedLabel, app_icon, icon, label


class Header(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("Header")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(18, 10, 14, 10)
        lay.setSpacing(10)
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(QSize(34, 34)))
        lay.addWidget(logo)
        names = QVBoxLayout()
        names.setSpacing(0)
        names.addWidget(label("LoRA Studio", "AppName"))
        names.addWidget(ElidedLabel("low-rank adaptation workbench", "AppTagline", min_chars=0))
        lay.addLayout(names)
        lay.addSpacing(8)
        self.model = ElidedLabel("", "ModelChip", min_chars=6, tooltip_full=False)  # tooltip: the path
        self.state = ElidedLabel("Ready", "StateChip", min_chars=8)  # shortened only in a narrow window
        self.state.setMinimumWidth(120)  # "Training · 120/1000" changes every step: no jitter
        self.model.setMaximumWidth(150)  # the state chip says what matters now: it gets the room (GUI N16)
        self.state.setAlignment(Qt.AlignCenter)
        lay.addWidget(self.model)
        lay.addWidget(self.state)
        lay.addStretch(1)
        self.open_run = QPushButton(icon("folder", "#6a7385"), "Open run")
        self.open_run.setToolTip("Open a run folder: its settings, curves and spectra (Ctrl+O)")
        self.export = QPushButton(icon("export", "#6a7385"), "Export")
        self.export.setToolTip("Merge the adapter into the model, or export the adapter (Ctrl+E)")
        self.start = QPushButton(icon("play"), "Start training")
        self.start.setObjectName("Primary")
        self.start.setToolTip("Start a new run with these settings (Ctrl+Enter)")
        self.pause = QPushButton(icon("pause", "#6a7385"), "Pause")
        self.pause.setToolTip("Pause after this step / resume (Space)")
        self.stop = QPushButton(icon("stop", "#d23c3c"), "Stop")
        self.stop.setObjectName("Danger")
        self.stop.setToolTip("Stop after this step and save a checkpoint (Ctrl+.)")
        for b in (self.open_run, self.export):
            lay.addWidget(b)
        lay.addSpacing(8)
        for b in (self.start, self.pause, self.stop):
            lay.addWidget(b)

    def resizeEvent(self, event):
        """The model chip takes 150 px in a laptop's window (the state chip needs the room, GUI N16)
        and more as the window widens: "all-MiniLM-L6-v2 · bert · classification"
        whole at 1920 px."""
        super().resizeEvent(event)
        self.model.setMaximumWidth(max(150, min(420, (event.size().width() - 1000) // 2)))

    def set_state(self, text: str, state: str = ""):
        self.state.setText(text)
        self.state.setProperty("state", state)
        repolish(self.state)
