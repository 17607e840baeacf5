"""The optimizer of a run: its parameter groups (LoRA+, Hayou et al. 2024: B's learning rate =
ratio × A's) and the optimizer itself (AdamW, or bitsandbytes' 8-bit/paged AdamW: quantize.py)."""

from __future__ import annotations

import torch.nn as nn


def optimizer_groups(model: nn.Module, lr: float, ratio: float) -> list[dict]:
    """One group at `lr` (A, DoRA magnitudes, heads), one at ratio·lr (every B). ratio 1: one group."""
    params = [p for p in model.parameters() if p.requires_grad]
    if ratio == 1:
        return [{"params": params, "lr": lr}]
    bs = {id(p) for n, p in model.named_parameters() if p.requires_grad and n.endswith("lora_B")}
    return [{"params": [p for p in params if id(p) not in bs], "lr": lr},
            {"params": [p for p in params if id(p) in bs], "lr": lr * ratio}]


def build_optimizer(model: nn.Module, train):
    """The optimizer a TrainConfig asks for, over the model's trainable parameters."""
    from lora_studio.engine.quantize import make_optimizer

    return make_optimizer(train.optimizer, optimizer_groups(model, train.lr, train.loraplus_ratio), train.lr,
                          train.weight_decay)
