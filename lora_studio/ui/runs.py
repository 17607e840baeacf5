"""Runs and configurations on disk, for the main window: pick and read a run folder (in a
worker), load/save a RunConfig TOML, and where new runs go. The window holds one `RunFiles` and
shows what it reads; nothing here touches the window's views."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QStandardPaths, Signal
from PySide6.QtWidgets import QFileDialog

from lora_studio.engine import runfolder
from lora_studio.ui import probes
from lora_studio.ui.widgets import commit_edits

TOML_FILTER = "Run configuration (*.toml);;All files (*)"


def runs_root() -> Path:
    """Where new runs go unless a run folder is given: Documents/LoRA Studio/runs (a setting)."""
    docs = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation) or str(Path.home())
    return Path(QSettings().value("folders/runs_root", str(Path(docs) / "LoRA Studio" / "runs")))


def same_run(a, b) -> bool:
    """The same run folder, however the two paths are spelled."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def trained_elsewhere(run_dir) -> str:
    """Who trains `run_dir` when another live process does ("process 1234 on host"), else ""
    (engine.runfolder.training_process: the run lock the CLI keeps too)."""
    live = runfolder.training_process(run_dir)
    return f"process {live['pid']} on {live['host']}" if live else ""


class RunFiles(QObject):
    """Signals:
        run_read(object): a run folder was read (probes.OpenedRun), to be shown
        config_loaded(object): a RunConfig was loaded from a TOML file (already applied to the session)
        message(str): a short note for the status bar
    """

    run_read = Signal(object)
    config_loaded = Signal(object)
    message = Signal(str)

    def __init__(self, session, error, parent=None):
        """`error(title, failure)`: shows a failure to the user; `parent` is the dialogs' parent widget."""
        super().__init__(parent)
        self.session, self.error, self.widget = session, error, parent

    def open_run_dialog(self):
        st = QSettings()
        folder = QFileDialog.getExistingDirectory(self.widget, "Open a run folder",
                                                  st.value("folders/runs", str(runs_root())))
        if folder:
            st.setValue("folders/runs", str(Path(folder).parent))
            self.open_run(folder)

    def open_run(self, run_dir: str):
        """Read a run folder in a worker: its settings, curves and checkpoints; `run_read` follows."""
        self.session.tasks.start(probes.read_run, str(run_dir), on_done=self.run_read.emit,
                                 on_failed=lambda f: self.error("Cannot open this run", f))

    def pick_run_to_continue(self) -> str:
        return QFileDialog.getExistingDirectory(self.widget, "Continue which run?", str(runs_root()))

    def load_config(self, path: str | None = None):
        if not path:
            st = QSettings()
            path, _ = QFileDialog.getOpenFileName(self.widget, "Load a run configuration",
                                                  st.value("folders/config", ""), TOML_FILTER)
            if not path:
                return
            st.setValue("folders/config", str(Path(path).parent))
        self.session.tasks.start(probes.load_run_config, path, on_done=self._config_loaded,
                                 on_failed=lambda f: self.error("Cannot load the configuration", f))

    def _config_loaded(self, config):
        self.session.apply_config(config)
        self.message.emit("configuration loaded")
        self.config_loaded.emit(config)

    def save_config(self, path: str | None = None):
        from lora_studio.engine.errors import UserError

        commit_edits()
        try:
            config = self.session.build()
        except UserError as e:
            self.error("Cannot save the configuration", e)
            return
        if not path:
            from lora_studio.ui.widgets import ask_config_path

            path = ask_config_path(self.widget, "Save the run configuration", runfolder.RUN_FILE)
            if not path:
                return
        try:
            config.save(path)
        except OSError as e:
            self.error("Cannot save the configuration", f"{path}: {e.strerror or e}")
            return
        self.message.emit(f"saved {path}")

    def kind_of(self, path: str) -> str:
        """What a dropped or given path is: run | model | config | data."""
        p = Path(path)
        if p.is_dir() and (p / runfolder.RUN_FILE).is_file():
            return "run"
        if p.is_dir():
            return "model"
        return "config" if p.suffix == ".toml" else "data"
