"""The training worker: engine.train.train in a QThread, its events re-emitted as Qt signals.

The events are the engine's own dataclasses (plain numbers, never tensors), so they cross the
thread boundary as they are. The worker never touches a widget; Stop/Pause/Resume go through the
engine's `Control` flags, which the loop reads between steps.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QObject, QThread, Qt, Signal, Slot

from lora_studio.ui.tasks import forget, start_thread


class TrainWorker(QObject):
    """Runs one training run (or the resume of one) in its thread.

    Signals:
        event(object): every engine event (engine.events), in order; Finished or Failed exactly once, last
        finished(): run() has returned (its thread quits on it)
    """

    event = Signal(object)
    finished = Signal()

    def __init__(self, config, control, resume: str | None = None, spectra_every: int = 10, overwrite: bool = False):
        super().__init__()
        self.config, self.control, self.resume, self.spectra_every = config, control, resume, spectra_every
        self.overwrite = overwrite
        self._ended = False

    def _on_event(self, event):  # called in the worker thread by the training loop
        from lora_studio.engine.events import Failed, Finished

        if isinstance(event, (Finished, Failed)):
            if self._ended:
                return
            self._ended = True
        if isinstance(event, Failed):
            from lora_studio.ui.wording import gui_failure

            event = gui_failure(event)  # the window's words, not the command line's
        self.event.emit(event)

    @Slot()
    def run(self):
        from lora_studio.engine.errors import Failure, failure_of

        try:
            from lora_studio.engine import warm_imports

            warm_imports()
            from lora_studio.engine.train import train

            train(self.config, self._on_event, self.control, resume=self.resume, spectra_every=self.spectra_every,
                  overwrite=self.overwrite)
        except BaseException as e:  # noqa: BLE001 - the GUI must hear about everything
            from lora_studio.ui.wording import gui_failure

            self._on_event(gui_failure(failure_of(e)))
        finally:
            if not self._ended:
                self._on_event(Failure("training ended without a result", "bug"))
            self.finished.emit()


class TrainingController(QObject):
    """Owns the training thread: start, pause/resume, stop, and the run's state for the views.

    Signals:
        state_changed(str): idle | starting | running | pausing | paused | stopping ("pausing": asked to pause,
            the loop pauses after the step or the evaluation in progress)
        status, evaluating, started, stepped, evaluated, checkpointed, spectra, samples, paused, resumed (object):
            the engine event of that kind (events.Status, Evaluating, Started, Step, Eval, Checkpoint,
            Spectra, Samples, Paused, Resumed), in the GUI thread
        finished(object): events.Finished or events.Failed, exactly once, last
    """

    state_changed = Signal(str)
    status = Signal(object)
    evaluating = Signal(object)
    started = Signal(object)
    stepped = Signal(object)
    evaluated = Signal(object)
    checkpointed = Signal(object)
    spectra = Signal(object)
    samples = Signal(object)
    paused = Signal(object)
    resumed = Signal(object)
    finished = Signal(object)

    def __init__(self, parent=None, spectra_every: int = 10):
        super().__init__(parent)
        self.spectra_every = spectra_every
        self.state = "idle"
        self.thread: QThread | None = None
        self.worker: TrainWorker | None = None
        self.control = None
        self.run_dir = ""
        self.last_step = 0
        self.evaluating_now = None  # the engine.events.Evaluating of an evaluation in progress, else None
        self.process = None  # a training.process.RunProcess: a run with several processes

    @property
    def multi(self) -> bool:
        """The run is a torchrun subprocess (no pause, no live spectra)."""
        return self.process is not None

    @property
    def running(self) -> bool:
        return self.state != "idle"

    def _set_state(self, state: str):
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def start(self, config, resume: str | None = None, overwrite: bool = False, nproc: int = 1):
        """Start `config` (a validated RunConfig) or resume the run folder `resume`; `overwrite`: the
        user agreed to replace the run in config.out. `nproc` > 1: a torchrun subprocess."""
        if self.running:
            raise RuntimeError("a run is already in progress")
        self.run_dir = str(resume or config.out)
        self.last_step = 0
        if nproc > 1:
            from lora_studio.ui.training.process import RunProcess

            self.control = None
            self.process = RunProcess(config, nproc, resume, overwrite, self)
            self.process.event.connect(self._event)
            self._set_state("starting")
            self.process.start()
            return
        from lora_studio.engine import warm_imports

        warm_imports()  # waits for a probe thread's first torch import, if one is in flight
        from lora_studio.engine.events import Control

        self.control = Control()
        self.run_dir = str(resume or config.out)
        self.last_step = 0
        self.worker = TrainWorker(config, self.control, resume, self.spectra_every, overwrite)
        self.worker.event.connect(self._event, Qt.QueuedConnection)  # delivered in the GUI thread, in order
        self._set_state("starting")
        self.thread = start_thread(self.worker, "training")

    def pause(self):
        """Ask the loop to pause; "pausing" at once (an evaluation in progress can take a while)."""
        if self.state in ("running", "starting") and self.control:
            self.control.pause()
            self._set_state("pausing")

    def resume(self):
        if self.control and self.control.paused:
            self.control.resume()
            if self.state == "pausing":  # not paused yet: the request is withdrawn
                self._set_state("running")

    def toggle_pause(self):
        if self.control is None or not self.running:  # (none with several processes: stop and continue)
            return
        self.resume() if self.control.paused else self.pause()

    def stop(self):
        """Ask the loop to stop after the current step; it saves a checkpoint (resumable)."""
        if self.process is not None and self.running:
            self.process.interrupt()
            self._set_state("stopping")
        elif self.control and self.running:
            self.control.stop()
            self._set_state("stopping")

    def wait(self, ms: int = 60_000) -> bool:
        """Block until the thread has ended (closing the window, tests)."""
        if self.process is not None:
            done = self.process.wait(ms)
            QCoreApplication.processEvents()  # its finished signal: the Finished event
            return done
        if self.thread is None:
            return True
        return self.thread.wait(ms)

    # -- worker -> views, in the GUI thread ----------------------------------------------
    @Slot(object)
    def _event(self, ev):
        from lora_studio.engine import events as E

        handler = {E.Status: self.status.emit, E.Evaluating: self._evaluating, E.Started: self._started,
                   E.Step: self._stepped, E.Eval: self._evaluated, E.Checkpoint: self.checkpointed.emit,
                   E.Spectra: self.spectra.emit, E.Samples: self.samples.emit, E.Paused: self._paused,
                   E.Resumed: self._resumed,
                   E.Finished: self._finished, E.Failed: self._finished}.get(type(ev))
        if handler is not None:
            handler(ev)

    def call_paused(self, fn):
        """Run fn(setup) in the training thread while paused (engine.events.Control.call_paused)."""
        if self.control is None or not self.control.paused:
            raise RuntimeError("training is not paused")
        return self.control.call_paused(fn)

    def _started(self, ev):
        self.run_dir = ev.out
        self.last_step = ev.start_step
        if self.state == "starting":
            self._set_state("running")
        self.started.emit(ev)

    def _stepped(self, ev):
        self.last_step = ev.step
        self.evaluating_now = None
        self.stepped.emit(ev)

    def _evaluating(self, ev):
        self.evaluating_now = ev if ev.done < ev.total else None
        self.evaluating.emit(ev)

    def _evaluated(self, ev):
        self.evaluating_now = None
        self.evaluated.emit(ev)

    def _paused(self, ev):
        if self.state != "stopping":
            self._set_state("paused")
        self.paused.emit(ev)

    def _resumed(self, ev):
        if self.state != "stopping":
            self._set_state("running")
        self.resumed.emit(ev)

    def _finished(self, ev):
        forget(self.thread)  # run() returns right after its last event
        self.thread, self.worker = None, None
        if self.process is not None:
            self.process.deleteLater()
            self.process = None
        self.evaluating_now = None
        self._set_state("idle")
        self.finished.emit(ev)
