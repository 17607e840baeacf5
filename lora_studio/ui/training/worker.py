"""The training worker: engine.train.train in a QThread, its events re-emitted as Qt signals.

The events are the engine's own dataclasses (plain numbers, never tensors), so they cross the
thread boundary as they are. The worker never touches a widget; Stop/Pause/Resume go through the
engine's `Control` flags, which the loop reads between steps.
"""

from __future__ import annotations

import traceback

from PySide6.QtCore import QObject, QThread, Qt, Signal, Slot


class TrainWorker(QObject):
    """Runs one training run (or the resume of one) in its thread.

    Signals (each carries the engine event of the same name):
        status(object): train.Status
        started(object): train.Started
        stepped(object): train.Step, once per logged step
        evaluated(object): train.Eval
        checkpointed(object): train.Checkpoint
        spectra(object): train.Spectra
        paused(object): train.Paused
        resumed(object): train.Resumed
        finished(object): train.Finished or train.Failed - always exactly once, last
    """

    status = Signal(object)
    started = Signal(object)
    stepped = Signal(object)
    evaluated = Signal(object)
    checkpointed = Signal(object)
    spectra = Signal(object)
    paused = Signal(object)
    resumed = Signal(object)
    finished = Signal(object)

    def __init__(self, config, control, resume: str | None = None, spectra_every: int = 10):
        super().__init__()
        self.config, self.control, self.resume, self.spectra_every = config, control, resume, spectra_every
        self._ended = False
        self._signals = {"Status": self.status, "Started": self.started, "Step": self.stepped,
                         "Eval": self.evaluated, "Checkpoint": self.checkpointed, "Spectra": self.spectra,
                         "Paused": self.paused, "Resumed": self.resumed}

    def _on_event(self, event):  # called in the worker thread by the training loop
        name = type(event).__name__
        if name in ("Finished", "Failed"):
            if not self._ended:
                self._ended = True
                self.finished.emit(event)
        elif name in self._signals:
            self._signals[name].emit(event)

    @Slot()
    def run(self):
        try:
            from lora_studio.engine import warm_imports

            warm_imports()
            from lora_studio.engine.train import train

            train(self.config, self._on_event, self.control, resume=self.resume, spectra_every=self.spectra_every)
        except BaseException as e:  # noqa: BLE001 - the GUI must hear about everything
            from lora_studio.engine.train import Failed

            self._on_event(Failed(f"{type(e).__name__}: {e}", "bug", 0, traceback.format_exc()))
        finally:
            if not self._ended:
                from lora_studio.engine.train import Failed

                self._on_event(Failed("training ended without a result", "bug"))


class TrainingController(QObject):
    """Owns the training thread: start, pause/resume, stop, and the run's state for the views.

    Signals:
        state_changed(str): idle | starting | running | paused | stopping
        status(object), started(object), stepped(object), evaluated(object), checkpointed(object),
        spectra(object), paused(object), resumed(object), finished(object): the worker's, in the GUI thread
    """

    state_changed = Signal(str)
    status = Signal(object)
    started = Signal(object)
    stepped = Signal(object)
    evaluated = Signal(object)
    checkpointed = Signal(object)
    spectra = Signal(object)
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

    @property
    def running(self) -> bool:
        return self.state != "idle"

    def _set_state(self, state: str):
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def start(self, config, resume: str | None = None):
        """Start `config` (a validated RunConfig) or resume the run folder `resume`."""
        if self.running:
            raise RuntimeError("a run is already in progress")
        from lora_studio.engine import warm_imports

        warm_imports()  # waits for a probe thread's first torch import, if one is in flight
        from lora_studio.engine.train import Control

        self.control = Control()
        self.run_dir = str(resume or config.out)
        self.last_step = 0
        self.worker = TrainWorker(config, self.control, resume, self.spectra_every)
        self.thread = QThread()
        self.thread.setObjectName("training")
        self.worker.moveToThread(self.thread)
        w = self.worker
        for sig, slot in ((w.status, self.status), (w.started, self._started), (w.stepped, self._stepped),
                          (w.evaluated, self.evaluated), (w.checkpointed, self.checkpointed),
                          (w.spectra, self.spectra), (w.paused, self._paused), (w.resumed, self._resumed),
                          (w.finished, self._finished)):
            sig.connect(slot, Qt.QueuedConnection)  # delivered in the GUI thread, in order
        self.thread.started.connect(w.run)
        w.finished.connect(self.thread.quit, Qt.DirectConnection)  # quit() is thread-safe
        self._set_state("starting")
        self.thread.start()

    def pause(self):
        if self.state in ("running", "starting") and self.control:
            self.control.pause()

    def resume(self):
        if self.control and self.control.paused:
            self.control.resume()

    def toggle_pause(self):
        if self.control is None or not self.running:
            return
        self.resume() if self.control.paused else self.pause()

    def stop(self):
        """Ask the loop to stop after the current step; it saves a checkpoint (resumable)."""
        if self.control and self.running:
            self.control.stop()
            self._set_state("stopping")

    def wait(self, ms: int = 60_000) -> bool:
        """Block until the thread has ended (closing the window, tests)."""
        if self.thread is None:
            return True
        return self.thread.wait(ms)

    # -- worker -> views, in the GUI thread ----------------------------------------------
    @Slot(object)
    def _started(self, ev):
        self.run_dir = ev.out
        self.last_step = ev.start_step
        if self.state == "starting":
            self._set_state("running")
        self.started.emit(ev)

    @Slot(object)
    def _stepped(self, ev):
        self.last_step = ev.step
        self.stepped.emit(ev)

    @Slot(object)
    def _paused(self, ev):
        if self.state != "stopping":
            self._set_state("paused")
        self.paused.emit(ev)

    @Slot(object)
    def _resumed(self, ev):
        if self.state != "stopping":
            self._set_state("running")
        self.resumed.emit(ev)

    @Slot(object)
    def _finished(self, ev):
        if self.thread is not None:
            self.thread.wait()
        self.thread, self.worker = None, None
        self._set_state("idle")
        self.finished.emit(ev)
