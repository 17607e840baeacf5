"""Exact parameter counts and memory estimates from the model config alone.

Everything here works on a model built on the meta device (models.skeleton): no weights are
loaded, so a 70B config is counted in a fraction of a second. The counts come from the same
`plan` that `inject` uses, and a test checks them against what inject creates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch.nn as nn

from lora_studio.core.units import human_bytes, human_count  # noqa: F401 - also imported from here
from lora_studio.engine.lora import LoraSpec, lora_layers, plan
from lora_studio.engine.targets import text_config

BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}


@dataclass
class ModuleBudget:
    name: str
    targets: list[str]
    shape: list[int]  # [out, in] of the base matrix
    rank: int  # r per slice
    params: int


@dataclass
class Memory:
    """Estimated training memory in bytes (model states; activations separately)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass
class Budget:
    trainable_params: int  # adapter + saved heads
    adapter_params: int
    head_params: int
    base_params: int
    total_params: int  # base + adapter (PEFT's "all params")
    trainable_percent: float
    adapter_file_bytes: int  # fp32 safetensors, header excluded
    modules: list[ModuleBudget] = field(default_factory=list)
    by_target: dict[str, int] = field(default_factory=dict)
    memory_lora: Memory | None = None
    memory_full: Memory | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("memory_lora", "memory_full"):
            if getattr(self, key) is not None:
                d[key]["total"] = getattr(self, key).total
        return d


def module_params(in_f: int, out_f: int, r: int, slices) -> int:
    """r * (in + out) for a whole matrix; per ticked slice of a fused one r * (in + rows)."""
    if slices is None:
        return r * (in_f + out_f)
    return sum(r * (in_f + len(rows)) for _, rows in slices)


def _head_params(model: nn.Module, names: list[str]) -> int:
    total = 0
    for name, module in model.named_modules():
        if name and any(name.endswith(k) for k in names):
            total += sum(p.numel() for p in module.parameters())
    return total


def activation_bytes(config, batch: int, seq: int, precision: str, checkpointing: bool,
                     targets=("q", "k", "v", "o"), attention: str = "flash") -> int:
    """Bytes autograd keeps for one micro-batch. Counted per token and layer from what each op saves
    for its backward (a frozen linear saves nothing: its dX needs only its weight):
      - the norms' inputs, upcast to fp32 by HF's RMSNorm/LayerNorm: 4 B x h each (2 per layer);
      - attention, `flash`: SDPA's flash and memory-efficient kernels (CUDA) save q, k, v, the output
        and a per-head logsumexp, never the s x s scores (FlashAttention-2, Dao 2023; torch's
        _scaled_dot_product_{flash,efficient}_attention backward signatures); `math` (the CPU
        kernels) also saves the scores and the softmax, Korthikanti et al. (2022)'s 5 a s term;
      - the MLP's nonlinearity: SwiGLU saves gate, up and silu(gate) (3 x ffn), GELU its input;
      - the inputs of the adapted linears (LoRA's A needs x for dA; q, k, v share theirs).
    16-bit tensors in bf16/fp16, twice that in fp32. Measured against this on a CPU with the project's
    training_loss (tests/engine/test_cuda_paths.py); the review's Llama-3.2-1B layer (bf16, LoRA on
    q,k,v,o) saved 39.2 B per token and hidden unit, and this counts 41.
    With checkpointing each layer keeps only its input (s b h), plus one layer recomputed."""
    tc = text_config(config)
    h = getattr(tc, "hidden_size", None) or getattr(tc, "n_embd", None) or getattr(tc, "dim", 0) or 1
    a = getattr(tc, "num_attention_heads", None) or getattr(tc, "n_head", None) or getattr(tc, "n_heads", 1)
    layers = getattr(tc, "num_hidden_layers", None) or getattr(tc, "n_layer", None) or getattr(tc, "n_layers", 1)
    head = getattr(tc, "head_dim", None) or h // max(a, 1)
    kv = (getattr(tc, "num_key_value_heads", None) or a) * head
    ffn = getattr(tc, "intermediate_size", None) or getattr(tc, "n_inner", None) or getattr(tc, "ffn_dim", None) \
        or getattr(tc, "hidden_dim", None) or 4 * h
    act = str(getattr(tc, "hidden_act", None) or getattr(tc, "activation_function", "") or "")
    gated = act in ("silu", "swish") or str(getattr(tc, "model_type", "")).startswith("gemma")
    half = BYTES.get(precision, 4)  # bytes of one activation element
    targets = set(targets or ())
    per_token = 2 * 4 * h  # two norm inputs in fp32
    per_token += half * (2 * a * head + 2 * kv) + 4 * a  # q, k, v, output; fp32 logsumexp per head
    if attention != "flash":
        per_token += 5 * a * seq * half / 2  # scores, softmax (and a dropout mask) per head and key
    per_token += half * ffn * (3 if gated else 1)
    adapted_inputs = (h if targets & {"q", "k", "v"} else 0) + (a * head if "o" in targets else 0) + \
        (h if targets & {"gate", "up"} else 0) + (ffn if "down" in targets else 0)
    per_token += half * adapted_inputs
    per_layer = seq * batch * per_token
    if checkpointing:
        return int(layers * seq * batch * h * half + per_layer)
    return int(layers * per_layer)


def base_weight_bytes(model: nn.Module, precision: str = "fp32", quantize: str = "none") -> int:
    """Bytes of the frozen base: every parameter at `precision`, except, with `quantize`, the
    linear weights bitsandbytes converts (quantize.quantizable), at their 4-/8-bit size."""
    wbytes = BYTES.get(precision, 4)
    total = sum(p.numel() for p in model.parameters()) * wbytes
    if quantize == "none":
        return total
    from lora_studio.engine.quantize import quantizable, quantized_weight_bytes

    for _, in_f, out_f in quantizable(model):
        total += quantized_weight_bytes(in_f * out_f, out_f, quantize) - in_f * out_f * wbytes
    return total


def estimate(model: nn.Module, spec: LoraSpec, precision: str = "fp32", batch: int = 8,
             seq: int = 512, checkpointing: bool = False, quantize: str = "none",
             optimizer: str = "adamw", device: str = "cuda") -> Budget:
    """The budget of adapting `model` (meta or real, not yet injected) with `spec`; `quantize`
    (none | nf4 | int8) is the base's precision, `optimizer` (adamw | adamw8bit | paged_adamw)
    sets the optimizer-state bytes; `device` (cuda | cpu) which attention kernels run."""
    if lora_layers(model):
        raise ValueError("estimate() takes the base model, before inject()")
    modules = []
    by_target: dict[str, int] = {}
    tensors = []  # sizes of each A and B (the 8-bit optimizer quantizes per tensor)
    for s in plan(model, spec):
        r, _ = spec.rank_of(s.name)
        n = module_params(s.in_features, s.out_features, r, s.slices)
        a = (len(s.slices) if s.slices else 1) * r * s.in_features  # A: (n_slices * r) x in
        tensors += [a, n - a] + ([s.out_features] if spec.dora else [])
        n += s.out_features if spec.dora else 0  # DoRA's magnitude vector m
        modules.append(ModuleBudget(s.name, list(s.targets), [s.out_features, s.in_features], r, n))
        if s.slices:
            for t, rows in s.slices:
                by_target[t] = by_target.get(t, 0) + r * (s.in_features + len(rows))
        else:
            key = s.targets[0]
            by_target[key] = by_target.get(key, 0) + n
    adapter = sum(m.params for m in modules)
    heads = _head_params(model, spec.modules_to_save)
    base = sum(p.numel() for p in model.parameters())
    trainable = adapter + heads
    total = base + adapter
    wbytes = BYTES.get(precision, 4)
    act = activation_bytes(model.config, batch, seq, precision, checkpointing, spec.targets,
                           "flash" if device == "cuda" else "math")
    # LoRA: frozen base at `precision` (or 4-/8-bit); adapters/heads fp32 with fp32 grads and AdamW (m, v).
    from lora_studio.engine.quantize import optimizer_state_bytes

    tensors += [heads] * bool(heads)
    lora_mem = Memory(weights=base_weight_bytes(model, precision, quantize) + adapter * 4,
                      gradients=trainable * 4, optimizer=optimizer_state_bytes(tensors, optimizer),
                      activations=act)
    # Full fine-tuning: every parameter trained; mixed precision keeps an fp32 master copy.
    master = 4 if wbytes < 4 else 0
    full_mem = Memory(weights=base * (wbytes + master), gradients=base * wbytes,
                      optimizer=base * 8, activations=act)
    return Budget(trainable_params=trainable, adapter_params=adapter, head_params=heads,
                  base_params=base, total_params=total,
                  trainable_percent=100.0 * trainable / max(total, 1),
                  adapter_file_bytes=trainable * 4, modules=modules, by_target=by_target,
                  memory_lora=lora_mem, memory_full=full_mem)


def sequences_per_example(task: str) -> int:
    """Sequences one training example puts through the model: 2 for a preference pair (chosen
    and rejected; DPO's reference forward keeps no activations), else 1."""
    return 2 if task == "preference" else 1
