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


# -- metrics.jsonl rows back into events (a run followed through its folder) ------------------------
_ROW_ONLY = {"time"}  # metrics.jsonl keys that are no event field


def events_of_row(row: dict, total_steps: int) -> list:
    """The Step and/or Eval a metrics.jsonl row records (train.Loop writes them): fixed fields by
    name, any other key as the objective's stats (`eval_<name>` on evaluation rows). Fields the row
    lacks (elapsed, eta) are NaN."""
    from dataclasses import fields

    nan = float("nan")
    out = []
    step = int(row.get("step", 0))
    if row.get("loss") is not None:
        known = {f.name for f in fields(Step)}
        stats = {k: v for k, v in row.items() if k not in known and k not in _ROW_ONLY and not k.startswith("eval_")
                 and k != "accuracy"}
        out.append(Step(step=step, total_steps=total_steps, epoch=row.get("epoch", nan), loss=row["loss"],
                        lr=row.get("lr", nan), grad_norm=row.get("grad_norm", nan),
                        tokens_per_s=row.get("tokens_per_s", nan), elapsed=row.get("elapsed", nan),
                        eta=row.get("eta", nan), mem_allocated=int(row.get("mem_allocated", 0) or 0),
                        mem_peak=int(row.get("mem_peak", 0) or 0), stats=stats or None, padding=row.get("padding"),
                        mfu=row.get("mfu")))
    if row.get("eval_loss") is not None:
        stats = {k[5:]: v for k, v in row.items() if k.startswith("eval_") and k != "eval_loss"}
        out.append(Eval(step=step, eval_loss=row["eval_loss"], accuracy=row.get("accuracy"), stats=stats or None))
    return out
