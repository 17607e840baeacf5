"""Runs and configurations, the part of the main window that deals with files: open a run folder
(its settings, curves and spectra), continue it, load/save a RunConfig TOML, merge & export,
and whatever is dropped on the window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtWidgets import QFileDialog

from lora_studio.engine import runfolder
from lora_studio.ui import probes
from lora_studio.ui.widgets import commit_edits

TOML_FILTER = "Run configuration (*.toml);;All files (*)"


def runs_root() -> Path:
    """Where new runs go unless a run folder is given: Documents/LoRA Studio/runs (a setting)."""
    docs = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation) or str(Path.home())
    return Path(QSettings().value("folders/runs_root", str(Path(docs) / "LoRA Studio" / "runs")))


class RunFiles:
    """Mixed into MainWindow (uses its session, controller, views, `error` and `continue_run`)."""

    def open_run_dialog(self):
        st = QSettings()
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", st.value("folders/runs", str(runs_root())))
        if folder:
            st.setValue("folders/runs", str(Path(folder).parent))
            self.open_run(folder)

    def open_run(self, run_dir: str):
        """Show a finished or stopped run: its settings, curves and spectra; offer to continue it.
        The folder is read in a worker; `run_opened` is emitted once it is shown."""
        self.session.tasks.start(probes.read_run, str(run_dir), on_done=self._run_read,
                                 on_failed=lambda f: self.error("Cannot open this run", f))

    def _run_read(self, opened):
        config, run, records, step = opened.config, Path(opened.path), opened.metrics, opened.checkpoint_step
        self.session.apply_config(config)
        self.session.set_out("")  # a new Start makes a new run; Continue resumes this one
        self.run_dir, self.run_task = str(run), config.model.task
        if step is not None and config.train.max_steps and step >= config.train.max_steps:
            step = None  # finished: nothing to continue
        self.training.show_history(records, str(run), step)
        self.training.plots.set_task(config.model.task)
        self.tryit.set_run(self.run_dir, self.run_task)
        self._state_changed(self.controller.state)
        view = self._ensure_spectra()
        if view and hasattr(view, "load_run"):
            try:
                view.load_run(str(run))
            except Exception as e:  # noqa: BLE001
                self.statusBar().showMessage(f"spectra: {e}", 8000)
        self.header.set_state("Run opened", "")
        self.tabs.setCurrentWidget(self.training.parentWidget())
        self.run_opened.emit(str(run))

    def continue_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Continue which run?", str(runs_root()))
        if folder:
            self.continue_run(folder)

    def load_config(self, path: str | None = None):
        if not path:
            st = QSettings()
            path, _ = QFileDialog.getOpenFileName(self, "Load a run configuration", st.value("folders/config", ""),
                                                  TOML_FILTER)
            if not path:
                return
            st.setValue("folders/config", str(Path(path).parent))
        self.session.tasks.start(probes.load_run_config, path, on_done=self._config_loaded,
                                 on_failed=lambda f: self.error("Cannot load the configuration", f))

    def _config_loaded(self, config):
        self.session.apply_config(config)
        self.statusBar().showMessage("configuration loaded", 4000)

    def save_config(self, path: str | None = None):
        from lora_studio.engine.errors import UserError

        commit_edits()
        try:
            config = self.session.build()
        except UserError as e:
            self.error("Cannot save the configuration", e)
            return
        if not path:
            st = QSettings()
            path, _ = QFileDialog.getSaveFileName(self, "Save the run configuration",
                                                  str(Path(st.value("folders/config", "")) / runfolder.RUN_FILE), TOML_FILTER)
            if not path:
                return
            st.setValue("folders/config", str(Path(path).parent))
        try:
            config.save(path)
        except OSError as e:
            self.error("Cannot save the configuration", f"{path}: {e.strerror or e}")
            return
        self.statusBar().showMessage(f"saved {path}", 4000)

    def export(self):
        from lora_studio.ui.export_dialog import ExportDialog

        dialog = ExportDialog(self.run_dir, self)
        self.export_dialog = dialog
        dialog.open()

    # -- drag and drop -------------------------------------------------------------------
    def dragEnterEvent(self, event):
        if event.mimeData().hasUrls() and not self.controller.running:
            event.acceptProposedAction()

    def dropEvent(self, event):
        """A model folder, a run folder, a data file or a run.toml dropped on the window."""
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not urls:
            return
        self.open_path(urls[0])
        event.acceptProposedAction()

    def open_path(self, path: str):
        p = Path(path)
        if p.is_dir() and (p / runfolder.RUN_FILE).is_file():
            self.open_run(str(p))
        elif p.is_dir():
            self.model_panel.load(str(p))
        elif p.suffix == ".toml":
            self.load_config(str(p))
        else:
            self.session.set_data(path=str(p))
            self.tabs.setCurrentWidget(self.data_view.parentWidget())
