"""Samples during training: greedy answers to a few prompts at step 0 (the base) and at every
evaluation, in samples.jsonl (one object per step and prompt: step, prompt, text, stopped) and in
TensorBoard as text.

Prompts: `train.sample_prompts` (a file, one prompt per line), else the first 4 held-out prompts
(data.Prepared.sample_prompts). A chat run's prompts go through the chat template. Answers are
greedy and computed one prompt at a time, so a resumed run (same adapter weights from its
checkpoint) writes the same samples as an unbroken one; on resume the lines after the checkpoint
are dropped, as metrics.jsonl's are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lora_studio.engine.errors import UserError
from lora_studio.engine.runfolder import SAMPLES_FILE, metrics_line

DEFAULT_PROMPTS = 4
MAX_NEW_TOKENS = 48


@dataclass
class Sampler:
    prompts: list  # strings, or message lists (chat)
    chat: bool
    every: int  # -1: at each evaluation; N > 0: every N steps (and at the last)
    max_new_tokens: int = MAX_NEW_TOKENS

    def due(self, step: int, total: int, eval_due: bool) -> bool:
        if self.every < 0:
            return eval_due
        return step % self.every == 0 or step == total

    def run(self, s, step: int, run_dir, emit=None, write: bool = True) -> list[dict]:
        """Answer every prompt with the live model (eval mode, then back), append to samples.jsonl."""
        from lora_studio.engine.events import Samples
        from lora_studio.engine.generate import generate, prompt_text

        model = s.model
        was_training = model.training
        model.eval()
        try:
            answers = generate(model, s.tokenizer, self.prompts, self.chat, self.max_new_tokens)
        finally:
            model.train(was_training)
        rows = [{"step": step, "prompt": prompt_text(p), "text": a.text, "stopped": a.stopped}
                for p, a in zip(self.prompts, answers)]
        if write:
            with open(Path(run_dir) / SAMPLES_FILE, "a", encoding="utf-8") as f:
                f.write("".join(metrics_line(r) for r in rows))
        if emit is not None:
            emit(Samples(step, rows))
        return rows


def sampler_for(s) -> Sampler | None:
    """The run's sampler, or None (not a causal LM, turned off, or no prompt to sample)."""
    t = s.config.train
    if s.config.model.task not in ("causal-lm", "preference") or t.sample_every == 0:
        return None
    chat = s.data.chat
    if t.sample_prompts:
        path = Path(t.sample_prompts)
        try:
            prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"sample prompts {path}: cannot read it ({type(e).__name__}); give a UTF-8 text file, "
                            "one prompt per line") from None
        if not prompts:
            raise UserError(f"sample prompts {path} is empty: one prompt per line")
    else:
        prompts = list(getattr(s.data, "sample_prompts", None) or [])[:DEFAULT_PROMPTS]
    return Sampler(prompts, chat, t.sample_every) if prompts else None


def sampler_for_run(s, run_dir, resumed_at: int | None, dist) -> Sampler | None:
    """The loop's sampler; on resume it keeps samples.jsonl up to the checkpoint, a new run starts it empty."""
    if dist.many:  # generation on a sharded model needs every process: no samples under torchrun
        return None
    sampler = sampler_for(s)
    if resumed_at is not None:
        keep_until(run_dir, resumed_at)
    elif sampler:
        (Path(run_dir) / SAMPLES_FILE).write_text("")
    return sampler


def keep_until(run_dir, step: int):
    """On resume from `step`: drop the samples written after it (they belong to the lost future)."""
    from lora_studio.engine.atomic import atomic_write_bytes

    path = Path(run_dir) / SAMPLES_FILE
    if path.is_file():
        kept = [r for r in read_samples(run_dir) if r.get("step", 0) <= step]
        atomic_write_bytes(path, "".join(metrics_line(r) for r in kept).encode())


def read_samples(run_dir) -> list[dict]:
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            break
    return out


def by_step(rows: list[dict]) -> dict[int, dict[str, dict]]:
    """{step: {prompt: row}}: what the GUI's Samples view shows."""
    out: dict[int, dict[str, dict]] = {}
    for r in rows:
        out.setdefault(int(r["step"]), {})[r["prompt"]] = r
    return out
