"""How A and B start (kaiming, gaussian, PiSSA, OLoRA), and the save-time conversion the
principal inits need. Not a layer variant: an init only chooses the starting point.

- Kaiming-uniform A, zero B (loralib, PEFT's default): `LoraLayer.__init__` does it.
- Gaussian: A ~ N(0, 1/r), B zero (PEFT's "gaussian").
- PiSSA (Meng et al. 2024): A, B from the top-r singular triplets of W0 (√σ on each side, σ / s so
  that s·B A is the rank-r part of W0); OLoRA (Büyükakyüz 2024): B, A = Q[:, :r], R[:r] of W0 = QR.
  The base becomes the residual W0 - s·B0 A0. Saved for users as a plain LoRA of rank 2r on the
  ORIGINAL W0: A' = [A; A0], B' = [B, -B0], alpha' keeping s (PEFT's conversion), because
  W0 + s·B' A' = (W0 - s·B0 A0) + s·B A.
- Checkpoints keep A0, B0 (`PRINCIPAL_FILE`, written by `principal_state`), and a resume or a load
  of the checkpoint builds the residual from them (`read_principal` -> `inject(principal=...)`)
  instead of running the SVD again: the randomised SVD draws from the device's random stream, so
  on another device (CUDA vs CPU, GPU review N19) it gave another residual, and the resumed A, B
  trained against a base they were not trained on.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from lora_studio.core.names import PRINCIPAL_INITS

PRINCIPAL_FILE = "principal.safetensors"  # a checkpoint's A0, B0 per PiSSA/OLoRA layer
PISSA_NITER = 4  # subspace iterations of torch.svd_lowrank (PEFT's `pissa_niter_4`)
EXACT_SVD_BELOW = 1024  # min(out, in) under which the exact SVD is cheap enough (and exact)


def init(layer, method: str, given: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Start a freshly built (plain, unfused) layer as `method` says (kaiming: as built). `given`:
    a principal init's (A0, B0) as a checkpoint kept them."""
    layer.init_method = method
    if method == "gaussian":
        with torch.no_grad():
            nn.init.normal_(layer.lora_A, std=1 / layer.r)  # PEFT's "gaussian"; B stays zero
    elif method in PRINCIPAL_INITS:
        init_principal(layer, method, given)


@torch.no_grad()
def init_principal(layer, method: str, given: tuple[torch.Tensor, torch.Tensor] | None = None):
    """PiSSA or OLoRA: A, B from W0 (or `given`), base <- W0 - s·B A. Keeps A0, B0 (the saved
    conversion and checkpoints need them)."""
    w = layer.base_weight()
    W = w.to(torch.float32)
    r, s = layer.r, layer.scaling
    if given is not None:
        A, B = (t.to(device=W.device, dtype=torch.float32) for t in given)
        if A.shape != layer.lora_A.shape or B.shape != layer.lora_B.shape:
            raise ValueError(f"the kept {method} factors are {tuple(B.shape)} x {tuple(A.shape)}, the layer's "
                             f"{tuple(layer.lora_B.shape)} x {tuple(layer.lora_A.shape)}")
    elif method == "pissa":
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


def principal_state(layers: dict) -> dict[str, torch.Tensor]:
    """{name.lora_A0, name.lora_B0} of each PiSSA/OLoRA layer in `layers` (name -> LoraLayer)."""
    out = {}
    for name, m in layers.items():
        if getattr(m, "lora_A0", None) is not None:
            out[f"{name}.lora_A0"] = m.lora_A0.detach().cpu().contiguous()
            out[f"{name}.lora_B0"] = m.lora_B0.detach().cpu().contiguous()
    return out


def read_principal(folder) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """name -> (A0, B0) from a checkpoint folder's PRINCIPAL_FILE; None when it has none (a plain
    LoRA, or a checkpoint written before they were kept: the SVD then runs again, seeded)."""
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(folder) / PRINCIPAL_FILE
    if not path.is_file():
        return None
    t = load_file(str(path))
    return {k[: -len(".lora_A0")]: (v, t[k[: -len(".lora_A0")] + ".lora_B0"]) for k, v in t.items()
            if k.endswith(".lora_A0")}


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
