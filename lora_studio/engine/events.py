"""The training events and the stop/pause control. Torch-free and Qt-free.

Events are small dataclasses holding Python numbers and strings only, never live tensors, so
they cross threads (the GUI's worker) and processes (a run followed through its folder) as they
are. Consumers dispatch on the type: `isinstance(ev, Step)`.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from lora_studio.engine.errors import Failure

Failed = Failure  # the last event of a run that did not finish: message, kind, detail, step


@dataclass
class Status:
    message: str


@dataclass
class Evaluating:
    """Progress of an evaluation pass (the baseline at step 0 can take a while)."""

    step: int
    done: int  # examples evaluated so far
    total: int


@dataclass
class Started:
    out: str
    total_steps: int
    start_step: int  # > 0 when resumed
    device: str  # "cuda", "cpu" …
    device_name: str  # "NVIDIA H100 80GB HBM3", "CPU (2 threads)"
    precision: str
    trainable_params: int
    total_params: int
    train_examples: int
    validation_examples: int
    task: str
    label_names: list[str] | None = None
    elapsed_before: float = 0.0  # seconds trained before this process resumed the run
    notes: list[str] | None = None  # what the run adjusted and why (one line each)


@dataclass
class Step:
    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    elapsed: float  # seconds of training in this run, resumed parts included
    eta: float  # seconds left, evaluation included
    mem_allocated: int  # bytes: CUDA allocated, or process RSS on CPU
    mem_peak: int  # bytes: CUDA peak allocated, or peak RSS on CPU
    stats: dict[str, float] | None = None  # the objective's extra numbers (engine/objective.py), by name
    padding: float | None = None  # share of the step's computed positions that were padding (0 when packed)
    mfu: float | None = None  # model FLOPs utilisation on a listed GPU (engine/flops.py: the convention)


@dataclass
class Eval:
    step: int
    eval_loss: float
    accuracy: float | None = None  # classification only
    stats: dict[str, float] | None = None  # the objective's extra numbers over the validation set, by name


@dataclass
class Checkpoint:
    step: int
    path: str


@dataclass
class Spectra:
    step: int
    modules: list  # spectra.ModuleSpectrum (plain numbers)


@dataclass
class Samples:
    """Greedy answers to the sample prompts at one step (the rows written to samples.jsonl)."""

    step: int
    rows: list  # [{"step", "prompt", "text", "stopped"}]


@dataclass
class Paused:
    step: int


@dataclass
class Resumed:
    step: int


@dataclass
class Finished:
    step: int
    out: str
    stopped: bool  # True: stopped by the user before the last step (resumable)
    eval_loss: float | None = None
    accuracy: float | None = None
    mem_peak: int = 0  # bytes, measured peak of the run (CUDA allocated or process RSS)


EVENTS = (Status, Evaluating, Started, Step, Eval, Checkpoint, Spectra, Paused, Resumed, Finished, Failed)


class Control:
    """Flags set from another thread (GUI, Ctrl-C handler), read by the loop between steps.

    While paused, the loop also runs functions handed to it with `call_paused(fn)`: `fn(context)`
    runs in the training thread on the live model (Try it while paused uses the weights being
    trained, without a second copy of the model), and the returned Future holds the result.
    """

    def __init__(self):
        self._stop = threading.Event()
        self._run = threading.Event()
        self._run.set()
        self._calls: queue.Queue = queue.Queue()

    def stop(self):
        self._stop.set()
        self._run.set()  # a paused loop wakes up to stop

    def pause(self):
        self._run.clear()

    def resume(self):
        self._run.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._run.is_set()

    def call_paused(self, fn: Callable) -> Future:
        """Run `fn(context)` in the training thread while it is paused; the Future has the result."""
        fut: Future = Future()
        self._calls.put((fn, fut))
        return fut

    def wait_while_paused(self, context=None):
        while not self._run.wait(0.05):
            self._serve(context)
        self._serve(context)

    def _serve(self, context):
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(context))
            except BaseException as e:  # noqa: BLE001 - the caller gets it through the Future
                fut.set_exception(e)

    def drop_calls(self, reason: str = "training is not paused"):
        """Fail calls that can no longer be served (the run ended)."""
        from lora_studio.engine.errors import UserError

        while True:
            try:
                _, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(UserError(reason))
