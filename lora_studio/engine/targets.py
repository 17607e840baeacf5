"""Which modules a LoRA spec adapts: logical projections (q k v o gate up down) -> sites.

Each model family's projection rules live in engine/families.py. A logical target is matched
against module names by a regex on the name's tail; in a fused matrix (GPT-2 `c_attn`,
GPT-NeoX/Bloom/Falcon `query_key_value`, Phi-3 `qkv_proj`/`gate_up_proj`) it is a set of output
rows of that matrix, given by a function of the config.

A target that is not one of the logical names is taken as a regex on module names, as PEFT's
`target_modules` is (e.g. "c_fc" or r"mlp\\.fc\\d").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch.nn as nn

from lora_studio.core.names import ATTENTION, LOGICAL, MLP, format_layers, parse_layers  # noqa: F401
from lora_studio.engine.errors import UserError
from lora_studio.engine.families import FAMILIES, GENERIC as _GENERIC, Fused, family_of  # noqa: F401

# model_type -> logical target -> module rule, for the families that name their projections
ARCHITECTURES: dict[str, dict] = {t: f.projections for t, f in FAMILIES.items() if f.projections}


@dataclass
class Site:
    """One module to adapt. `slices` is None for a whole matrix, else [(logical, rows)] for the
    ticked parts of a fused matrix (rows: output-row indices)."""

    name: str
    module: nn.Module = field(repr=False)
    layer: int | None
    targets: tuple[str, ...]
    in_features: int
    out_features: int
    conv1d: bool
    slices: list[tuple[str, list[int]]] | None = None


def text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if get else config


def layer_index(name: str) -> int | None:
    m = re.search(r"\.(\d+)(\.|$)", name)
    return int(m.group(1)) if m else None


def is_adaptable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def shape_of(module: nn.Module) -> tuple[int, int, bool]:
    """(in_features, out_features, is_conv1d) of a Linear or GPT-2 Conv1D (weight stored in x out).
    bitsandbytes Linear4bit/Linear8bitLt are nn.Linear subclasses: their shapes come from the
    attributes (a 4-bit weight is packed uint8, n/2 x 1). One that transformers made from a Conv1D
    stores out x in, but the model's checkpoint layout (and PEFT's fan_in_fan_out) stays Conv1D."""
    if isinstance(module, nn.Linear):
        from_conv1d = getattr(getattr(module, "source_cls", None), "__name__", "") == "Conv1D"
        return module.in_features, module.out_features, from_conv1d
    w = module.weight
    return w.shape[0], w.shape[1], True


def table_for(config) -> dict[str, str | Fused] | None:
    return family_of(text_config(config)).projections


def available_targets(model: nn.Module) -> list[str]:
    """The logical targets this model has (for the GUI's columns)."""
    return [t for t in LOGICAL if _match(model, t, table_for(model.config) or _GENERIC)]


def _tail(pattern: str) -> re.Pattern:
    return re.compile(rf"(^|\.)({pattern})$")


def _match(model, target, table):
    rule = table.get(target, target)
    pattern = _tail(rule.pattern if isinstance(rule, Fused) else rule)
    return [(n, m) for n, m in model.named_modules() if is_adaptable(m) and pattern.search(n)]


def resolve(model: nn.Module, targets: list[str], layers: list[int] | None = None) -> list[Site]:
    """The sites that `targets` (logical or regex) and `layers` select in `model`, in module order."""
    if not targets:
        raise UserError("no targets given: tick at least one projection (e.g. --targets q,v)")
    config = text_config(model.config)
    table = table_for(config) or _GENERIC
    by_name: dict[str, Site] = {}
    for target in targets:
        rule = table.get(target, target)
        try:
            hits = _match(model, target, table)
        except re.error as e:
            raise UserError(f"target {target!r} is neither a projection ({', '.join(LOGICAL)}) "
                            f"nor a valid module-name regex: {e}") from None
        if not hits:
            have = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if is_adaptable(m)})
            mt = getattr(config, "model_type", "?")
            raise UserError(f"target {target!r} matches no module of this {mt} model; it has "
                            f"{', '.join(available_targets(model)) or 'no known projections'} "
                            f"(linear layers: {', '.join(have) or 'none'}); pass one of those")
        for name, module in hits:
            idx = layer_index(name)
            if layers is not None and idx not in layers:
                continue
            in_f, out_f, conv = shape_of(module)
            site = by_name.setdefault(name, Site(name, module, idx, (), in_f, out_f, conv))
            site.targets = site.targets + (target,)
            if isinstance(rule, Fused):
                rows = rule.rows(config, out_f)[target]
                site.slices = (site.slices or []) + [(target, rows)]
    if not by_name:
        raise UserError(f"layers {layers} select nothing: this model has "
                        f"{getattr(config, 'num_hidden_layers', '?')} layers (numbered from 0)")
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    sites = sorted(by_name.values(), key=lambda s: order[s.name])
    for s in sites:  # keep slices in row order of the fused matrix (q before k before v)
        if s.slices:
            s.slices.sort(key=lambda sl: sl[1][0])
    return sites


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: the ModuleList holding the most parameters (FSDP2's units, the planner's
    largest gathered block)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        return []
    best = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
    return list(best)
