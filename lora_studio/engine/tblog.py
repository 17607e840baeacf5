"""TensorBoard event files in every run folder, written with tensorboardX from the training events.

`TensorBoardLog(config)` is an event listener: called with each event `train()` emits, it opens a
writer on `Started` (in the run folder, so `tensorboard --logdir runs/` shows every run), writes
the scalars metrics.jsonl holds, and closes on `Finished`/`Failed`. On a resume from step N it
opens with `purge_step = N + 1`: TensorBoard drops what the killed process logged after the
checkpoint, as `train()` drops it from metrics.jsonl, so no step appears twice.

Events come from the torch-free engine/events.py and are dispatched on their type.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

from lora_studio.engine.events import Eval, Failed, Finished, Samples, Started, Step

TAGS_STEP = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
             "tokens_per_s": "train/tokens_per_s", "padding": "train/padding",
             "mfu": "train/mfu"}
TAGS_EVAL = {"eval_loss": "eval/loss", "accuracy": "eval/accuracy"}


def is_main_process() -> bool:
    """Rank 0 alone writes the run folder (torchrun sets RANK; a plain run has none)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


class TensorBoardLog:
    """Writes `train/*` per Step and `eval/*` per Eval into `<run folder>/events.out.tfevents.*`."""

    def __init__(self, config=None):
        self.config = config
        self.writer = None

    def __call__(self, event):
        if isinstance(event, Started):
            self.open(event.out, event.start_step)
        elif self.writer is None:
            return
        elif isinstance(event, Step):
            for attr, tag in TAGS_STEP.items():
                self.scalar(tag, getattr(event, attr), event.step)
            for name, value in (event.stats or {}).items():  # the objective's own numbers
                self.scalar(f"train/{name}", value, event.step)
        elif isinstance(event, Eval):
            for attr, tag in TAGS_EVAL.items():
                self.scalar(tag, getattr(event, attr, None), event.step)
            for name, value in (event.stats or {}).items():
                self.scalar(f"eval/{name}", value, event.step)
            self.writer.flush()
        elif isinstance(event, Samples):
            self.writer.add_text("samples", samples_markdown(event.rows), event.step)
        elif isinstance(event, (Finished, Failed)):
            self.close()

    def open(self, run_dir: str, start_step: int):
        from tensorboardX import SummaryWriter

        self.close()
        # The file name holds the second it was made: the ns suffix keeps two files of one second
        # apart and in order. purge_step: a resumed run's first step is start_step + 1; anything logged at or after it
        # by the process that died belongs to the discarded future.
        self.writer = SummaryWriter(logdir=run_dir, purge_step=start_step + 1 if start_step > 0 else None,
                                    flush_secs=10, filename_suffix=f".{time.time_ns()}")
        if start_step == 0 and self.config is not None:
            toml = self.config.to_toml() if hasattr(self.config, "to_toml") else str(self.config)
            # four-space indent: TensorBoard renders text as Markdown, this keeps it verbatim
            self.writer.add_text("config", "\n".join("    " + line for line in toml.splitlines()), 0)

    def scalar(self, tag: str, value, step: int):
        if value is None:
            return
        value = float(value)
        if math.isnan(value) and tag.startswith("eval/"):
            return  # no validation data: evaluate() says NaN, metrics.jsonl has no such row
        self.writer.add_scalar(tag, value, step)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def samples_markdown(rows: list[dict]) -> str:
    """One step's samples as TensorBoard Markdown: each prompt, then its answer verbatim."""
    parts = []
    for r in rows:
        answer = "\n".join("    " + line for line in (r["text"] or "(empty)").splitlines())
        parts.append(f"**{r['prompt']}**" + ("" if r["stopped"] else " *(cut at the token limit)*") + "\n\n" + answer)
    return "\n\n".join(parts)


def with_tensorboard(emit: Callable, config=None) -> Callable:
    """`emit` that also logs to TensorBoard (on the main process; elsewhere `emit` unchanged).
    A failing TensorBoard write never stops a run: the log is switched off instead."""
    if not is_main_process():
        return emit
    log = TensorBoardLog(config)

    def both(event):
        try:
            log(event)
        except Exception:  # noqa: BLE001 - losing the plot must not lose the run
            log.writer = None
        emit(event)

    return both
