"""What every step uses, whatever the task: autocast for the run's precision, and a host batch
moved to its device with the causal-LM target rows found before the copy (engine/setup.py
re-exports these; engine/distributed.py uses them without importing the loading code)."""

from __future__ import annotations

import torch


def autocast(s):
    """Autocast for the run's precision (`s`: a Setup, or anything with `precision` and `device`)."""
    if s.precision in ("bf16", "fp16"):
        return torch.autocast(s.device.type, dtype=torch.bfloat16 if s.precision == "bf16" else torch.float16)
    return torch.autocast(s.device.type, enabled=False)


class Batch(dict):
    """A batch on its device, plus `targets`: (rows, labels) of the positions that have a next-token
    target, found on the host before the copy (causal LMs), so the fused loss need not find them on
    the GPU (a boolean mask's size is a sync point). Still a plain dict for model(**batch)."""

    targets: tuple | None = None


def to_device(batch: dict, device: torch.device) -> Batch:
    from lora_studio.engine.loss import target_rows

    targets = target_rows(batch["labels"]) if batch.get("labels") is not None and batch["labels"].dim() == 2 else None
    if device.type == "cuda":  # pinned host memory makes the copy asynchronous
        move = lambda v: v.pin_memory().to(device, non_blocking=True)  # noqa: E731
    else:
        move = lambda v: v.to(device)  # noqa: E731
    out = Batch({k: move(v) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})  # host ints stay
    out.targets = tuple(move(t) for t in targets) if targets is not None else None
    return out
