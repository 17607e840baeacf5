"""The one worker pattern: a QObject moved to a QThread, results back as queued signals.

`Task` runs one function (inspect a model, preview data, export, generate…); the training and
sweep workers (`training/worker.py`, `study/worker.py`) follow the same shape for a long-running
loop. Every worker thread of the app is started by `start_thread` here: the worker moved to a new
QThread, `finished` quits it, and the thread is kept (`_ALIVE`) until it has ended — a QThread freed
while it runs makes Qt abort the process. Python objects are dropped in the GUI thread (`forget`),
never in a worker (ui/app.py: the garbage collector runs in the GUI thread only). Workers never
touch widgets; `run()` catches every exception and emits it as a `Failure`.
"""

from __future__ import annotations

import atexit
from typing import Callable

from PySide6.QtCore import QObject, QThread, Qt, Signal, Slot


from lora_studio.engine.errors import Failure, failure_of  # noqa: F401 - the one taxonomy


class Task(QObject):
    """Runs `fn(*args, **kwargs)` once in its thread.

    Signals:
        done(object): the return value
        failed(object): a Failure
        progress(str, float): message and fraction, when `fn` takes a `progress` callback
        finished(): after done or failed (the thread quits on it)
    """

    done = Signal(object)
    failed = Signal(object)
    progress = Signal(str, float)
    finished = Signal()

    def __init__(self, fn: Callable, *args, with_progress: bool = False, **kwargs):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        if with_progress:
            self.kwargs["progress"] = lambda msg, frac: self.progress.emit(str(msg), float(frac))

    @Slot()
    def run(self):
        try:
            from lora_studio.engine import warm_imports

            warm_imports()  # torch's first import is not thread-safe: one thread does it
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as e:  # noqa: BLE001 - everything goes back to the GUI as a Failure
            from lora_studio.ui.wording import gui_failure

            self.failed.emit(gui_failure(failure_of(e)))
        else:
            self.done.emit(result)
        finally:
            self.finished.emit()


class _Relay(QObject):
    """Lives in the GUI thread: calls the caller's callbacks there (queued from the worker), and
    lets the runner drop the task once its thread's `finished` arrives - after `done`/`failed`,
    which were queued before it."""

    def __init__(self, runner, on_done, on_failed, on_progress):
        super().__init__()
        self.runner, self.thread = runner, None  # the thread: set once start_thread made it
        self.on_done, self.on_failed, self.on_progress = on_done, on_failed, on_progress

    @Slot(object)
    def done(self, result):
        if self.on_done:
            self.on_done(result)

    @Slot(object)
    def failed(self, failure):
        if self.on_failed:
            self.on_failed(failure)

    @Slot(str, float)
    def progress(self, msg, frac):
        if self.on_progress:
            self.on_progress(msg, frac)

    @Slot()
    def ended(self):
        self.runner._forget(self.thread)


_ALIVE: dict = {}  # QThread -> its worker (and relay): every worker thread until it has ended, whatever became of
# its owner: a QThread freed while it runs makes Qt abort the process


@atexit.register
def _wait_for_tasks():  # the interpreter exits with a task still running: let it end, never abort
    for thread in list(_ALIVE):
        thread.wait()


def start_thread(worker: QObject, name: str, *keep, on_ended=None) -> QThread:
    """Run `worker.run` in a new QThread named `name` (the "still running: …" messages) and return it.

    `worker` has a `run` slot and a `finished` signal emitted last (its thread quits on it); it and
    `keep` (e.g. a relay) stay referenced until the thread has ended and `forget` drops them.
    `on_ended`: a slot of a GUI-thread QObject, called (queued) once the thread has ended."""
    thread = QThread()
    thread.setObjectName(name)
    worker.moveToThread(thread)
    worker.finished.connect(thread.quit, Qt.DirectConnection)  # quit() is thread-safe
    thread.started.connect(worker.run)
    if on_ended is not None:
        thread.finished.connect(on_ended, Qt.QueuedConnection)
    for t in [t for t in _ALIVE if t.isFinished()]:
        del _ALIVE[t]
    _ALIVE[thread] = (worker, *keep)
    thread.start()
    return thread


def forget(thread: QThread | None, ms: int | None = None) -> bool:
    """Wait for `thread` to end (up to `ms`, else as long as it takes) and drop it and its worker.
    Returns False, keeping it, while it still runs."""
    if thread is None:
        return True
    if not (thread.wait() if ms is None else thread.wait(ms)):
        return False
    _ALIVE.pop(thread, None)
    return True


class TaskRunner(QObject):
    """Starts Tasks in their own QThreads and keeps them alive until their thread has ended."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._live: dict[QThread, tuple[Task, _Relay]] = {}

    def start(self, fn: Callable, *args, on_done=None, on_failed=None, on_progress=None, what: str = "",
              **kwargs) -> Task:
        """Run `fn(*args, **kwargs)` in a new thread; `what`: its name in "still running: …" messages."""
        task = Task(fn, *args, with_progress=on_progress is not None, **kwargs)
        relay = _Relay(self, on_done, on_failed, on_progress)
        task.done.connect(relay.done, Qt.QueuedConnection)
        task.failed.connect(relay.failed, Qt.QueuedConnection)
        task.progress.connect(relay.progress, Qt.QueuedConnection)
        name = what or getattr(fn, "__name__", "task").strip("_").replace("_", " ")
        relay.thread = start_thread(task, name, relay, on_ended=relay.ended)
        self._live[relay.thread] = (task, relay)
        return task

    def _forget(self, thread: QThread):
        forget(thread)
        self._live.pop(thread, None)

    @property
    def busy(self) -> bool:
        return any(not t.isFinished() for t in self._live)

    def running(self) -> list[str]:
        """What is still running, in words (the function names), for "still running: …" messages."""
        return [t.objectName() for t in self._live if not t.isFinished()]

    def wait_all(self, ms: int = 30_000) -> list[str]:
        """Wait up to `ms` in all for the tasks to end (closing the window); their results are dropped.
        Returns what is still running. A running thread is never dropped (Qt would abort the
        process): it stays here until it ends, whatever the wait."""
        from PySide6.QtCore import QDeadlineTimer

        deadline = QDeadlineTimer(ms)
        for thread in list(self._live):
            if thread.wait(deadline):
                task, relay = self._live.pop(thread)
                _ALIVE.pop(thread, None)
                relay.on_done = relay.on_failed = relay.on_progress = None  # results dropped
        return self.running()
