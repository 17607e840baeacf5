"""Model FLOPs utilisation (MFU) of a LoRA training step, and the convention it counts by.

The convention (LoRA, per real token; padding is never counted):
  * the frozen base: its forward, 2 N, and the backward that carries the gradient to each
    layer's input, another 2 N, so **4 N**. N = the weights of the base's matrix products
    (every Linear / Conv1D weight, the output head included; embedding lookups are no product).
    A full fine-tune would add 2 N more for the weights' own gradients: LoRA never computes them.
  * the adapter: forward, input gradient and the weight gradients of A and B, **6 per trainable
    weight** (r (in + out) per adapted module).
  * attention's two products (Q K^T and P V), causal and within each example: 2 x 2 d L^2 / 2
    forward per layer and example of L tokens, twice that backward: **6 d L^2** per layer and
    example (d = heads x head size).
Not counted: elementwise work (norms, RoPE, activations, softmax), the optimizer.
MFU = counted FLOPs / step time / the GPU's dense bf16/fp16 tensor peak (`PEAKS`, from the vendors'
data sheets). Shown on CUDA for bf16/fp16 runs on a GPU listed in `PEAKS`; elsewhere None.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# dense (no sparsity) bf16/fp16 tensor-core peak, TFLOP/s, by a substring of the device name;
# the first match wins, so the more specific names come first
PEAKS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("B200", 2250.0),
         ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.2),
         ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0))


def peak_flops(device: torch.device, precision: str) -> float | None:
    """FLOP/s of the device's dense bf16/fp16 peak, or None (CPU, fp32, or a GPU not listed)."""
    if device.type != "cuda" or precision not in ("bf16", "fp16"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAKS if key in name), None)


def count(model: nn.Module) -> dict:
    """The numbers the convention needs: N (frozen matrix-product weights), the trainable weights,
    and attention's (layers, d)."""
    from transformers.pytorch_utils import Conv1D

    frozen = trainable = 0
    seen = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, Conv1D)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            # in x out, not numel: a 4-bit base (bitsandbytes) packs two weights per byte
            n = module.in_features * module.out_features if isinstance(module, nn.Linear) else module.weight.numel()
            if module.weight.requires_grad:
                trainable += n  # a head or a layer trained whole
            else:
                frozen += n
    trainable += sum(p.numel() for p in model.parameters() if p.requires_grad and p.dim() == 2
                     and id(p) not in seen)  # LoRA's A and B (and DoRA's magnitudes are 1-D: no product)
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 0)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0)
    head_dim = getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0)
    return {"frozen": frozen, "trainable": trainable, "layers": layers, "attn_dim": heads * head_dim}


def step_flops(c: dict, tokens: int, squares: int) -> float:
    """Counted FLOPs of a step of `tokens` real tokens whose examples' lengths squared sum to `squares`."""
    return (4 * c["frozen"] + 6 * c["trainable"]) * tokens + 6 * c["layers"] * c["attn_dim"] * squares


def length_squares(batch: dict) -> int:
    """Sum over the batch's examples of (real length)^2, on the host: from a packed row's bounds,
    else each padded row's attention mask."""
    from lora_studio.engine.packing import BOUNDS

    if BOUNDS in batch:
        b = batch[BOUNDS]
        return sum((e - s) ** 2 for s, e in zip(b[:-1], b[1:]))
    mask = batch.get("attention_mask")
    if mask is None:
        ids = batch.get("input_ids")
        return int(ids.shape[0] * ids.shape[1] ** 2) if ids is not None and ids.dim() == 2 else 0
    return int((mask.sum(dim=1) ** 2).sum()) if mask.dim() == 2 else 0
