"""How the main window is put together: the sidebar's sections, the tabs, the menus.

`build(window)` makes the widgets the window then wires (window.model_panel, .variants, .fit,
.study …) and lays them out; `actions(window)` makes the menus and their shortcuts.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QAbstractSpinBox, QBoxLayout, QComboBox, QHBoxLayout, QScrollArea, QSplitter, QStatusBar,
                               QTabWidget, QVBoxLayout, QWidget)

from lora_studio.ui.adapter_panel import AdapterPanel
from lora_studio.ui.budget_panel import BudgetDetails, SavingsCards
from lora_studio.ui.data_panel import DataPanel
from lora_studio.ui.data_view import DataView
from lora_studio.ui.fit_panel import FitPanel
from lora_studio.ui.header import Header
from lora_studio.ui.model_panel import ModelPanel
from lora_studio.ui.runs import runs_root
from lora_studio.ui.runs_panel import RunsPanel
from lora_studio.ui.spectra.tab import SpectraTab
from lora_studio.ui.study import StudyTab
from lora_studio.ui.targets_grid import TargetsGrid
from lora_studio.ui.training.settings import TrainingSettings
from lora_studio.ui.training.view import TrainingView
from lora_studio.ui.tryit import TryItView
from lora_studio.ui.variants_panel import VariantsPanel
from lora_studio.ui.widgets import ElidedLabel, Section, label, padded


class TargetsPage(QWidget):
    """The grid beside the numbers; below them when the tab is too narrow for both side by side
    (a window at its minimum width), so that no number is ever cut."""

    def __init__(self):
        super().__init__()
        self.box = QBoxLayout(QBoxLayout.LeftToRight, self)
        self.grid_section = self.details = None

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self.details is None:
            return
        inner = self.details.widget().minimumSizeHint().width() + self.details.verticalScrollBar().sizeHint().width()
        wide = event.size().width() >= self.grid_section.minimumSizeHint().width() + inner + 2 * self.box.spacing()
        direction = QBoxLayout.LeftToRight if wide else QBoxLayout.TopToBottom
        if self.box.direction() != direction:
            self.box.setDirection(direction)
            self.box.setStretch(0, 5 if wide else 1)  # stacked: the grid and the numbers share the height
            self.box.setStretch(1, 7 if wide else 1)


def build(w):
    """Create `w`'s panels and views (on w.session and w.controller) and lay them out."""
    w.header = Header()
    w.model_panel = ModelPanel(w.session)
    w.adapter_panel = AdapterPanel(w.session)
    w.variants = VariantsPanel(collapsible=True)
    w.data_panel = DataPanel(w.session)
    w.train_settings = TrainingSettings(w.session)
    w.cards = SavingsCards(w.session)
    w.grid = TargetsGrid(w.session)
    w.details = BudgetDetails(w.session)
    w.fit = FitPanel(detect=False)  # the GPU is probed on the first event-loop turn (a worker imports torch)
    w.data_view = DataView(w.session)
    w.training = TrainingView(w.controller)
    w.tryit = TryItView()
    w.runs = RunsPanel(runs_root())
    w.study = StudyTab()
    w.spectra_tab = SpectraTab()

    side_body = QWidget()
    side_body.setObjectName("SidebarBody")
    side = QVBoxLayout(side_body)
    side.setContentsMargins(14, 14, 8, 14)
    side.setSpacing(12)
    for panel in (w.model_panel, w.adapter_panel, w.variants, w.data_panel, w.train_settings):
        side.addWidget(panel)
    side.addStretch(1)
    for combo in side_body.findChildren(QComboBox):  # long items must not widen the sidebar
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(6)
    for box in side_body.findChildren(QAbstractSpinBox):
        box.setMinimumWidth(70)
    w.sidebar = QScrollArea()
    w.sidebar.setObjectName("Sidebar")
    w.sidebar.setWidgetResizable(True)
    w.sidebar.setWidget(side_body)
    w.sidebar.setMinimumWidth(max(330, side_body.minimumSizeHint().width() + 14))  # (+ its scroll bar): never cut
    w.sidebar.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

    targets = TargetsPage()
    tl = targets.box
    tl.setContentsMargins(0, 12, 0, 0)
    tl.setSpacing(12)
    grid_section = Section("Which projections to adapt")
    grid_section.body.addWidget(w.grid)
    tl.addWidget(grid_section, 5)
    numbers = QWidget()  # the budget, then whether it fits a GPU
    nl = QVBoxLayout(numbers)
    nl.setContentsMargins(0, 0, 0, 0)
    nl.setSpacing(12)
    nl.addWidget(w.details)
    nl.addWidget(w.fit)
    nl.addStretch(1)
    details = QScrollArea()  # numbers are never cut: a narrow window scrolls instead
    details.setWidgetResizable(True)
    details.setWidget(numbers)
    details.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    tl.addWidget(details, 7)
    targets.grid_section, targets.details = grid_section, details

    w.tabs = QTabWidget()
    w.tabs.setDocumentMode(True)
    w.tabs.addTab(targets, "Targets")
    w.tabs.addTab(padded(w.data_view), "Data")
    w.tabs.addTab(padded(w.training), "Training")
    w.tabs.addTab(w.spectra_tab, "Spectra")
    w.tabs.addTab(padded(w.tryit), "Try it")
    w.tabs.addTab(padded(w.runs), "Runs")
    w.tabs.addTab(w.study, "Study")

    main = QWidget()
    ml = QVBoxLayout(main)
    ml.setContentsMargins(8, 14, 8, 8)
    ml.setSpacing(6)
    ml.addWidget(w.cards)
    ml.addWidget(w.tabs, 1)
    w.splitter = QSplitter(Qt.Horizontal)
    w.splitter.addWidget(w.sidebar)
    w.splitter.addWidget(main)
    w.splitter.setStretchFactor(1, 1)
    w.splitter.setSizes([360, 1080])
    w.splitter.setChildrenCollapsible(False)

    central = QWidget()
    cl = QVBoxLayout(central)
    cl.setContentsMargins(0, 0, 0, 0)
    cl.setSpacing(0)
    cl.addWidget(w.header)
    cl.addWidget(w.splitter, 1)
    w.setCentralWidget(central)
    w.setStatusBar(StatusBar())
    w.statusBar().addPermanentWidget(label("Ctrl+Enter start · Space pause · Ctrl+. stop", "Hint"))


class StatusBar(QStatusBar):
    """The status line: a message shortens with "…" beside the shortcut hint, the whole text in
    its tooltip (QStatusBar's own message was cut mid-word where the hint sits: a long data error)."""

    def __init__(self):
        super().__init__()
        self.message = ElidedLabel("", min_chars=12)
        self.addWidget(self.message, 1)
        self._clear = QTimer(self, singleShot=True)
        self._clear.timeout.connect(self.clearMessage)

    def showMessage(self, text: str, timeout: int = 0):
        self.message.setText(text)
        self._clear.stop()
        if timeout > 0:
            self._clear.start(timeout)

    def clearMessage(self):
        self.message.setText("")

    def currentMessage(self) -> str:
        return self.message.text()

    def clear_if(self, prefix: str):
        """Clear a message about something fixed since (a data error, once the data loads)."""
        if self.currentMessage().startswith(prefix):
            self.clearMessage()


def actions(w):
    """The menus; sets w.act_open_run, act_export, act_start, act_pause, act_stop, act_continue."""
    def act(text, slot, shortcut=None, menu=None):
        a = QAction(text, w)
        if shortcut:
            a.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
        a.triggered.connect(slot)
        w.addAction(a)
        if menu is not None:
            menu.addAction(a)
        return a

    mb = w.menuBar()
    f = mb.addMenu("&File")
    act("Open model folder…", w.model_panel._browse, None, f)
    f.addSeparator()
    act("Load configuration…", lambda: w.files.load_config(), "Ctrl+L", f)
    act("Save configuration…", lambda: w.files.save_config(), "Ctrl+S", f)
    f.addSeparator()
    w.act_open_run = act("Open run folder…", w.files.open_run_dialog, "Ctrl+O", f)
    act("Open study folder…", lambda: w.open_study(), None, f)
    w.act_export = act("Merge && export…", w.export, "Ctrl+E", f)
    f.addSeparator()
    act("Quit", w.close, "Ctrl+Q", f)
    r = mb.addMenu("&Run")
    w.act_start = act("Start training", w.start, [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")], r)
    w.act_pause = act("Pause / resume", w.controller.toggle_pause, "Space", r)
    w.act_stop = act("Stop (saves a checkpoint)", w.controller.stop, "Ctrl+.", r)
    w.act_continue = act("Continue a stopped run…", w.continue_dialog, None, r)
    v = mb.addMenu("&View")
    group = QActionGroup(w)
    current = QSettings().value("appearance/theme", "system")
    for value, text in (("system", "System appearance"), ("light", "Light"), ("dark", "Dark")):
        a = act(text, lambda _=False, t=value: w.set_theme(t), None, v)
        a.setCheckable(True)
        a.setChecked(value == current)
        group.addAction(a)
    h = mb.addMenu("&Help")
    act("About LoRA Studio", w.about, None, h)
