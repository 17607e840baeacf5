"""The LoRA layer: h = W0 x + s * B A x, for nn.Linear, GPT-2 Conv1D and fused projections.

One class covers all three kinds. `lora_A` (R x in) holds the A of every adapted slice stacked
(the slices share the input, so one GEMM computes them all); `lora_B` holds each slice's B stacked
by rows. For a plain matrix there is one slice covering all rows and `lora_B` is simply B
(out x r). For a fused matrix, the block-structured B_full (out x R, zeros off the slices) is
built from `lora_B` by a scatter: the forward is then two GEMMs whatever the number of slices,
and B_full is exactly the matrix a PEFT adapter of rank R on the fused module holds.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lora_studio.core.spec import LoraSpec  # noqa: F401 - the public `from lora_studio.engine.lora import LoraSpec`
from lora_studio.engine import variants
from lora_studio.engine.errors import UserError
from lora_studio.engine.targets import Site, resolve

HALF = (torch.float16, torch.bfloat16)


def b_positions(slices, r: int) -> list[int]:
    """Flat positions of a fused layer's lora_B entries inside B_full (out x n*r): row rows_i[j],
    columns i*r … i*r + r - 1 for slice i."""
    n = len(slices)
    return [row * n * r + i * r + c for i, (_, rw) in enumerate(slices) for row in rw for c in range(r)]


class LoraLayer(nn.Module):
    """A frozen base Linear/Conv1D plus a trainable low-rank update on all or some of its rows."""

    variant = None
    reference = None  # (A, B[, magnitude]) this layer computes with instead, while set (DPO's reference)  # variants.Variant (e.g. DoRA, which adds `lora_magnitude_vector` (out,)); None: plain
    init_method = "kaiming"  # set by inits.init

    def __init__(self, base: nn.Module, site: Site, r: int, alpha: float, scaling: float,
                 dropout: float = 0.0, dtype: torch.dtype | None = None):
        super().__init__()
        self.base_layer = base
        self.conv1d = site.conv1d  # GPT-2 Conv1D: weight is (in, out), PEFT's fan_in_fan_out
        self.in_features, self.out_features = site.in_features, site.out_features
        self.r, self.alpha, self.scaling = r, alpha, scaling
        self.slices = site.slices  # None, or [(logical, rows)]
        self.merged = False
        self.disabled = False
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        w = base.weight
        # a quantized base (bitsandbytes) has integer weights: its adapters are fp32, as for half bases
        self.quantized = not w.dtype.is_floating_point
        dtype = dtype or (torch.float32 if w.dtype in HALF or self.quantized else w.dtype)
        n = 1 if self.slices is None else len(self.slices)
        rows = self.out_features if self.slices is None else sum(len(rw) for _, rw in self.slices)
        self.lora_A = nn.Parameter(torch.empty(n * r, self.in_features, device=w.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(rows, r, device=w.device, dtype=dtype))
        if self.slices is not None:
            self.register_buffer("b_index", torch.tensor(b_positions(self.slices, r), device=w.device), persistent=False)
            self.register_buffer("row_index", torch.tensor([row for _, rw in self.slices for row in rw],
                                                           device=w.device), persistent=False)
        if w.device.type != "meta":
            # As loralib/PEFT: A Kaiming-uniform, B zero, so the adapted model starts at the base.
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @property
    def use_dora(self) -> bool:
        return self.variant is not None and self.variant.name == "dora"

    def base_weight(self) -> torch.Tensor:
        """W0 of the frozen base as (out x in), a view in its own dtype (Conv1D stores in x out)."""
        w = self.base_layer.weight
        if not w.dtype.is_floating_point or w.dim() != 2 or getattr(w, "quant_state", None) is not None:
            raise UserError(f"{self.extra_repr()}: DoRA/PiSSA/OLoRA need a float base weight; "
                            "turn off --quantize for this run")
        return w.T if self.conv1d else w

    @property
    def total_rank(self) -> int:
        return self.lora_A.shape[0]

    def b_full(self) -> torch.Tensor:
        """B as one matrix (out x R): B itself for a plain layer, block-structured for a fused one."""
        if self.slices is None:
            return self.lora_B
        full = self.lora_B.new_zeros(self.out_features * self.total_rank)
        return full.scatter(0, self.b_index, self.lora_B.reshape(-1)).view(self.out_features, -1)

    def delta_weight(self, dtype=torch.float32) -> torch.Tensor:
        """s * B A (out x in), computed in `dtype` (fp32 by default, whatever the base dtype)."""
        return (self.b_full().to(dtype) @ self.lora_A.to(dtype)) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference is not None and not (self.merged or self.disabled):
            return self._forward_with(self.reference, x)
        result = self.base_layer(x)
        if self.merged or self.disabled:
            return result
        if self.variant is not None:
            return self.variant.forward(self, x, result)
        a = self.lora_A
        xa = x if self.dropout is None else self.dropout(x)
        if xa.dtype != a.dtype and not torch.is_autocast_enabled(x.device.type):
            xa = xa.to(a.dtype)
        z = F.linear(xa, a) * self.scaling  # (..., R): scale the small tensor, not the output
        delta = F.linear(z, self.b_full())  # (..., out)
        return result + delta.to(result.dtype)

    def _forward_with(self, tensors: tuple, x: torch.Tensor) -> torch.Tensor:
        """The forward with other adapter tensors in place of this layer's (no grad). They are
        swapped in for the call only: under FSDP2 the parameters are whole here, between the
        unshard before the block's forward and the reshard after it, so one swap works for one
        process, DDP and FSDP2 alike."""
        if torch.is_grad_enabled():
            raise RuntimeError("a reference adapter computes under torch.no_grad() only")
        params = [self.lora_A, self.lora_B] + ([self.lora_magnitude_vector] if self.use_dora else [])
        kept = [p.data for p in params]
        for p, t in zip(params, tensors):
            p.data = t.to(device=p.device, dtype=p.dtype)
        self.reference = None
        try:
            return self.forward(x)
        finally:
            self.reference = tensors
            for p, k in zip(params, kept):
                p.data = k

    @torch.no_grad()
    def merge(self):
        if self.merged:
            return
        with torch.autocast(self.base_layer.weight.device.type, enabled=False):  # fp32 even inside autocast
            self._apply_delta(+1)
        self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if not self.merged:
            return
        with torch.autocast(self.base_layer.weight.device.type, enabled=False):
            self._apply_delta(-1)
        self.merged = False

    def _apply_delta(self, sign: int):
        if self.quantized:  # bnb would dequantize, add and re-quantize: the update is mostly lost
            raise UserError("cannot merge into a 4-/8-bit base (it would be re-quantized); merge into the "
                            "full-precision base instead: lora-studio merge RUN_DIR --out DIR")
        if self.variant is not None:
            return self.variant.apply_delta(self, sign)
        w = self.base_layer.weight
        delta = self.delta_weight(torch.float32) * sign  # (out, in) in fp32
        if self.slices is not None:  # touch only adapted rows: the others stay bit-identical
            rows = self.row_index
            if self.conv1d:
                w[:, rows] = (w[:, rows].float() + delta[rows].T).to(w.dtype)
            else:
                w[rows] = (w[rows].float() + delta[rows]).to(w.dtype)
        elif self.conv1d:
            w.copy_((w.float() + delta.T).to(w.dtype))
        else:
            w.copy_((w.float() + delta).to(w.dtype))

    def extra_repr(self) -> str:
        parts = f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:.4g}"
        if self.slices:
            parts += ", slices=" + "+".join(t for t, _ in self.slices)
        if self.variant is not None:
            parts += f", {self.variant.name}"
        if self.init_method != "kaiming":
            parts += f", init={self.init_method}"
        return parts


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Adapted modules by name (the name of the module they replaced)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def _set_module(model: nn.Module, name: str, new: nn.Module):
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def check_rank(site: Site, r: int):
    rows = min(len(rw) for _, rw in site.slices) if site.slices else site.out_features
    limit = min(site.in_features, rows)
    if r > limit:
        raise UserError(f"rank {r} is larger than {site.name} allows (min(in, out) = {limit}); "
                        f"choose a rank of at most {limit}")


def plan(model: nn.Module, spec: LoraSpec) -> list[Site]:
    """The sites `inject` would adapt, validated, without changing the model."""
    sites = resolve(model, spec.targets, spec.layers)
    for s in sites:
        check_rank(s, spec.rank_of(s.name)[0])
    variants.check(sites, spec)
    return sites


def inject(model: nn.Module, spec: LoraSpec, sites: list[Site] | None = None, principal: dict | None = None) -> list[str]:
    """Adapt `model` in place: freeze every base parameter, wrap each selected module in a
    LoraLayer, unfreeze `spec.modules_to_save`. Returns the adapted module names. `principal`:
    name -> (A0, B0) a checkpoint kept for a PiSSA/OLoRA run (inits.read_principal)."""
    if lora_layers(model):
        raise UserError("this model already has LoRA adapters; load a fresh base model")
    sites = sites if sites is not None else plan(model, spec)
    variants.check(sites, spec)
    for p in model.parameters():
        p.requires_grad_(False)
    for s in sites:
        r, alpha = spec.rank_of(s.name)
        layer = LoraLayer(s.module, s, r, alpha, spec.scaling(r, alpha), spec.dropout)
        if spec.dora or spec.init != "kaiming":
            variants.prepare(layer, spec, (principal or {}).get(s.name))
        _set_module(model, s.name, layer)
    saved = []
    for name, module in model.named_modules():
        # PEFT's rule: a module is saved when its name ends with an entry (so "classifier"
        # also takes DistilBERT's pre_classifier): files then load the same in PEFT.
        if name and any(name.endswith(k) for k in spec.modules_to_save):
            module.requires_grad_(True)
            _train_in_fp32(module)
            saved.append(name)
    model.lora_studio_spec = spec
    model.lora_studio_saved = saved
    return [s.name for s in sites]


def _train_in_fp32(module: nn.Module):
    """A head trained in full keeps fp32 weights on a half-precision base: GradScaler cannot unscale
    fp16 gradients, and bf16 weights lose small updates (most stay unchanged at a low lr)."""
    if not any(p.dtype in HALF for p in module.parameters()):
        return
    module.float()

    def to_fp32(mod, args):
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    module.register_forward_pre_hook(to_fp32)


def merge(model: nn.Module):
    """W0 += s * B A in every adapted module (delta computed in fp32)."""
    for m in lora_layers(model).values():
        m.merge()


def unmerge(model: nn.Module):
    """Undo `merge` (exact up to the rounding of the base dtype)."""
    for m in lora_layers(model).values():
        m.unmerge()


def unload(model: nn.Module, merge_first: bool = True) -> nn.Module:
    """Replace every LoraLayer by its base module (merged first by default): a plain HF model."""
    for name, m in lora_layers(model).items():
        if merge_first:
            m.merge()
        _set_module(model, name, m.base_layer)
    for attr in ("lora_studio_spec", "lora_studio_saved"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """Run the base model: every unmerged adapter is bypassed inside the block."""
    layers = [m for m in lora_layers(model).values() if not m.merged]
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m in layers:
            m.disabled = False


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
