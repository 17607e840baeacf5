"""Model families: everything LoRA Studio knows about one `model_type`, in one table.

A `Family` says which modules hold the logical projections (and how fused matrices split into
them), whether its logits are a plain `lm_head` of the last hidden state (so the fused loss of
engine/loss.py applies), what llama.cpp calls it (adapter-only GGUF) and whether its q/k rows
are permuted there, whether it is an encoder (classification by default), and how long an input
its positions allow. A model type not in `FAMILIES` gets `Family()`: generic leaf names, the
plain HF loss, no adapter-only GGUF, the config's own position limit.

Adding a model family is one entry here (see docs/architecture.md, "Add a model family").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


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


def _falcon_qkv(config, out_features):
    """Falcon's query_key_value, by its config: new_decoder_architecture groups each kv head's
    queries with its key and value ([q.. k v] per group); multi_query is [all q | k | v]; the
    original layout interleaves per head like GPT-NeoX."""
    heads = config.num_attention_heads
    hd = config.hidden_size // heads
    if getattr(config, "new_decoder_architecture", False):
        groups = config.num_kv_heads
        per = heads // groups
        out = {"q": [], "k": [], "v": []}
        for g in range(groups):
            base = g * (per + 2) * hd
            out["q"].extend(range(base, base + per * hd))
            out["k"].extend(range(base + per * hd, base + (per + 1) * hd))
            out["v"].extend(range(base + (per + 1) * hd, base + (per + 2) * hd))
        return out
    if getattr(config, "multi_query", False):
        q = heads * hd
        return {"q": list(range(q)), "k": list(range(q, q + hd)), "v": list(range(q + hd, q + 2 * hd))}
    return _heads_interleaved(config, out_features)


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
_FALCON_QKV = Fused(r"self_attention\.query_key_value", _falcon_qkv)
_PHI = {"q": r"self_attn\.q_proj", "k": r"self_attn\.k_proj", "v": r"self_attn\.v_proj",
        "o": r"self_attn\.dense", "up": r"mlp\.fc1", "down": r"mlp\.fc2"}
_DISTILBERT = {"q": r"attention\.q_lin", "k": r"attention\.k_lin", "v": r"attention\.v_lin",
               "o": r"attention\.out_lin", "up": r"ffn\.lin1", "down": r"ffn\.lin2"}


@dataclass(frozen=True)
class Family:
    """One model type. Defaults: an unknown decoder (generic projections, HF's own loss)."""

    projections: dict[str, str | Fused] | None = None  # logical target -> module-tail regex or Fused
    plain_head: bool = False  # logits = lm_head(last_hidden_state), nothing else: the fused loss applies
    gguf: tuple[str, bool] | None = None  # (llama.cpp architecture, q/k rows permuted by its converter)
    encoder: bool = False  # an encoder: its task is classification unless the config says otherwise
    positions: str = "config"  # "config": n_positions/max_position_embeddings (unless rotary);
    #                            "unbounded": ALiBi/rotary, no hard limit; "offset2": RoBERTa's padding offset


_LLAMA_LIKE = Family(_LLAMA)
FAMILIES: dict[str, Family] = {
    "llama": Family(_LLAMA, plain_head=True, gguf=("llama", True)),
    "mistral": Family(_LLAMA, plain_head=True, gguf=("llama", True)),
    "mixtral": Family(_LLAMA, gguf=("llama", True)),
    "qwen2": Family(_LLAMA, plain_head=True, gguf=("qwen2", False)),
    "qwen3": Family(_LLAMA, plain_head=True, gguf=("qwen3", False)),
    "gemma": Family(_LLAMA, plain_head=True, gguf=("gemma", False)),
    "gemma2": Family(_LLAMA, gguf=("gemma2", False)),
    **{t: _LLAMA_LIKE for t in ("gemma3_text", "granite", "cohere")},
    **{t: Family(_LLAMA, plain_head=True) for t in ("olmo", "olmo2", "smollm3")},
    "phi3": Family({"q": _PHI3_QKV, "k": _PHI3_QKV, "v": _PHI3_QKV, "o": r"self_attn\.o_proj",
                    "gate": _PHI3_GATE_UP, "up": _PHI3_GATE_UP, "down": r"mlp\.down_proj"},
                   plain_head=True, gguf=("phi3", False)),
    "phi": Family(_PHI, plain_head=True),
    "gpt2": Family({"q": _GPT2_QKV, "k": _GPT2_QKV, "v": _GPT2_QKV, "o": r"attn\.c_proj",
                    "up": r"mlp\.c_fc", "down": r"mlp\.c_proj"}, plain_head=True, gguf=("gpt2", False)),
    "gpt_neox": Family({"q": _NEOX_QKV, "k": _NEOX_QKV, "v": _NEOX_QKV, "o": r"attention\.dense",
                        "up": r"mlp\.dense_h_to_4h", "down": r"mlp\.dense_4h_to_h"}, plain_head=True),
    "bloom": Family({"q": _BLOOM_QKV, "k": _BLOOM_QKV, "v": _BLOOM_QKV, "o": r"self_attention\.dense",
                     "up": r"mlp\.dense_h_to_4h", "down": r"mlp\.dense_4h_to_h"}, plain_head=True,
                    positions="unbounded"),
    "falcon": Family({"q": _FALCON_QKV, "k": _FALCON_QKV, "v": _FALCON_QKV, "o": r"self_attention\.dense",
                      "up": r"mlp\.dense_h_to_4h", "down": r"mlp\.dense_4h_to_h"}, plain_head=True,
                     positions="unbounded"),
    "mpt": Family(positions="unbounded"),
    "opt": Family({"q": r"self_attn\.q_proj", "k": r"self_attn\.k_proj", "v": r"self_attn\.v_proj",
                   "o": r"self_attn\.out_proj", "up": r"fc1", "down": r"fc2"}, plain_head=True),
    "bert": Family(_BERT, encoder=True),
    "electra": Family(_BERT, encoder=True),
    "roberta": Family(_BERT, encoder=True, positions="offset2"),
    "xlm-roberta": Family(_BERT, encoder=True, positions="offset2"),
    "camembert": Family(positions="offset2"),
    "distilbert": Family(_DISTILBERT, encoder=True),
    "deberta": Family(encoder=True),
    "deberta-v2": Family(encoder=True),
}

# For an architecture not in the table: the usual leaf names of each projection.
GENERIC = {
    "q": r"(q_proj|query|q_lin|wq|to_q)", "k": r"(k_proj|key|k_lin|wk|to_k)",
    "v": r"(v_proj|value|v_lin|wv|to_v)",
    "o": r"(o_proj|out_proj|out_lin|wo|to_out|attention\.output\.dense|attention\.dense)",
    "gate": r"(gate_proj|w1)", "up": r"(up_proj|fc1|c_fc|w3|intermediate\.dense|lin1)",
    "down": r"(down_proj|fc2|w2|lin2)",
}
# for display only (the Spectra tab names a module it cannot place): GPT-2's c_proj reads as "o"
GENERIC_DISPLAY = {**GENERIC, "o": GENERIC["o"][:-1] + "|c_proj)"}


def family_of(config) -> Family:
    """The family of a (text) config; `Family()` for a model type not in the table."""
    return FAMILIES.get(getattr(config, "model_type", None) or "", Family())


def position_limit(config) -> int | None:
    """The longest input a model with learned absolute positions can take (None: no hard limit)."""
    fam = family_of(config)
    if getattr(config, "rope_theta", None) is not None or getattr(config, "rope_scaling", None) or \
            getattr(config, "rope_parameters", None) or fam.positions == "unbounded":
        return None  # rotary or ALiBi: longer inputs run (quality may drop)
    n = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not n:
        return None
    return int(n) - (2 if fam.positions == "offset2" else 0)  # RoBERTa: positions start after the padding index
