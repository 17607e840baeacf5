"""Architecture table: logical projections (q k v o gate up down) -> the modules that hold them.

A logical target is matched against module names by a regex on the name's tail. Most
architectures keep each projection in its own Linear. Some fuse several into one matrix
(GPT-2 `c_attn`, GPT-NeoX/Bloom `query_key_value`, Phi-3 `qkv_proj`/`gate_up_proj`); there a
logical target is a set of output rows of that matrix, given by a function of the config.

A target that is not one of the logical names is taken as a regex on module names, as PEFT's
`target_modules` is (e.g. "c_fc" or r"mlp\\.fc\\d").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from lora_studio.engine.errors import UserError
from lora_studio.engine.layers import ATTENTION, LOGICAL, MLP, format_layers, parse_layers  # noqa: F401


@dataclass(frozen=True)
class Fused:
    """A fused projection: `pattern` names the module, `rows(config, out_features)` gives, per
    logical target it holds, the output rows (as a list of ints) that belong to that target."""

    pattern: str
    rows: Callable[[object, int], dict[str, list[int]]]


def _split_even(names: tuple[str, ...]):
    def rows(config, out_features):
        n = out_features // len(names)
        return {name: list(range(i * n, (i + 1) * n)) for i, name in enumerate(names)}

    return rows


def _heads_interleaved(config, out_features):
    # GPT-NeoX / Bloom: output viewed as (heads, 3, head_dim) -> per head [q | k | v].
    heads = config.num_attention_heads
    hs = out_features // (3 * heads)
    out = {"q": [], "k": [], "v": []}
    for h in range(heads):
        for i, name in enumerate(("q", "k", "v")):
            start = h * 3 * hs + i * hs
            out[name].extend(range(start, start + hs))
    return out


def _phi3_qkv(config, out_features):
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    return {"q": list(range(0, q)), "k": list(range(q, q + kv)), "v": list(range(q + kv, q + 2 * kv))}


_LLAMA = {
    "q": r"self_attn\.q_proj", "k": r"self_attn\.k_proj", "v": r"self_attn\.v_proj",
    "o": r"self_attn\.o_proj", "gate": r"mlp\.gate_proj", "up": r"mlp\.up_proj",
    "down": r"mlp\.down_proj",
}
_BERT = {
    "q": r"attention\.self\.query", "k": r"attention\.self\.key", "v": r"attention\.self\.value",
    "o": r"attention\.output\.dense", "up": r"intermediate\.dense", "down": r"layer\.\d+\.output\.dense",
}
_GPT2_QKV = Fused(r"attn\.c_attn", _split_even(("q", "k", "v")))
_NEOX_QKV = Fused(r"attention\.query_key_value", _heads_interleaved)
_BLOOM_QKV = Fused(r"self_attention\.query_key_value", _heads_interleaved)
_PHI3_QKV = Fused(r"self_attn\.qkv_proj", _phi3_qkv)
_PHI3_GATE_UP = Fused(r"mlp\.gate_up_proj", _split_even(("gate", "up")))

ARCHITECTURES: dict[str, dict[str, str | Fused]] = {
    **{t: _LLAMA for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2",
                           "gemma3_text", "olmo", "olmo2", "granite", "smollm3", "cohere")},
    "phi3": {"q": _PHI3_QKV, "k": _PHI3_QKV, "v": _PHI3_QKV, "o": r"self_attn\.o_proj",
             "gate": _PHI3_GATE_UP, "up": _PHI3_GATE_UP, "down": r"mlp\.down_proj"},
    "phi": {"q": r"self_attn\.q_proj", "k": r"self_attn\.k_proj", "v": r"self_attn\.v_proj",
            "o": r"self_attn\.dense", "up": r"mlp\.fc1", "down": r"mlp\.fc2"},
    "gpt2": {"q": _GPT2_QKV, "k": _GPT2_QKV, "v": _GPT2_QKV, "o": r"attn\.c_proj",
             "up": r"mlp\.c_fc", "down": r"mlp\.c_proj"},
    "gpt_neox": {"q": _NEOX_QKV, "k": _NEOX_QKV, "v": _NEOX_QKV, "o": r"attention\.dense",
                 "up": r"mlp\.dense_h_to_4h", "down": r"mlp\.dense_4h_to_h"},
    "bloom": {"q": _BLOOM_QKV, "k": _BLOOM_QKV, "v": _BLOOM_QKV, "o": r"self_attention\.dense",
              "up": r"mlp\.dense_h_to_4h", "down": r"mlp\.dense_4h_to_h"},
    "opt": {"q": r"self_attn\.q_proj", "k": r"self_attn\.k_proj", "v": r"self_attn\.v_proj",
            "o": r"self_attn\.out_proj", "up": r"fc1", "down": r"fc2"},
    "bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "electra": _BERT,
    "distilbert": {"q": r"attention\.q_lin", "k": r"attention\.k_lin", "v": r"attention\.v_lin",
                   "o": r"attention\.out_lin", "up": r"ffn\.lin1", "down": r"ffn\.lin2"},
}

# For an architecture not in the table: the usual leaf names of each projection.
_GENERIC = {
    "q": r"(q_proj|query|q_lin|wq|to_q)", "k": r"(k_proj|key|k_lin|wk|to_k)",
    "v": r"(v_proj|value|v_lin|wv|to_v)",
    "o": r"(o_proj|out_proj|out_lin|wo|to_out|attention\.output\.dense|attention\.dense)",
    "gate": r"(gate_proj|w1)", "up": r"(up_proj|fc1|c_fc|w3|intermediate\.dense|lin1)",
    "down": r"(down_proj|fc2|w2|lin2)",
}


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
    return ARCHITECTURES.get(getattr(text_config(config), "model_type", None) or "")


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
