"""The main window: setup on the left (model, adapter, data, training), the savings numbers on
top, and tabs for targets, data, live training, spectra and trying the result.

It wires views to one Session (the config being edited) and one TrainingController (the run);
the only logic here is what the buttons and menus do.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QTimer, Signal
from PySide6.QtWidgets import QApplication, QMainWindow, QMessageBox

from lora_studio.engine import runfolder
from lora_studio.engine.errors import Failure, UserError
from lora_studio.ui import run_guard, style, window_layout
from lora_studio.ui.runs import RunFiles, runs_root, same_run, trained_elsewhere
from lora_studio.ui.session import Draft, Session
from lora_studio.ui.failure_dialog import show_failure
from lora_studio.ui.parts import RunState
from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.wording import run_failure, short_paths
from lora_studio.ui.training.view import evaluating_text
from lora_studio.ui.training.worker import TrainingController
from lora_studio.ui.widgets import app_icon, commit_edits, icon

STATES = {"idle": ("Ready", ""), "starting": ("Starting …", "running"), "running": ("Training", "running"),
          "pausing": ("Pausing …", "paused"), "paused": ("Paused", "paused"), "stopping": ("Stopping …", "paused")}
ACTIVE = ("starting", "running", "pausing", "paused", "stopping")


class MainWindow(QMainWindow):
    """Signals:
        run_opened(str): a run folder was opened and is shown (its curves, settings, spectra)
    """

    run_opened = Signal(str)

    def __init__(self, draft: Draft | None = None, config_path: str | None = None, spectra_every: int = 10):
        super().__init__()
        self.setWindowTitle("LoRA Studio")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.session = Session(draft, self)
        self.controller = TrainingController(self, spectra_every=spectra_every)
        self.files = RunFiles(self.session, self.error, self)
        self.run_dir = ""  # the run shown (trained here or opened)
        self.run_task = "classification"
        self._closing = False
        self._quiet = False  # closing: no new background work
        self._blocked: dict[str, str] = {}  # why Start must wait: {"model": "Loading model …", ...}
        self._config_path = config_path
        self._close_when_idle = QTimer(self, interval=300)  # closing waits for a task still running
        self._close_when_idle.timeout.connect(lambda: self._busy_tasks() or self.close())

        window_layout.build(self)
        self.tryit.call_paused = self.controller.call_paused
        window_layout.actions(self)
        self._wire()
        self._restore()
        self._state_changed("idle")
        self.train_settings.out.setPlaceholderText(f"automatic: {runs_root()}/run-…")
        QTimer.singleShot(0, self._first_load)

    def _wire(self):
        h, c, s = self.header, self.controller, self.session
        h.start.clicked.connect(self.start)
        h.pause.clicked.connect(c.toggle_pause)
        h.stop.clicked.connect(c.stop)
        h.export.clicked.connect(self.export)
        h.open_run.clicked.connect(self.files.open_run_dialog)
        self.files.run_read.connect(self._show_run)
        self.runs.open_requested.connect(self.open_run)
        self.runs.continue_requested.connect(self.continue_run)
        self.runs.export_requested.connect(self.export)
        c.started.connect(lambda ev: self.runs.set_root(runs_root()))  # the root may be new
        c.finished.connect(lambda ev: self.runs.refresh())
        self.files.message.connect(lambda text: self.statusBar().showMessage(text, 4000))
        c.state_changed.connect(self._state_changed)
        c.status.connect(lambda ev: self.statusBar().showMessage(short_paths(ev.message), 5000))
        c.started.connect(self._started)
        c.stepped.connect(self._stepped)
        c.evaluating.connect(self._evaluating)
        c.checkpointed.connect(lambda ev: self.statusBar().showMessage(f"checkpoint saved: {ev.path}", 4000))
        c.spectra.connect(lambda ev: self.spectra_tab.event_arrived(ev, self.tabs.currentWidget() is self.spectra_tab,
                                                                    self.controller.running))
        self.tabs.currentChanged.connect(lambda _: self.tabs.currentWidget() is self.spectra_tab
                                         and self.spectra_tab.show_pending(self.controller.running))
        c.finished.connect(self._finished)
        self.training.sig_continue.connect(self.continue_run)  # the run the banner names, never "the one shown"
        self.training.sig_export.connect(self.export)
        self.training.sig_open.connect(self.open_run)
        self.training.sig_try.connect(lambda: self.tabs.setCurrentWidget(self.tryit.parentWidget()))
        self.model_panel.sig_failed.connect(lambda failure, ref: self.error("Cannot use this model", failure))
        s.model_ready.connect(self._model_ready)
        s.model_loading.connect(lambda ref: self._block("model", "Loading model …"))
        s.model_failed.connect(lambda f, ref: self._block("model"))
        s.data_loading.connect(lambda path: self._block("data"))
        s.data_stats.connect(lambda stats: (self._block("data"), self.statusBar().clear_if("data:")))
        s.cells_changed.connect(lambda: self._block("targets", s.cells_problem and (  # the grid says more
            "Targets: tick a projection" if not s.cells else "Targets: see the Targets tab")))
        s.data_failed.connect(lambda f: (self._block("data", "Data not usable: see the Data tab"),
                                         self.statusBar().showMessage(f"data: {f.message}", 8000)))
        self.variants.changed.connect(lambda: s.set_variants(self.variants.values()))
        self._fit_timer = QTimer(self, singleShot=True, interval=300)  # one estimate per burst of edits
        self._fit_timer.timeout.connect(self._fit_config)
        s.changed.connect(self._draft_changed)
        s.model_ready.connect(lambda info: self._fit_timer.start())
        c.finished.connect(lambda ev: self.run_dir and self.fit.show_run(self.run_dir))
        self.study.open_run.connect(self.open_run)
        self.study.finished.connect(lambda _: self.runs.refresh())  # its runs are listed in Runs
        self.study.running_changed.connect(lambda running: self._state_changed(self.controller.state))
        self.tabs.currentChanged.connect(lambda _: self.tabs.currentWidget() is self.study and self._study_config())
        self._draft_changed("")

    def _draft_changed(self, section: str):
        self.variants.set_config(self.session.draft)  # a Draft has a RunConfig's sections
        self._fit_timer.start()

    def _built(self):
        """The draft as a RunConfig, or None while it is not valid (Start says why)."""
        try:
            return self.session.build()
        except UserError:
            return None

    def _fit_config(self):
        if self._quiet:
            return
        config = self._built()
        if config is not None and self.session.info is not None:
            seq = None
            if self.session.budget.budget is not None:  # the Targets cards' basis: the data's longest example
                from lora_studio.ui.budget_panel import data_memory

                seq = data_memory(self.session, self.session.budget.budget)[2]
            self.fit.set_config(config, seq)

    def _study_config(self):
        config = self._built()
        if not self.study.setup.out.text():  # in the runs folder (listed in Runs), never relative to the cwd (N8)
            import time

            self.study.setup.out.setText(str(runs_root() / time.strftime("study-%Y%m%d-%H%M%S")))
        if config is not None and not self.study.running:
            self.study.set_config(config)

    def _first_load(self):
        from lora_studio.ui.fit_panel import detect_gpu

        self.fit.runner.start(detect_gpu, self.session.draft.train.device, on_done=self.fit._detected)
        self.session.load_model()
        self.session.refresh_data()
        if self._config_path:
            self.files.load_config(self._config_path)
        run_guard.say_interrupted(self)

    # -- settings ------------------------------------------------------------------------
    def _restore(self):
        st = QSettings()
        geometry = st.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1440, 900)
        state = st.value("window/state")
        if state is not None:
            self.restoreState(state)
        split = st.value("window/splitter")
        if split is not None:
            self.splitter.restoreState(split)
        self.tabs.setCurrentIndex(int(st.value("window/tab", 0)))

    def _save_settings(self):
        st = QSettings()
        st.setValue("window/geometry", self.saveGeometry())
        st.setValue("window/state", self.saveState())
        st.setValue("window/splitter", self.splitter.saveState())
        st.setValue("window/tab", self.tabs.currentIndex())

    def set_theme(self, theme: str):
        """system | light | dark, remembered."""
        QSettings().setValue("appearance/theme", theme)
        self.apply_theme(theme)

    def apply_theme(self, theme: str):
        name = style.apply(QApplication.instance(), theme)
        for part in self.parts():
            part.apply_theme(name)

    def parts(self) -> tuple:
        """The tabs and panels that share the Part interface (ui/parts.py): theme, run state, shutdown."""
        return self.training, self.spectra_tab, self.tryit, self.runs, self.fit, self.study

    # -- messages ------------------------------------------------------------------------
    def error(self, title: str, failure):
        """A dialog that says what went wrong and what to do (failure_dialog.show_failure); the app keeps running."""
        show_failure(self, failure, title)

    def _block(self, what: str, why: str = ""):
        """Start waits while `what` (model | data | targets) is not usable; `why` empty: it is again."""
        was = bool(self._blocked)
        self._blocked.pop(what, None)
        if why:
            self._blocked[what] = why
        self._state_changed(self.controller.state)
        if was and not self._blocked and self.controller.state == "idle" and self.run_dir:
            self.header.set_state("Ready", "")

    def _model_ready(self, info):
        self._block("model")
        self.header.model.setText(f"{info.name} · {info.arch.get('model_type', '?')} · {info.task}")
        self.header.model.setToolTip(info.resolved)
        self.spectra_tab.ensure()

    # -- the run -------------------------------------------------------------------------
    def start(self):
        if self.controller.running or self.study.running:
            return
        commit_edits()
        try:
            config = self.session.build()
            if run_guard.refuse_preflight(self, config, "start"):  # before anything is asked or written
                return
            out = config.out or str(self._new_run_dir())
            overwrite = False
            if Path(out).is_file():
                raise UserError(f"{out} is a file: choose a folder for the run")
            owner = trained_elsewhere(out) if runfolder.is_run(out) else ""
            if owner:
                raise UserError(f"{out} is being trained right now by {owner}: choose another run folder, or "
                                "wait for that run to end.")
            if Path(out).is_dir() and any(Path(out).iterdir()):
                if not run_guard.ask_replace(self, out):
                    return
                overwrite = True
            config = config.replace(out=out)
        except UserError as e:
            self.error("Cannot start training", e)
            return
        from lora_studio.ui.download_dialog import DownloadDialog, needs_download

        if needs_download(config.model.path):  # e.g. a configuration opened with a hub model not cached yet
            self.download = DownloadDialog(config.model.path, config.model.allow_pickle, self)
            self.download.sig_done.connect(lambda _: self._begin(config, overwrite=overwrite))
            self.download.sig_failed.connect(lambda failure: self.error("Cannot download the model", failure))
            self.download.open()
            return
        self._begin(config, overwrite=overwrite)

    def _new_run_dir(self) -> Path:
        from lora_studio.config import default_out_dir

        return Path(default_out_dir(runs_root()))

    def _begin(self, config, resume: str | None = None, overwrite: bool = False):
        from lora_studio.engine import tryit

        if resume:  # the sidebar shows the settings of the run that trains (its rank, its counts)
            self.session.apply_config(config)
            self.session.set_out("")
        tryit.forget()
        self.spectra_tab.forget_pending()
        self.training.reset()
        self.training.plots.clear()
        self.run_dir, self.run_task = str(resume or config.out), config.model.task
        self.tryit.set_run(self.run_dir, self.run_task)
        self.controller.start(config, resume, overwrite, nproc=self.train_settings.nproc())
        self.tabs.setCurrentWidget(self.training.parentWidget())

    def active_run(self) -> str:
        """The run this window trains (running, paused, stopping …), or ""."""
        return self.controller.run_dir if self.controller.running else ""

    def continue_run(self, run_dir: str):
        from lora_studio.config import RunConfig

        if not run_dir or run_guard.refuse_busy(self, run_dir, "continue"):
            return
        st = runfolder.run_state(run_dir)
        if not st.get("resumable"):  # never restart (and rewrite) a finished run, or one with no checkpoint
            why = ("it has finished: there is nothing left to train" if st.get("state") == "finished"
                   else "it has no checkpoint to continue from")
            QMessageBox.information(self, "Nothing to continue", f"{Path(run_dir).name} cannot be continued: {why}.")
            return
        try:
            config = RunConfig.load(Path(run_dir) / runfolder.RUN_FILE)
        except UserError as e:
            self.error("Cannot continue this run", e)
            return
        if run_guard.refuse_preflight(self, config, "continue"):
            return
        self._begin(config, resume=run_dir)

    def _started(self, ev):
        self.run_dir = ev.out
        self.spectra_tab.set_run_dir(ev.out)
        if ev.start_step > 0:
            self.training.plots.load_metrics(runfolder.read_metrics(ev.out))
            self.training.plots.set_total(ev.total_steps)
        self.statusBar().showMessage(f"training on {ev.device_name}, run folder {ev.out}", 8000)

    def _evaluating(self, ev):
        if self.controller.state in ("starting", "running"):
            self.header.state.setText(evaluating_text(ev))
        elif self.controller.state == "pausing":
            self.header.state.setText(self._pausing_text())

    def _pausing_text(self) -> str:
        ev = self.controller.evaluating_now
        return f"Pausing after the eval … {ev.done:,}/{ev.total:,}" if ev else "Pausing after this step …"

    def _stepped(self, ev):
        if self.controller.state == "running":
            self.header.state.setText(f"Training · {ev.step}/{ev.total_steps}")

    def _finished(self, ev):
        self.tryit.set_run(self.run_dir, self.run_task)
        self.spectra_tab.set_run_dir(self.run_dir)  # its checkpoints, for Compare and Resize
        self.spectra_tab.training_ended()
        if isinstance(ev, Failure):
            self.header.set_state("Failed", "failed")
            self.error(*run_failure(ev, self.run_dir))
        else:
            self.header.set_state(f"Stopped at {ev.step}" if ev.stopped else "Done", "" if ev.stopped else "done")
        if self._closing:
            QTimer.singleShot(0, self.close)

    def _state_changed(self, state: str):
        text, kind = STATES[state]
        if state == "idle" and self._blocked:
            text, kind = next(iter(self._blocked.values())), "running" if "model" in self._blocked else "failed"
        if state == "pausing":
            text = self._pausing_text()
        if state == "idle" and self.study.running:
            text, kind = "Study running", "running"  # not the previous run's "Failed" (N8)
        if state != "idle" or not self.run_dir or self._blocked or self.study.running:
            self.header.set_state(text, kind)
        running = state != "idle"
        self.training.set_waiting(next(iter(self._blocked.values())) if self._blocked and not running else "")
        startable = not running and not self._blocked and not self.study.running  # one run at a time
        self.header.start.setEnabled(startable)
        self.act_start.setEnabled(startable)
        pausable = state in ("running", "pausing", "paused", "starting") and not self.controller.multi  # torchrun: stop only
        self.header.pause.setEnabled(pausable)
        self.act_pause.setEnabled(pausable)
        held = state in ("pausing", "paused")  # Resume also withdraws a pause not yet reached
        self.header.pause.setText("Resume" if held else "Pause")
        self.header.pause.setIcon(icon("play" if held else "pause", "#6a7385"))
        self.header.stop.setEnabled(state in ("running", "pausing", "paused", "starting"))
        self.act_stop.setEnabled(state in ("running", "pausing", "paused", "starting"))
        for w in (self.model_panel, self.adapter_panel, self.variants, self.data_panel, self.train_settings, self.grid):
            w.setEnabled(not running)
        self.act_open_run.setEnabled(not running)
        self.act_continue.setEnabled(not running)
        self.header.open_run.setEnabled(not running)
        for w in (self.header.export, self.act_export):  # export reads the finished adapter files of a run
            w.setEnabled(not running and bool(self.run_dir))
        shared = RunState(state, self.active_run(), self.run_dir, self.study.running,
                          self.controller.last_step if state == "paused" else None)
        for part in self.parts():
            part.set_run_state(shared)

    # -- run folders and configurations (read and written by self.files) -------------------
    def open_run(self, run_dir: str):
        """Show a finished or stopped run: its settings, curves and spectra; offer to continue it.
        The folder is read in a worker; `run_opened` is emitted once it is shown. While a run trains
        here, only that run is shown (the Training tab); another is refused with a dialog."""
        active = self.active_run()
        if active and same_run(active, run_dir):
            self.tabs.setCurrentWidget(self.training.parentWidget())
            return
        if run_guard.refuse_busy(self, run_dir, "open"):
            return
        self.files.open_run(run_dir)

    def continue_dialog(self):
        folder = self.files.pick_run_to_continue()
        if folder:
            self.continue_run(folder)

    def export(self, run_dir: str | None = None):
        from lora_studio.ui.export_dialog import ExportDialog

        run_dir = run_dir if isinstance(run_dir, str) and run_dir else self.run_dir  # (a button passes False)
        if not run_dir:
            self.statusBar().showMessage("Train a run or open one first: Export writes a run's adapter.", 6000)
            return
        if run_guard.refuse_busy(self, run_dir, "export"):
            return
        self.export_dialog = ExportDialog(run_dir, self)
        self.export_dialog.open()

    def _show_run(self, opened):
        config, run, records, step = opened.config, Path(opened.path), opened.metrics, opened.checkpoint_step
        if self.controller.running or self.study.running:  # a run started while the folder was read
            self.statusBar().showMessage(f"not opened: {run.name} (a run is training)", 6000)
            return
        self.session.apply_config(config)
        self.session.set_out("")  # a new Start makes a new run; Continue resumes this one
        self.run_dir, self.run_task = str(run), config.model.task
        if step is not None and not runfolder.run_state(run).get("resumable"):
            step = None  # finished (steps or epochs): nothing to continue
        self.training.show_history(records, str(run), step)
        self.training.set_task(config.model.task)
        self.tryit.set_run(self.run_dir, self.run_task)
        self._state_changed(self.controller.state)
        problem = self.spectra_tab.load_run(str(run))
        if problem:
            self.statusBar().showMessage(f"spectra: {problem}", 8000)
        self.header.set_state("Run opened", "")
        self.tabs.setCurrentWidget(self.training.parentWidget())
        self.run_opened.emit(str(run))

    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls() and not self.controller.running:
            event.acceptProposedAction()

    def dropEvent(self, event):
        """A model folder, a run folder, a data file or a run.toml dropped on the window."""
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_path(urls[0])
            event.acceptProposedAction()

    def open_study(self, folder: str = ""):
        """Show a study (its sweep.json) in the Study tab: after a restart, or from another machine."""
        run_guard.open_study(self, folder)

    def open_path(self, path: str):
        kind = self.files.kind_of(path)
        if Path(path).is_dir() and (Path(path) / "sweep.json").is_file():
            self.open_study(path)
        elif kind == "run":
            self.files.open_run(path)
        elif kind == "model":
            self.model_panel.load(path)
        elif kind == "config":
            self.files.load_config(path)
        else:
            self.session.set_data(path=path)
            self.tabs.setCurrentWidget(self.data_view.parentWidget())

    def about(self):
        import lora_studio

        QMessageBox.about(self, "About LoRA Studio",
                          f"<b>LoRA Studio {lora_studio.__version__}</b><br>A desktop workbench for Low-Rank "
                          "Adaptation (Hu et al. 2021, arXiv:2106.09685).")

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self.cards.set_compact(event.size().height() < 860)  # a laptop: the plots keep their height

    # -- closing -------------------------------------------------------------------------
    def closeEvent(self, event):
        if self.controller.running:
            event.ignore()
            if self._closing:
                return
            answer = QMessageBox.question(self, "Training is running",
                                          "Stop training and quit? A checkpoint is saved, so the run can be "
                                          "continued later.")
            if answer == QMessageBox.Yes:
                self._closing = True
                self.statusBar().showMessage("stopping after this step …")
                self.controller.stop()
            return
        self._save_settings()
        self.controller.wait()
        still = self.quiesce(ms=2000)
        if still:  # a merge, a model inspection …: never drop it (Qt would abort), let the user choose
            event.ignore()
            if not self._close_when_idle.isActive():
                answer = QMessageBox.question(self, "Still running", f"Still running: {', '.join(still)}. Quit "
                                              "once it has finished? (No keeps the window open.)")
                if answer == QMessageBox.Yes:
                    self.statusBar().showMessage(f"quitting once {', '.join(still)} has finished …")
                    self._close_when_idle.start()
                else:
                    self._quiet = False
            return
        self._close_when_idle.stop()
        event.accept()

    def _busy_tasks(self) -> list[str]:
        return [name for runner in self.findChildren(TaskRunner) for name in runner.running()]

    def quiesce(self, ms: int = 30_000) -> list[str]:
        """No more background work: the estimate timers stopped, results still on their way dropped,
        the study stopped, every worker thread ended (session, try it, export, spectra, fit), waiting
        up to `ms`. Returns what is still running (nothing is ever dropped while it runs)."""
        self._quiet = True
        self._fit_timer.stop()
        for part in self.parts():
            part.shutdown()
        for runner in self.findChildren(TaskRunner):
            runner.wait_all(ms)
        return self._busy_tasks()
