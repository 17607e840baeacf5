"""ui/tasks.py start_thread: the one way a worker thread starts (tasks, training, sweep), kept alive
until it has ended and dropped in the GUI thread."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from lora_studio.ui import tasks


class _Worker(QObject):
    finished = Signal()

    def __init__(self):
        super().__init__()
        self.ran_in = None

    @Slot()
    def run(self):
        self.ran_in = QThread.currentThread()
        self.finished.emit()


def test_start_thread_runs_the_worker_off_the_gui_thread_and_keeps_it_until_forgotten(qtbot, qapp):
    worker = _Worker()
    thread = tasks.start_thread(worker, "probe")
    assert thread.objectName() == "probe" and thread in tasks._ALIVE
    assert tasks.forget(thread, 10_000)  # finished quits the thread by itself
    assert thread.isFinished() and thread not in tasks._ALIVE
    assert worker.ran_in is thread and worker.ran_in is not qapp.thread()


def test_no_other_module_starts_a_thread_of_its_own():
    ui = Path(tasks.__file__).parent
    starts = {str(p.relative_to(ui)) for p in ui.rglob("*.py")
              if re.search(r"QThread\(\)|threading\.Thread\(|moveToThread\(", p.read_text())}
    assert starts == {"tasks.py"}
