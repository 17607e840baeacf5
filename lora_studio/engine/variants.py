"""LoRA variants, PEFT-style: a layer carries `variant` (None for the plain paper) and calls it
for its forward and its merge; a variant is one class here plus one `LoraSpec`/config field.

- DoRA (Liu et al. 2024, arXiv 2402.09353): W = m · (W0 + sBA) / ‖W0 + sBA‖_c, where ‖·‖_c is the
  norm of each output row of the (out x in) matrix (a column of the paper's d x k layout) and m
  (out,) is trained. As in the paper §4.3 and PEFT, the norm is detached: it scales the output but
  gets no gradient. m is saved as `<module>.lora_magnitude_vector.weight`. Its formula lives in
  `dora_weight` only (spectra and the merge use it; export's check stays an independent oracle).

Inits (kaiming, gaussian, PiSSA, OLoRA) are engine/inits.py; LoRA+ is an optimizer policy
(engine/optim.py). Everything stays PEFT 0.21-compatible on disk.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_studio.core.names import PRINCIPAL_INITS, check_init
from lora_studio.engine.errors import UserError


def row_norm(W0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """‖W0 + ΔW‖ per output row (out,), both (out x in)."""
    return torch.linalg.norm(W0 + delta, dim=1)


def dora_weight(W0: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA's adapted weight m · (W0 + ΔW) / ‖W0 + ΔW‖_c (out x in), in the inputs' dtype."""
    return (magnitude / row_norm(W0, delta))[:, None] * (W0 + delta)


class Variant:
    """What a variant changes in a `LoraLayer` (PEFT's `LoraVariant`): subclass and override."""

    name = "lora"

    def prepare(self, layer) -> None:
        """Add the variant's parameters to a freshly built layer (after its init)."""

    def forward(self, layer, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def apply_delta(self, layer, sign: int) -> None:
        """Merge (+1) the adapter into the base weight, or unmerge (-1)."""
        raise NotImplementedError

    def base_of_merged(self, layer, W: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """W0 (out x in) from the merged weight W and the layer's ΔW = s·B A (plain LoRA: W - ΔW)."""
        return W - delta


class Dora(Variant):
    name = "dora"

    def prepare(self, layer):
        with torch.no_grad():
            norm = row_norm(layer.base_weight().float(), layer.delta_weight(torch.float32))
        layer.lora_magnitude_vector = nn.Parameter(norm.to(layer.lora_A.dtype))

    def forward(self, layer, x, result):
        """result + (g - 1)·W0 x' + g·s·B A x' with g = m / ‖W0 + sBA‖_c (detached), x' = dropout(x).
        Without dropout W0 x' is the base result minus its bias, so the base GEMM runs once."""
        A, B, s = layer.lora_A, layer.lora_B, layer.scaling
        W = layer.base_weight()
        xa = x
        if layer.dropout is not None and layer.training:
            xa = layer.dropout(x)
        if xa.dtype != A.dtype and not torch.is_autocast_enabled(x.device.type):
            xa = xa.to(A.dtype)
        with torch.no_grad():
            norm = row_norm(W.to(A.dtype), s * (B @ A))  # (out,), no gradient (paper §4.3)
        g = layer.lora_magnitude_vector / norm  # (out,)
        lora = F.linear(F.linear(xa, A), B) * s  # (..., out)
        if xa is x:
            bias = layer.base_layer.bias
            base = result if bias is None else result - bias
        else:
            base = F.linear(xa, W.to(xa.dtype))
        return result + ((g - 1) * base + g * lora).to(result.dtype)

    @torch.no_grad()
    def apply_delta(self, layer, sign):
        """Merge: W0 <- m·(W0 + sBA)/‖·‖_c, its row gain kept for unmerge; unmerge reverses it."""
        w = layer.base_layer.weight
        delta = layer.delta_weight(torch.float32)  # (out, in)
        W0 = layer.base_weight().float()
        if sign > 0:
            new = dora_weight(W0, delta, layer.lora_magnitude_vector.float())
            layer._dora_g = layer.lora_magnitude_vector.float() / row_norm(W0, delta)
        else:
            new = self.base_of_merged(layer, W0, delta)
            del layer._dora_g
        w.copy_((new.T if layer.conv1d else new).to(w.dtype))

    def base_of_merged(self, layer, W: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """W0 from a merged weight W (out x in): W / g - ΔW, with the gain kept at merge."""
        return W / layer._dora_g.to(W.device, W.dtype)[:, None] - delta


VARIANTS: dict[str, type[Variant]] = {"dora": Dora}  # LoraSpec field -> the variant it turns on


def variant_of(spec) -> Variant | None:
    """The variant a LoraSpec asks for (at most one)."""
    on = [cls() for field, cls in VARIANTS.items() if getattr(spec, field, False)]
    return on[0] if on else None


def check(sites, spec):
    """Refuse, before the model is touched, what cannot be kept exact on disk."""
    check_init(spec.init, spec.dora)
    fused = [s.name for s in sites if s.slices]
    if fused and (spec.dora or spec.init in PRINCIPAL_INITS):
        what = "DoRA" if spec.dora else spec.init
        raise UserError(f"{what} cannot adapt part of a fused projection ({fused[0]} holds several); "
                        f"in PEFT format its math would change. Target the whole module by name "
                        f"(e.g. --targets '{fused[0].rsplit('.', 1)[-1]}') or use plain LoRA")


def prepare(layer, spec, given=None):
    """Apply `spec.init` (with a checkpoint's principal factors, `given`) and the spec's variant to
    a freshly built (plain, unfused) layer."""
    from lora_studio.engine.inits import init

    init(layer, spec.init, given)
    layer.variant = variant_of(spec)
    if layer.variant is not None:
        layer.variant.prepare(layer)
