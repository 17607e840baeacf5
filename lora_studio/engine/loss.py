"""Causal-LM loss without materialising the logits: fused linear + cross-entropy, chunked.

Hugging Face computes `logits = lm_head(h)` for every position (B x T x V floats: 262 MB for
4 x 512 tokens and a 32k vocabulary), then log-softmax, then its gradient, all full size. In a
LoRA step the head is frozen, so all the backward needs from it is dL/dh. `LinearCrossEntropy`
computes, chunk by chunk of rows, the loss and dL/dh = (softmax - onehot) W / N in the forward
pass and keeps only dL/dh (N x C); nothing of size V outlives a chunk. Rows whose label is -100
(prompt, padding) are skipped entirely: the head GEMM runs only where there is a target.

Same value and same gradients as `model(**batch).loss` (tests/engine/test_loss.py); used only
for architectures whose logits are exactly `lm_head(last_hidden_state)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK = 256  # rows per chunk: 256 x 32k fp32 logits = 32 MB

# logits = lm_head(backbone(x).last_hidden_state), nothing else (no softcapping, no scale)
PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3", "phi3", "phi", "gpt2", "gpt_neox", "opt", "gemma",
              "olmo", "olmo2", "smollm3", "bloom"}


class LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(h W^T (+ b), y) / n, with W, b frozen. h: (N, C), W: (V, C), y: (N,)."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, n: int, chunk: int):
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        for i in range(0, h.shape[0], chunk):
            hc, yc = h[i:i + chunk], y[i:i + chunk]
            logits = F.linear(hc, weight, bias).float()  # (c, V)
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, yc[:, None]).squeeze(1)).sum()
            if grad_h is not None:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                probs[torch.arange(len(yc), device=h.device), yc] -= 1.0
                grad_h[i:i + chunk] = (probs.to(weight.dtype) @ weight).div_(n).to(h.dtype)
        ctx.save_for_backward(grad_h)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype), None, None, None, None, None


def supports_fused_loss(model) -> bool:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cfg = model.config
    return (head is not None and getattr(cfg, "model_type", None) in PLAIN_HEAD
            and not getattr(cfg, "final_logit_softcapping", None) and getattr(cfg, "logit_scale", None) in (None, 1.0)
            and not any(p.requires_grad for p in head.parameters())
            and isinstance(head, torch.nn.Linear))


def causal_lm_loss(model, batch: dict, chunk: int = CHUNK) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100, as HF's loss."""
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
    labels = batch["labels"][:, 1:]  # (B, T-1): position t predicts token t+1
    keep = labels != -100
    h = hidden[:, :-1][keep]  # (N, C): only rows with a target
    y = labels[keep]
    n = max(int(y.numel()), 1)
    head = model.get_output_embeddings()
    return LinearCrossEntropy.apply(h, head.weight, head.bias, y, n, chunk)


def training_loss(model, batch: dict) -> torch.Tensor:
    """The loss of one micro-batch as the training loop computes it."""
    if batch["labels"].dim() == 2 and supports_fused_loss(model):
        return causal_lm_loss(model, batch)
    return model(**batch).loss
