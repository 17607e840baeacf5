"""The Study tab (issue 17 part 2): the LoRA paper's rank study from the current settings.

Left: the sweep's settings, Start/Stop, what is running, and (when done) the runs with an Open
button each. Right: the live loss of every run, and from sweep.json the loss vs rank and the
subspace similarity φ between the largest and each smaller rank.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QPushButton, QScrollArea, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from lora_studio.config import RunConfig
from lora_studio.ui.study.plots import LiveLoss, LossVsRank, PhiView
from lora_studio.ui.study.setup import SweepSetup
from lora_studio.ui.study.worker import SweepController
from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.widgets import Section, count, icon, label
from lora_studio.ui.parts import Part

RUN_COLUMNS = ("Run", "r", "Final loss", "Eval loss", "")


def read_curves(runs: list[tuple[str, str]]) -> dict[str, list[tuple[int, float]]]:
    """{name: [(step, loss)]} from each run's metrics.jsonl (worker thread)."""
    from lora_studio.engine.runfolder import read_metrics

    return {name: [(m["step"], m["loss"]) for m in read_metrics(d) if m.get("loss") is not None] for name, d in runs}


def _num(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4f}"


def _with_legend(plot) -> QWidget:
    """The plot with its legend (a label) under it, outside the curves' area (GUI N19)."""
    box = QWidget()
    lay = QVBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(2)
    lay.addWidget(plot, 1)
    lay.addWidget(plot.legend)
    return box


class StudyTab(QWidget, Part):
    """Signals:
        open_run(str): the run folder whose Open button was clicked
        running_changed(bool): a sweep started (True) or ended (False)
        finished(object): the sweep.json document (its `complete` False when stopped), or a tasks.Failure
    """

    open_run = Signal(str)
    running_changed = Signal(bool)
    finished = Signal(object)

    def __init__(self, config: RunConfig | None = None, parent=None):
        super().__init__(parent)
        self.config: RunConfig | None = None
        self.doc: dict | None = None
        self.current = ""  # the run being trained
        self.runner = TaskRunner(self)
        self.controller = SweepController(self)
        self.controller.event.connect(self._event)
        self.controller.finished.connect(self._finished)
        self.controller.running_changed.connect(self._running)

        self.setup = SweepSetup()
        self.start_button = QPushButton(icon("play"), "Start study")
        self.start_button.setObjectName("Primary")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton(icon("stop", "#d23c3c"), "Stop")
        self.stop_button.setObjectName("Danger")
        self.stop_button.setToolTip("Stop after the current step; Start again resumes where it stopped")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 1)
        buttons.addWidget(self.stop_button)
        self.status = label("", "Hint", wrap=True, selectable=True)

        runs = Section("Runs")
        self.runs = QTableWidget(0, len(RUN_COLUMNS))
        self.runs.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.runs.verticalHeader().hide()
        self.runs.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.runs.setSelectionMode(QAbstractItemView.NoSelection)
        self.runs.setAlternatingRowColors(True)
        self.runs.setTextElideMode(Qt.ElideMiddle)
        self.runs.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.runs.horizontalHeaderItem(1).setToolTip("rank")
        h = self.runs.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.Stretch)
        for i in range(1, len(RUN_COLUMNS)):
            h.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        runs.body.addWidget(self.runs)

        left = QVBoxLayout()
        left.setContentsMargins(0, 0, 0, 0)
        left.setSpacing(12)
        left.addWidget(self.setup)
        left.addLayout(buttons)
        left.addWidget(self.status)
        left.addWidget(runs, 1)
        left_w = QWidget()
        left_w.setLayout(left)
        left_scroll = QScrollArea()  # a short laptop window scrolls the form rather than grow past the screen
        left_scroll.setWidgetResizable(True)
        left_scroll.setFrameShape(QScrollArea.NoFrame)
        left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        left_scroll.setWidget(left_w)
        left_scroll.setMinimumWidth(352)  # (the form scrolls; a wider minimum would widen the window past 1024 px)
        left_scroll.setMaximumWidth(472)

        self.loss = LiveLoss()
        self.loss_vs_rank = LossVsRank()
        self.phi = PhiView()
        bottom = QSplitter(Qt.Horizontal)
        bottom.addWidget(_with_legend(self.loss_vs_rank))
        bottom.addWidget(self.phi)
        right = QSplitter(Qt.Vertical)
        right.addWidget(_with_legend(self.loss))
        right.addWidget(bottom)
        right.setSizes([400, 400])
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 12, 12, 12)
        lay.setSpacing(12)
        lay.addWidget(left_scroll, 9)  # ~400 px of a 1280 px window's 890: run names whole in the table
        lay.addWidget(right, 10)
        if config is not None:
            self.set_config(config)

    # -- interface ----------------------------------------------------------------------------
    def set_config(self, config: RunConfig):
        """The base settings every run of the study starts from (model, data, steps, alpha…)."""
        self.config = config
        self.setup.set_config(config)

    def apply_theme(self, theme: str):
        """"light" | "dark": the plots follow the application's theme."""
        for plot in (self.loss, self.loss_vs_rank, self.phi):
            plot.apply_theme(theme)

    @property
    def running(self) -> bool:
        return self.controller.running

    def start(self):
        from lora_studio.engine.errors import UserError

        if self.running or self.config is None:
            return
        try:
            plan = self.setup.plan()
        except UserError as e:
            self._say(str(e), error=True)
            return
        self.loss.clear_runs()
        self.loss_vs_rank.set_ranks(plan.ranks)
        self.runs.setRowCount(0)
        self.doc = None
        self._say(f"starting: ranks {', '.join(map(str, plan.ranks))}")
        self.controller.start(self.config, plan.out, plan.ranks, plan.seeds, plan.targets_sets, plan.fixed_budget)

    def stop(self):
        self.controller.stop()
        self._say("stopping after the current step…")

    def set_run_state(self, state):
        self.start_button.setEnabled(not state.training and not state.study_running)  # one run at a time

    def shutdown(self, ms: int = 60_000):
        """Stop and wait for the sweep's thread (closing the window)."""
        self.controller.stop()
        self.controller.wait(ms)
        self.runner.wait_all(ms)

    def load(self, folder: str):
        """Show a finished (or partly run) study from its sweep.json."""
        doc = json.loads((Path(folder) / "sweep.json").read_text())
        self.setup.show_plan(str(folder), doc)
        self.loss.clear_runs()
        self.show_summary(doc)
        self._say(f"{len(doc.get('runs', []))} runs" + ("" if doc.get("complete") else "; not complete: Start resumes"))

    def show_summary(self, doc: dict):
        self.doc = doc
        rows = doc.get("runs", [])
        self.runs.setRowCount(len(rows))
        for r, run in enumerate(rows):
            cells = (run["name"], str(run["rank"]), _num(run.get("final_loss")), _num(run.get("eval_loss")))
            tip = f"{run['run_dir']}\n{count(run.get('trainable_params'))} trainable parameters"
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if c > 0:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.runs.setItem(r, c, item)
            button = QPushButton("Open")
            button.setToolTip(f"Open {run['run_dir']}")
            button.clicked.connect(lambda _=False, d=run["run_dir"]: self.open_run.emit(d))
            self.runs.setCellWidget(r, len(RUN_COLUMNS) - 1, button)
        missing = [(run["name"], run["run_dir"]) for run in rows if run["name"] not in self.loss.curves]
        if missing:  # runs reused from before (or a study loaded from disk): their curves from their files
            self.runner.start(read_curves, missing, on_done=self._curves)
        self.loss_vs_rank.show_runs(rows)
        self.phi.show_similarity(doc.get("similarity", []))

    # -- worker -> view, in the GUI thread -------------------------------------------------------
    def _event(self, ev):
        from lora_studio.engine import events as E

        if isinstance(ev, E.Status):
            self._say(ev.message)
        elif isinstance(ev, E.Started):
            self.current = Path(ev.out).name
            self.loss.add_run(self.current)
        elif isinstance(ev, E.Step):
            self.loss.add_point(self.current, ev.step, ev.loss)

    def _curves(self, curves: dict):
        for name, points in curves.items():
            self.loss.add_run(name)
            for step, loss in points:
                self.loss.add_point(name, step, loss)

    def _finished(self, result):
        if isinstance(result, dict):
            done = sum(1 for _ in result.get("runs", []))
            self._say(f"done: {done} runs; report.md in the study's folder" if result.get("complete")
                      else f"stopped after {done} finished run(s): Start resumes")
            self.show_summary(result)
        else:
            self._say(result.message, error=True)
        self.finished.emit(result)

    def _running(self, running: bool):
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.setup.setEnabled(not running)
        self.running_changed.emit(running)

    def _say(self, text: str, error: bool = False):
        self.status.setObjectName("Error" if error else "Hint")
        self.status.setText(text)
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)
