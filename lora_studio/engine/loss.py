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

from lora_studio.engine.families import FAMILIES

CHUNK = 256  # rows per chunk: 256 x 32k fp32 logits = 32 MB

# logits = lm_head(backbone(x).last_hidden_state), nothing else: engine/families.py `plain_head`
PLAIN_HEAD = {t for t, f in FAMILIES.items() if f.plain_head}


class LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(h W^T (+ b), y) / n, with W, b frozen. h: (N, C), W: (V, C), y: (N,)."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, n: int, chunk: int):
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        # dL/dh stays fp32 until the loss scale is applied: divided by n in fp16 it would lose small
        # values (and n = 65536 tokens overflows), before GradScaler could lift them
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if ctx.needs_input_grad[0] else None
        space = chunk_space(h, weight, chunk)
        for i in range(0, h.shape[0], chunk):
            hc, yc = h[i:i + chunk], y[i:i + chunk]
            rows = torch.arange(len(yc), device=h.device)
            logits = _chunk_logits(hc, weight, bias, space)  # (c, V) float32, overwritten by the next chunk
            top = logits.amax(dim=1, keepdim=True)
            target = logits[rows, yc]
            logits.sub_(top).exp_()  # one exp per logit, reused for the softmax below
            sums = logits.sum(dim=1, keepdim=True)
            total += (top.squeeze(1) + sums.log().squeeze(1) - target).sum()
            if grad_h is not None:
                probs = logits.mul_(sums.reciprocal_())  # softmax, in place
                probs[rows, yc] -= 1.0
                grad_h[i:i + chunk] = (probs.to(weight.dtype) @ weight).float()
        if grad_h is not None:
            grad_h.div_(n)
        ctx.save_for_backward(grad_h)
        ctx.h_dtype = h.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return (grad_h * grad_out.float()).to(ctx.h_dtype), None, None, None, None, None


def chunk_space(h, weight, chunk: int) -> torch.Tensor | None:
    """One buffer for every chunk's logits on a CPU, where a fresh 32 MB tensor costs its page
    faults each time (9.7 ms to fill against 2.1 ms for one already touched); None elsewhere
    (the GPU's caching allocator already reuses the block), and for half weights (their product
    is converted to float32 anyway)."""
    if h.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    return torch.empty(weight.shape[0] * min(chunk, h.shape[0]), dtype=torch.float32)


def _chunk_logits(hc, weight, bias, space: torch.Tensor | None = None):
    """hc W^T (+ b) as float32, (c, V). On CPUs the product is formed as W hc^T, (V, c), and
    viewed transposed: the same numbers, and MKL forms this layout faster at c = 256 (with the
    single exp, the kernel went from 0.87-1.10x of HF's full-logits time to 0.69-1.0x across
    vocabularies of 32k-152k: benchmarks/bench_head.py). On GPUs the row-major product stays.
    `space` (chunk_space): where the CPU product is written, instead of a new tensor."""
    if hc.device.type == "cpu":
        out = None if space is None else space[: weight.shape[0] * hc.shape[0]].view(weight.shape[0], hc.shape[0])
        if bias is None:
            wt = torch.mm(weight, hc.t(), out=out) if out is not None else torch.mm(weight, hc.t())
        else:
            wt = torch.addmm(bias[:, None], weight, hc.t(), out=out) if out is not None else \
                torch.addmm(bias[:, None], weight, hc.t())
        return wt.float().t()
    return F.linear(hc, weight, bias).float()


def supports_fused_loss(model) -> bool:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cfg = model.config
    return (head is not None and getattr(cfg, "model_type", None) in PLAIN_HEAD
            and not getattr(cfg, "final_logit_softcapping", None) and getattr(cfg, "logit_scale", None) in (None, 1.0)
            and not any(p.requires_grad for p in head.parameters())
            and isinstance(head, torch.nn.Linear))


def causal_lm_loss(model, batch: dict, chunk: int = CHUNK, reduction: str = "mean") -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100, as HF's loss
    (reduction "sum": the sum, for evaluation). Every key of `batch` but `labels` is a model input
    (so packed rows' `position_ids` reach the backbone)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}  # input_ids, attention_mask, position_ids …
    hidden = model.base_model(**inputs).last_hidden_state
    targets = getattr(batch, "targets", None)  # found on the host by setup.to_device: no sync here
    rows, y = targets if targets is not None else target_rows(batch["labels"])
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)  # (N, C): only rows with a target
    n = max(int(y.numel()), 1) if reduction == "mean" else 1
    head = model.get_output_embeddings()
    return LinearCrossEntropy.apply(h, head.weight, head.bias, y, n, chunk)


def target_rows(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, y): flat indices into the (B*T) positions of the rows that predict a token (label of
    the next position not -100), and those labels; row-major, as boolean-mask indexing orders them.
    On a GPU tensor this syncs (the count decides the size): pass host labels where possible."""
    b, t = labels.shape
    nxt = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    keep = (nxt != -100).nonzero()  # (N, 2): batch index, position
    return keep[:, 0] * t + keep[:, 1], nxt[keep[:, 0], keep[:, 1]]


def training_loss(model, batch: dict) -> torch.Tensor:
    """The loss of one micro-batch as the training loop computes it."""
    if batch["labels"].dim() == 2 and supports_fused_loss(model):
        return causal_lm_loss(model, batch)
    return model(**batch).loss
