"""Quantized base (QLoRA): weight memory of NF4 / int8 vs full precision, and the training step of
LoRA Studio vs PEFT on the same 4-bit base, both measured in one run.

    python benchmarks/bench_quantized.py [--hidden 512] [--layers 4] [--reps 7] [--device cpu|cuda]

Weight memory is the bytes of every storage the loaded model holds (bitsandbytes' packed codes,
absmaxes and code books included), with non-quantized weights (embeddings, norms, LM head) in
bf16 in every case, so the ratios compare like with like. The step: both engines adapt q,k,v,o
(rank 16) of their own copy of the same NF4 model; each repetition times one step of each, back
to back, the one going first alternating (as bench_train_step.py).

`nf4_step_check()` is the CUDA check (benchmarks/gpu_check.py calls it): a small Llama-shaped
model in NF4, a few steps, loss, peak memory against the planner's estimate, and step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
import transformers as T

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
TARGETS = ["q", "k", "v", "o"]


def llama_folder(hidden: int, layers: int, vocab: int = 32000) -> tuple[str, T.LlamaConfig]:
    cfg = T.LlamaConfig(hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
                        vocab_size=vocab, max_position_embeddings=2048, pad_token_id=0)
    path = tempfile.mkdtemp(prefix="bench-quantized-")
    torch.manual_seed(0)
    T.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path, cfg


def load(path: str, quantize: str, device: str, dtype=torch.bfloat16):
    from lora_studio.engine.models import load_model
    from lora_studio.engine.quantize import bnb_config, compute_dtype

    qc = bnb_config(quantize, compute_dtype(torch.device(device), "bf16" if device == "cuda" else "fp32"))
    return load_model(path, "causal-lm", dtype=dtype, device=device, quantization_config=qc)


def storage_bytes(model) -> int:
    seen, total = set(), 0
    tensors = list(model.parameters()) + list(model.buffers())
    for p in list(tensors):
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            tensors += [qs.absmax, qs.code, qs.offset] + ([qs.state2.absmax, qs.state2.code] if qs.nested else [])
    for t in tensors:
        if t is not None and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def weight_memory(path: str, device: str) -> dict:
    from lora_studio.engine.budget import base_weight_bytes
    from lora_studio.engine.models import skeleton

    from lora_studio.engine.quantize import quantizable

    out = {}
    skel = skeleton(path, "causal-lm")
    converted = {n for n, _, _ in quantizable(skel)}
    for q in ("none", "int8", "nf4"):
        model = load(path, q, device)
        linear = sum(storage_bytes(m) for n, m in model.named_modules() if n in converted)
        out[q] = {"measured": storage_bytes(model), "planned": base_weight_bytes(skel, "bf16", q), "linear": linear}
        del model
    for q in ("int8", "nf4"):
        out[q]["ratio"] = out[q]["measured"] / out["none"]["measured"]
        out[q]["linear_ratio"] = out[q]["linear"] / out["none"]["linear"]
    return out


PLANNED = {  # real shapes, weights from the planner (which matches the measured bytes above)
    "Llama-2-7B": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000),
    "Llama-3-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256),
}


def planned_ratios() -> dict:
    from lora_studio.engine.budget import base_weight_bytes
    from lora_studio.engine.models import skeleton_from_config

    out = {}
    for name, kw in PLANNED.items():
        meta = skeleton_from_config(T.LlamaConfig(**kw), "causal-lm")
        bf16 = base_weight_bytes(meta, "bf16")
        out[name] = {q: base_weight_bytes(meta, "bf16", q) / bf16 for q in ("int8", "nf4")}
    return out


def _batch(vocab: int, batch: int, seq: int, device: str):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (batch, seq), generator=g).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def step_fn(model, x, device, engine_loss: bool):
    from lora_studio.engine.loss import training_loss

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    half = device == "cuda"

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=half):
            loss = training_loss(model, x) if engine_loss else model(**x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())  # sync point

    return step


def step_vs_peft(path: str, cfg, device: str, reps: int, batch: int, seq: int) -> dict:
    import peft

    from lora_studio import LoraSpec, inject

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    ours = load(path, "nf4", device, dtype)
    inject(ours, LoraSpec(targets=TARGETS, rank=16, alpha=32))
    theirs = peft.get_peft_model(load(path, "nf4", device, dtype), peft.LoraConfig(
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], r=16, lora_alpha=32, task_type="CAUSAL_LM"))
    x = _batch(cfg.vocab_size, batch, seq, device)
    s_ours, s_peft = step_fn(ours.train(), x, device, True), step_fn(theirs.train(), x, device, False)
    for _ in range(2):
        s_ours(), s_peft()
    t_ours, t_peft = [], []
    for i in range(reps):
        pair = [(s_ours, t_ours), (s_peft, t_peft)]
        for fn, into in (pair if i % 2 == 0 else pair[::-1]):
            t0 = time.perf_counter()
            fn()
            into.append(time.perf_counter() - t0)
    mo, mp = statistics.median(t_ours), statistics.median(t_peft)
    return {"ours_ms": mo * 1e3, "peft_ms": mp * 1e3, "ratio": mo / mp,
            "ratio_paired": statistics.median(o / p for o, p in zip(t_ours, t_peft)), "batch": batch, "seq": seq}


def nf4_step_check(hidden: int = 2048, layers: int = 8, steps: int = 6, batch: int = 4, seq: int = 512) -> dict:
    """CUDA: a Llama-shaped model (hidden 2048, 8 layers: ~0.5B parameters) with an NF4 base, q,k,v,o
    rank 16, bf16 autocast, a few AdamW steps. Returns losses, peak memory (max_memory_allocated)
    next to the planner's estimate, and the median step time."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU"}
    from lora_studio import LoraSpec, inject
    from lora_studio.engine.budget import estimate
    from lora_studio.engine.models import skeleton

    path, cfg = llama_folder(hidden, layers)
    spec = LoraSpec(targets=TARGETS, rank=16, alpha=32)
    planned = estimate(skeleton(path, "causal-lm"), spec, "bf16", batch, seq, quantize="nf4").memory_lora
    torch.cuda.reset_peak_memory_stats()
    model = load(path, "nf4", "cuda")
    weights = torch.cuda.memory_allocated()
    inject(model, spec)
    step = step_fn(model.train(), _batch(cfg.vocab_size, batch, seq, "cuda"), "cuda", True)
    losses, times = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated()
    return {"params": sum(p.numel() for p in skeleton(path, "causal-lm").parameters()),
            "losses": losses, "loss_fell": losses[-1] < losses[0], "weights_bytes": weights,
            "planned_weights_bytes": planned.weights, "peak_bytes": peak, "planned_peak_bytes": planned.total,
            "step_ms": statistics.median(times[1:]) * 1e3, "batch": batch, "seq": seq,
            "device": torch.cuda.get_device_name()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--nf4-check", action="store_true", help="also run nf4_step_check() (CUDA)")
    ap.add_argument("--json")
    a = ap.parse_args()
    path, cfg = llama_folder(a.hidden, a.layers)
    n = sum(p.numel() for p in T.AutoModelForCausalLM.from_config(cfg).parameters())
    print(f"Llama-shaped, hidden {a.hidden}, {a.layers} layers, vocab {cfg.vocab_size}: {n / 1e6:.1f}M parameters; "
          f"device {a.device}, {torch.get_num_threads()} threads")
    mem = weight_memory(path, a.device)
    print("| base | weight memory (measured) | planned | vs bf16 | quantized linear layers | vs bf16 |")
    print("|---|---|---|---|---|---|")
    for q in ("none", "int8", "nf4"):
        r = mem[q]
        ratio = f"{r['ratio']:.3f}x" if "ratio" in r else "1"
        lin = f"{r['linear_ratio']:.3f}x" if "linear_ratio" in r else "1"
        print(f"| {'bf16' if q == 'none' else q} | {r['measured'] / 2**20:.1f} MiB | {r['planned'] / 2**20:.1f} MiB | "
              f"{ratio} | {r['linear'] / 2**20:.1f} MiB | {lin} |")
    plan = planned_ratios()
    for name, r in plan.items():
        print(f"planned, whole model {name}: int8 {r['int8']:.3f}x, nf4 {r['nf4']:.3f}x of bf16")
    step = step_vs_peft(path, cfg, a.device, a.reps, a.batch, a.seq)
    print(f"\nNF4 base, q,k,v,o r=16, batch {a.batch} x {a.seq}: ours {step['ours_ms']:.1f} ms/step, "
          f"PEFT {step['peft_ms']:.1f} ms/step, ratio {step['ratio']:.3f} (paired {step['ratio_paired']:.3f})")
    result = {"weights": mem, "planned_ratios": plan, "step": step}
    if a.nf4_check:
        result["nf4_step_check"] = nf4_step_check()
        print(json.dumps(result["nf4_step_check"], indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
