"""The LoRA family on top of the plain layer: DoRA, PiSSA/OLoRA/Gaussian init, LoRA+ groups.

Kept out of lora.py so that the plain layer stays the plain paper; `LoraLayer` calls in here only
when a layer carries a variant. Everything stays PEFT 0.21-compatible on disk:

- DoRA (Liu et al. 2024, arXiv 2402.09353): W = m · (W0 + sBA) / ‖W0 + sBA‖_c, where ‖·‖_c is the
  norm of each output row of the (out x in) matrix (a column of the paper's d x k layout) and m
  (out,) is trained. As in the paper §4.3 and PEFT, the norm is detached: it scales the output but
  gets no gradient. m is saved as `<module>.lora_magnitude_vector.weight`.
- PiSSA (Meng et al. 2024): A, B from the top-r singular triplets of W0 (√σ on each side, σ / s so
  that s·B A is the rank-r part of W0); OLoRA (Büyükakyüz 2024): B, A = Q[:, :r], R[:r] of W0 = QR.
  The base becomes the residual W0 - s·B0 A0. Saved for users as a plain LoRA of rank 2r on the
  ORIGINAL W0: A' = [A; A0], B' = [B, -B0], alpha' keeping s (PEFT's conversion), because
  W0 + s·B' A' = (W0 - s·B0 A0) + s·B A.
- LoRA+ (Hayou et al. 2024): B's learning rate = ratio × A's, by optimizer parameter groups.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_studio.core.names import INITS, PRINCIPAL_INITS  # noqa: F401
from lora_studio.engine.errors import UserError

PISSA_NITER = 4  # subspace iterations of torch.svd_lowrank (PEFT's `pissa_niter_4`)
EXACT_SVD_BELOW = 1024  # min(out, in) under which the exact SVD is cheap enough (and exact)


def check(sites, spec):
    """Refuse, before the model is touched, what cannot be kept exact on disk."""
    if spec.init not in INITS:
        raise UserError(f"init {spec.init!r} unknown: use one of {', '.join(INITS)}")
    if spec.dora and spec.init in PRINCIPAL_INITS:
        raise UserError("DoRA with PiSSA/OLoRA init is not supported: choose --dora or --init pissa|olora")
    fused = [s.name for s in sites if s.slices]
    if fused and (spec.dora or spec.init in PRINCIPAL_INITS):
        what = "DoRA" if spec.dora else spec.init
        raise UserError(f"{what} cannot adapt part of a fused projection ({fused[0]} holds several); "
                        f"in PEFT format its math would change. Target the whole module by name "
                        f"(e.g. --targets '{fused[0].rsplit('.', 1)[-1]}') or use plain LoRA")


def base_weight(layer) -> torch.Tensor:
    """W0 of the frozen base as (out x in), a view in its own dtype (Conv1D stores in x out)."""
    w = layer.base_layer.weight
    if not w.dtype.is_floating_point or w.dim() != 2 or getattr(w, "quant_state", None) is not None:
        raise UserError(f"{layer.extra_repr()}: DoRA/PiSSA/OLoRA need a float base weight; "
                        "turn off --quantize for this run")
    return w.T if layer.conv1d else w


def prepare(layer, spec, generator: torch.Generator | None = None):
    """Apply `spec.init` and `spec.dora` to a freshly built (plain, unfused) layer."""
    layer.init_method = spec.init
    if spec.init == "gaussian":
        with torch.no_grad():
            nn.init.normal_(layer.lora_A, std=1 / layer.r)  # PEFT's "gaussian"; B stays zero
    elif spec.init in PRINCIPAL_INITS:
        init_principal(layer, spec.init)
    if spec.dora:
        layer.use_dora = True
        with torch.no_grad():
            norm = row_norm(layer, layer.delta_weight(torch.float32))
        layer.lora_magnitude_vector = nn.Parameter(norm.to(layer.lora_A.dtype))


@torch.no_grad()
def init_principal(layer, method: str):
    """PiSSA or OLoRA: A, B from W0, base <- W0 - s·B A. Keeps A0, B0 (the saved conversion needs them)."""
    w = base_weight(layer)
    W = w.to(torch.float32)
    r, s = layer.r, layer.scaling
    if method == "pissa":
        # W ≈ U Σ Vᵀ (U: out x r, V: in x r): exact for small matrices, else randomised (pissa_niter_N)
        if min(W.shape) < EXACT_SVD_BELOW:
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            U, S, V = U[:, :r], S[:r], Vh[:r].T
        else:
            U, S, V = torch.svd_lowrank(W, q=r, niter=PISSA_NITER)
        S = S / s
        A = S.sqrt()[:, None] * V.T  # (r, in)
        B = U * S.sqrt()[None, :]  # (out, r)
    else:
        Q, R = torch.linalg.qr(W)  # (out, k), (k, in)
        A, B = R[:r], Q[:, :r]
    layer.lora_A.copy_(A)
    layer.lora_B.copy_(B)
    w.copy_((W - s * (B @ A)).to(w.dtype))
    layer.register_buffer("lora_A0", A.to(layer.lora_A.dtype).clone(), persistent=False)
    layer.register_buffer("lora_B0", B.to(layer.lora_B.dtype).clone(), persistent=False)


# -- DoRA ------------------------------------------------------------------------------------
def row_norm(layer, delta: torch.Tensor) -> torch.Tensor:
    """‖W0 + ΔW‖ per output row (out,), fp32; `delta` (out x in) must be fp32."""
    return torch.linalg.norm(base_weight(layer).to(delta.dtype) + delta, dim=1)


def dora_forward(layer, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """result + (g - 1)·W0 x' + g·s·B A x' with g = m / ‖W0 + sBA‖_c (detached), x' = dropout(x).
    Without dropout W0 x' is the base result minus its bias, so the base GEMM runs once."""
    A, B, s = layer.lora_A, layer.lora_B, layer.scaling
    W = base_weight(layer)
    xa = x
    if layer.dropout is not None and layer.training:
        xa = layer.dropout(x)
    if xa.dtype != A.dtype and not torch.is_autocast_enabled(x.device.type):
        xa = xa.to(A.dtype)
    with torch.no_grad():
        norm = torch.linalg.norm(W.to(A.dtype) + s * (B @ A), dim=1)  # (out,), no gradient (paper §4.3)
    g = layer.lora_magnitude_vector / norm  # (out,)
    lora = F.linear(F.linear(xa, A), B) * s  # (..., out)
    if xa is x:
        bias = layer.base_layer.bias
        base = result if bias is None else result - bias
    else:
        base = F.linear(xa, W.to(xa.dtype))
    return result + ((g - 1) * base + g * lora).to(result.dtype)


@torch.no_grad()
def dora_apply(layer, sign: int):
    """Merge: W0 <- g·(W0 + sBA), g from the unmerged W0 (kept for unmerge); unmerge reverses it."""
    w = layer.base_layer.weight
    delta = layer.delta_weight(torch.float32)  # (out, in)
    if sign > 0:
        g = layer.lora_magnitude_vector.float() / row_norm(layer, delta)
        layer._dora_g = g
        new = g[:, None] * (base_weight(layer).float() + delta)
    else:
        g = layer._dora_g
        new = base_weight(layer).float() / g[:, None] - delta
        del layer._dora_g
    w.copy_((new.T if layer.conv1d else new).to(w.dtype))


def effective_delta(layer) -> torch.Tensor:
    """What the layer adds to W0 (out x in, fp32): s·B A, or for DoRA g·(W0 + sBA) - W0."""
    delta = layer.delta_weight(torch.float32)
    if not getattr(layer, "use_dora", False):
        return delta
    W0 = base_weight(layer).float()
    if layer.merged:
        W0 = W0 / layer._dora_g[:, None] - delta
    g = layer.lora_magnitude_vector.float() / row_norm_of(W0, delta)
    return g[:, None] * (W0 + delta) - W0


def row_norm_of(W0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return torch.linalg.norm(W0 + delta, dim=1)


# -- saving PiSSA/OLoRA against the original base -------------------------------------------
def converted(layer) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(A' (2r x in), B' (out x 2r)) for a PiSSA/OLoRA layer: the plain LoRA on the original W0."""
    if getattr(layer, "lora_A0", None) is None:
        return None
    A = torch.cat([layer.lora_A.detach(), layer.lora_A0], 0)
    B = torch.cat([layer.lora_B.detach(), -layer.lora_B0], 1)
    return A, B


def converted_alpha(alpha: float, rslora: bool) -> float:
    """alpha' of rank 2r keeping s: alpha/r = 2alpha/2r; rsLoRA alpha/√r = √2·alpha/√(2r)."""
    return alpha * (math.sqrt(2) if rslora else 2)


# -- LoRA+ -----------------------------------------------------------------------------------
def optimizer_groups(model: nn.Module, lr: float, ratio: float) -> list[dict]:
    """One group at `lr` (A, DoRA magnitudes, heads), one at ratio·lr (every B). ratio 1: one group."""
    params = [p for p in model.parameters() if p.requires_grad]
    if ratio == 1:
        return [{"params": params, "lr": lr}]
    bs = {id(p) for n, p in model.named_parameters() if p.requires_grad and n.endswith("lora_B")}
    return [{"params": [p for p in params if id(p) not in bs], "lr": lr},
            {"params": [p for p in params if id(p) in bs], "lr": lr * ratio}]
