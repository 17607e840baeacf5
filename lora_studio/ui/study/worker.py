"""The sweep worker: engine.sweep.run_sweep in a QThread, its events re-emitted as Qt signals.

Same shape as training/worker.py: the worker never touches a widget, Stop goes through the
engine's `Control` (the running point saves a checkpoint; running the sweep again resumes it).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QThread, Qt, Signal, Slot

from lora_studio.ui.tasks import forget, start_thread


class SweepWorker(QObject):
    """Runs one sweep in its thread.

    Signals:
        event(object): every engine event (engine.events: Status, Started, Step, Eval, Finished…) in order
        done(object): the sweep.json document (its `complete` is False when stopped), exactly once…
        failed(object): …or a tasks.Failure, exactly once, last
        finished(): run() has returned (its thread quits on it)
    """

    event = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    finished = Signal()

    def __init__(self, config, out: str, ranks: list[int], seeds: int, targets_sets, fixed_budget: bool, control):
        super().__init__()
        self.args = dict(config=config, out=out, ranks=ranks, seeds=seeds, targets_sets=targets_sets,
                         fixed_budget=fixed_budget)
        self.control = control

    @Slot()
    def run(self):
        from lora_studio.engine.errors import failure_of

        try:
            from lora_studio.engine import warm_imports

            warm_imports()
            from lora_studio.engine.sweep import run_sweep

            doc = run_sweep(**self.args, on_event=self.event.emit, control=self.control)
        except BaseException as e:  # noqa: BLE001 - the GUI must hear about everything
            self.failed.emit(failure_of(e))
        else:
            self.done.emit(doc)
        finally:
            self.finished.emit()


class SweepController(QObject):
    """Owns the sweep thread.

    Signals:
        event(object): an engine event, in the GUI thread
        finished(object): the sweep.json document, or a tasks.Failure; exactly once per start, last
        running_changed(bool)
    """

    event = Signal(object)
    finished = Signal(object)
    running_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.thread: QThread | None = None
        self.worker: SweepWorker | None = None
        self.control = None

    @property
    def running(self) -> bool:
        return self.thread is not None

    def start(self, config, out: str, ranks, seeds=1, targets_sets=None, fixed_budget=False):
        if self.running:
            raise RuntimeError("a sweep is already running")
        from lora_studio.engine import warm_imports

        warm_imports()
        from lora_studio.engine.events import Control

        self.control = Control()
        self.worker = SweepWorker(config, out, ranks, seeds, targets_sets, fixed_budget, self.control)
        self.worker.event.connect(self._event, Qt.QueuedConnection)  # delivered in the GUI thread, in order
        self.worker.done.connect(self._ended, Qt.QueuedConnection)
        self.worker.failed.connect(self._ended, Qt.QueuedConnection)
        self.thread = start_thread(self.worker, "sweep")
        self.running_changed.emit(True)

    def stop(self):
        """Stop after the current step (the run saves a checkpoint; starting again resumes)."""
        if self.control is not None and self.running:
            self.control.stop()

    def wait(self, ms: int = 60_000) -> bool:
        return self.thread is None or self.thread.wait(ms)

    @Slot(object)
    def _event(self, ev):
        self.event.emit(ev)

    @Slot(object)
    def _ended(self, result):
        forget(self.thread)  # run() returns right after done/failed
        self.thread, self.worker = None, None
        self.running_changed.emit(False)
        self.finished.emit(result)
