"""Faster training ops, same functions: dropout on a CPU (same distribution), fused GELU-tanh.

On a CPU, torch's dropout draws its mask with `bernoulli_`, which costs about twice as much as
`rand_like` (measured: 35 ms vs 19 ms for a 16x12x128x128 tensor on this 2-core machine), and a
BERT-sized step spent ~28% of its time there (docs/benchmarks.md). A mask from 16
random bits per element (`keep_mask`) gives the same Bernoulli(1-p) law, with p resolved to 2^-16,
at a fraction of the cost. Applied to the frozen model's dropout modules and, through a
registered attention function, to attention-probability dropout; on GPUs nothing changes (fused
kernels there are already fast). Only the random stream differs from torch's dropout.

GELU-tanh written as separate tensor ops (transformers' "gelu_new", "gelu_fast") becomes torch's
fused kernel on every device (`TanhGELU`). `speed_up` is what training applies.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NAME = "lora_studio_sdpa"


LEVELS = 1 << 16  # dropout probabilities are resolved to multiples of 2^-16


def keep_mask(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A Bernoulli keep-mask shaped like `x` and the drop probability it really has.

    Each element needs 16 random bits, not a float: one 64-bit draw (`random_` over the whole
    int64 range) yields four of them, viewed as int16. That is ~2.8x faster than
    `rand_like(x) >= p` on a CPU (benchmarks/bench_dropout_mask.py: 7.2 vs 20.3 ms for
    16x12x128x128). p becomes k / 2^16 with k = round(p * 2^16), at most 7.7e-6 from the p asked
    for; the caller scales by 1 / (1 - that p), so E[out] = x exactly.
    """
    k = min(LEVELS - 1, max(0, round(p * LEVELS)))
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    u = words.view(torch.int16)[:n].view(x.shape)  # uniform on [-2^15, 2^15)
    return u >= k - (LEVELS // 2), k / LEVELS  # P(u >= k - 2^15) = 1 - k / 2^16


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    keep, p_eff = keep_mask(x, p)
    # where() keeps only the bool mask for its backward (a float mask would hold 4x the memory);
    # `x * keep` would convert the bool tensor in the forward and again in the backward
    return torch.where(keep, x, 0.0) * (1.0 / (1.0 - p_eff))


class FastDropout(nn.Dropout):
    def forward(self, x):
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        return fast_dropout(x, self.p)


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
               **kwargs):
    """Eager attention with the fast dropout when dropout applies on a CPU; else torch's SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not dropout or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    if key.shape[1] != query.shape[1]:  # grouped-query attention: repeat kv heads
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    # the scale on q (B,H,T,d), not on the scores (B,H,T,S): d/S as many multiplies
    scores = torch.matmul(query * scaling, key.transpose(2, 3))  # (B, H, T, S), a fresh tensor
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    # masks are added, not filled in: an in-place add has no work to do in the backward, where
    # masked_fill would clone and fill the (B, H, T, S) gradient once more
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        scores.add_(_additive(~mask, scores.dtype) if mask.dtype == torch.bool else mask)
    elif causal and query.shape[2] > 1:
        t, s = query.shape[2], key.shape[2]
        scores.add_(_additive(torch.ones(t, s, dtype=torch.bool, device=scores.device).triu(s - t + 1), scores.dtype))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    keep, p_eff = keep_mask(probs, dropout)
    # dropout's 1 / (1 - p) goes on the (B, H, T, d) output, not the (B, H, T, S) probabilities
    out = torch.matmul(torch.where(keep, probs, 0.0), value) * (1.0 / (1.0 - p_eff))
    return out.transpose(1, 2).contiguous(), None


def _additive(masked_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's lowest value where `masked_out` is True: the
    same softmax as masked_fill with that value (exp underflows to exactly 0 either way)."""
    return torch.zeros(masked_out.shape, dtype=dtype, device=masked_out.device).masked_fill_(masked_out, torch.finfo(dtype).min)


def _register():
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class TanhGELU(nn.Module):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as torch's one fused kernel.

    transformers' NewGELUActivation ("gelu_new": GPT-2, Phi, GPT-J, ...) and FastGELUActivation
    ("gelu_fast") write this function as 8-9 separate tensor operations, each a pass over the
    (tokens x 4 hidden) MLP activation forward and more in the backward. Same function, same
    gradient (tests/engine/test_fast.py, to fp32 rounding)."""

    def forward(self, x):
        return gelu_tanh(x)


def fuse_activations(model: nn.Module) -> int:
    """Swap multi-op GELU-tanh modules for the fused one. Returns how many were swapped."""
    from transformers.activations import FastGELUActivation, NewGELUActivation

    n = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(parent, name, TanhGELU())
                n += 1
    return n


# RMSNorm classes whose forward is exactly Llama's: w * (x * rsqrt(mean(x^2) + eps)).to(dtype)
RMSNORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Phi3RMSNorm", "SmolLM3RMSNorm")


class _RMSNorm(torch.autograd.Function):
    """Llama's RMSNorm with a hand-written backward: the same function, in fewer passes.

    transformers writes it as 5 tensor ops (pow, mean, add+rsqrt, mul, mul), each a pass over the
    (tokens x hidden) activation forward and more backward (about 8 full passes, and a full-size
    `pow` gradient). Here: forward = one norm reduction and two passes; backward, with
    x_hat = x r and g' = g w: dx = r (g' - x_hat mean(g' x_hat)), as a dot product per row, one
    addcmul and one scale. Same values to fp32 rounding (tests/engine/test_fast.py)."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        xf = x.float()  # (..., C); a no-op in fp32
        # r = 1 / sqrt(mean(x^2) + eps), from the row norm: no (..., C) temporary
        r = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).pow_(2).div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, r)
        return torch.mul(xf, r).to(x.dtype).mul_(weight) if weight.dtype == x.dtype else \
            weight * torch.mul(xf, r).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, weight, r = ctx.saved_tensors
        xf, C = x.float(), x.shape[-1]
        gw = (g * weight).float()  # dL/d(x_hat)
        coef = torch.linalg.vecdot(gw, xf).unsqueeze(-1).mul_(r).mul_(r).div_(-C)  # -mean(g' x_hat) r
        dx = torch.addcmul(gw, xf, coef).mul_(r).to(x.dtype)
        dw = None
        if ctx.needs_input_grad[1]:  # a trained norm (modules_to_save)
            dw = (g * torch.mul(xf, r).to(x.dtype)).reshape(-1, C).sum(0).to(weight.dtype)
        return dx, dw, None


class FastRMSNorm(nn.Module):
    """Set as the class of an RMSNorm module listed in RMSNORMS (its weight and eps stay)."""

    def forward(self, x):
        return _RMSNorm.apply(x, self.weight, self.variance_epsilon)


_FAST_NORMS: dict[type, type] = {}  # LlamaRMSNorm -> FastLlamaRMSNorm(FastRMSNorm, LlamaRMSNorm), …


def fuse_norms(model: nn.Module) -> int:
    """Give Llama-form RMSNorm modules the fewer-pass backward (they stay instances of their own
    class). Returns how many."""
    n = 0
    for module in model.modules():
        cls = type(module)
        if cls.__name__ in RMSNORMS and hasattr(module, "variance_epsilon"):
            if cls not in _FAST_NORMS:
                _FAST_NORMS[cls] = type(f"Fast{cls.__name__}", (FastRMSNorm, cls), {})
            module.__class__ = _FAST_NORMS[cls]
            n += 1
    return n


def speed_up(model: nn.Module, device: torch.device | str) -> dict:
    """What training applies to the frozen model before the first step: the fused activations
    and norms on every device, the fast dropout on CPUs. Returns what it changed, for the log."""
    done = {"activations": fuse_activations(model), "norms": fuse_norms(model)}
    if torch.device(device).type == "cpu":
        done["dropout"] = speed_up_dropout(model)
    return done


def speed_up_dropout(model: nn.Module) -> int:
    """Swap the model's dropout for the same-law fast one (CPU training). Returns how many
    dropout modules were swapped; the attention function changes only where the model uses
    SDPA and has attention dropout."""
    n = 0
    for module in model.modules():
        if type(module) is nn.Dropout and module.p > 0:
            module.__class__ = FastDropout
            n += 1
    cfg = model.config
    drop = max(float(getattr(cfg, k, 0.0) or 0.0) for k in ("attention_probs_dropout_prob", "attention_dropout",
                                                                "attn_pdrop"))
    if drop > 0 and getattr(cfg, "_attn_implementation", None) == "sdpa":
        _register()
        model.set_attn_implementation(NAME)
    return n
