"""Training step of LoRA Studio vs PEFT, side by side in one process, interleaved.

    python benchmarks/bench_train_step.py [--cases minilm,llama,gpt2] [--reps 15] [--precision fp32|bf16]
                                          [--checkpointing] [--variant dora|pissa]

With `--variant`, each case times three engines interleaved: our plain LoRA, our variant and
PEFT's same variant (DoRA: use_dora; PiSSA: init_lora_weights "pissa", exact SVD, as ours below
EXACT_SVD_BELOW, else "pissa_niter_4"), plus the time of building each adapter (PiSSA's SVD).

For each case both engines adapt the same fresh copy of the same model (same targets, rank,
alpha, batch, sequence length, precision); each repetition times one step of each, back to back,
the one going first alternating. Reported: the ratio of the medians, of the fastest runs, and the
median of the per-repetition (paired) ratios. FLOPs of a step are counted by torch's FlopCounterMode; the
machine's GEMM peak is a large fp32 (or bf16) matmul with the same thread count. Peak memory is
a step's transient tensor memory (above the model, adapter and optimizer state): on CUDA from
max_memory_allocated, on CPU from the profiler's memory timeline (`tensor_peak`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
import transformers as T

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def build_case(name: str, device: str):
    torch.manual_seed(0)
    if name == "minilm":
        from lora_studio.engine.models import demo_model_path

        model = T.AutoModelForSequenceClassification.from_pretrained(demo_model_path(), num_labels=4)
        batch, seq = 16, 128
        x = {"input_ids": torch.randint(1000, 30000, (batch, seq)), "attention_mask": torch.ones(batch, seq, dtype=torch.long),
             "labels": torch.randint(0, 4, (batch,))}
        ours = dict(targets=["q", "v"], rank=8, alpha=16, modules_to_save=["classifier"])
        peft = dict(target_modules=["query", "value"], r=8, lora_alpha=16, modules_to_save=["classifier"], task_type="SEQ_CLS")
    elif name == "llama":
        cfg = T.LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                            num_key_value_heads=8, vocab_size=32000, max_position_embeddings=1024)
        model = T.AutoModelForCausalLM.from_config(cfg)
        batch, seq = 4, 512
        ids = torch.randint(0, 32000, (batch, seq))
        x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        ours = dict(targets=["q", "k", "v", "o"], rank=16, alpha=32)
        peft = dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], r=16, lora_alpha=32, task_type="CAUSAL_LM")
    elif name == "gpt2":
        cfg = T.GPT2Config(n_embd=512, n_layer=4, n_head=8, n_positions=1024, vocab_size=32000)
        model = T.AutoModelForCausalLM.from_config(cfg)
        batch, seq = 4, 512
        ids = torch.randint(0, 32000, (batch, seq))
        x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        # the same work for both: one LoRA of rank 16 on the whole fused c_attn
        ours = dict(targets=["c_attn"], rank=16, alpha=32)
        peft = dict(target_modules=["c_attn"], r=16, lora_alpha=32, fan_in_fan_out=True, task_type="CAUSAL_LM")
    else:
        raise SystemExit(f"unknown case {name}")
    model.config.pad_token_id = 0
    model.train()
    return model.to(device), {k: v.to(device) for k, v in x.items()}, ours, peft, (batch, seq)


CKPT = {"use_reentrant": False}  # gradient checkpointing as engine/train.py turns it on


def make_ours(model, kw, checkpointing: bool = False):
    from lora_studio import LoraSpec, inject

    from lora_studio.engine.fast import speed_up

    m = copy.deepcopy(model)
    inject(m, LoraSpec(**kw))
    speed_up(m, next(m.parameters()).device)  # as engine/train.py does
    if checkpointing:
        from lora_studio.engine.setup import checkpointing as turn_on

        turn_on(m)
    return m


def make_peft(model, kw, checkpointing: bool = False):
    import peft

    m = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(**kw))
    if checkpointing:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CKPT)
    return m


def stepper(model, x, precision, device, engine_loss: bool = False):
    """One optimizer step. Ours computes its loss as engine/train.py does (training_loss);
    PEFT's is the model's own loss, as with transformers' Trainer or a hand-written loop."""
    from lora_studio.engine.loss import training_loss

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = training_loss(model, x) if engine_loss else model(**x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return step


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def gemm_peak(device: str, dtype=torch.float32, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(timed(lambda: (a @ b, torch.cuda.synchronize() if device == "cuda" else None)))
    return 2 * n ** 3 / min(times) / 1e9


def step_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def tensor_peak(step) -> int:
    """Peak bytes of tensors alive during one step, above those alive when it starts (model,
    adapter, optimizer state): activations, logits, gradients. CPU tensors have no allocator
    counter, so this replays torch's profiler memory timeline (every allocation and free, in
    order). Deterministic, unlike the process's peak RSS, which malloc's reuse of freed memory
    blurs (an earlier version of this script measured that, and ranged 12-174 MB on one case)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    totals = [sum(s) for s in sizes]
    return max(totals) - totals[0]


def run_case(case: str, reps: int, precision: str, device: str, checkpointing: bool = False) -> dict:
    model, x, ours_kw, peft_kw, (batch, seq) = build_case(case, device)
    ours, theirs = make_ours(model, ours_kw, checkpointing), make_peft(model, peft_kw, checkpointing)
    s_ours, s_peft = stepper(ours, x, precision, device, True), stepper(theirs, x, precision, device)
    fwd_model = copy.deepcopy(model).eval()

    def fwd():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            fwd_model(**{k: v for k, v in x.items() if k != "labels"})
        if device == "cuda":
            torch.cuda.synchronize()

    flops = step_flops(s_ours)
    for _ in range(2):  # warm up
        s_ours(), s_peft(), fwd()
    t_ours, t_peft, t_fwd = [], [], []
    mem = {}
    def one(step, key, into):
        if device == "cuda":
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        into.append(timed(step))
        if device == "cuda":
            mem[key] = max(mem.get(key, 0), torch.cuda.max_memory_allocated() - base)

    for i in range(reps):
        # alternate who goes first, so neither always runs in the other's wake (caches, clocks)
        if i % 2 == 0:
            one(s_ours, "ours", t_ours), one(s_peft, "peft", t_peft)
        else:
            one(s_peft, "peft", t_peft), one(s_ours, "ours", t_ours)
        t_fwd.append(timed(fwd))
    if device == "cpu":
        mem = {"ours": tensor_peak(s_ours), "peft": tensor_peak(s_peft)}
    mo, mp, mf = (statistics.median(t) for t in (t_ours, t_peft, t_fwd))
    return {"case": case, "batch": batch, "seq": seq, "precision": precision, "ours_ms": mo * 1e3, "peft_ms": mp * 1e3,
            "ratio": mo / mp, "ratio_min": min(t_ours) / min(t_peft),
            # each repetition's two steps ran back to back under the same load: the median of
            # their ratios is the estimate least moved by the load drifting over the run
            "ratio_paired": statistics.median(o / p for o, p in zip(t_ours, t_peft)),
            "forward_ms": mf * 1e3, "ours_step_over_fwd": mo / mf, "peft_step_over_fwd": mp / mf,
            "step_gflop": flops / 1e9, "ours_gflops": flops / mo / 1e9, "peft_gflops": flops / mp / 1e9,
            "ours_peak_mb": mem["ours"] / 2**20, "peft_peak_mb": mem["peft"] / 2**20,
            "tokens_per_s_ours": batch * seq / mo, "tokens_per_s_peft": batch * seq / mp}


def run_variant(case: str, variant: str, reps: int, precision: str, device: str) -> dict:
    from lora_studio.engine.inits import EXACT_SVD_BELOW

    model, x, ours_kw, peft_kw, _ = build_case(case, device)
    dim = min(p.shape[-1] for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    v_ours = {"dora": {"dora": True}, "pissa": {"init": "pissa"}}[variant]
    v_peft = {"dora": {"use_dora": True},
              "pissa": {"init_lora_weights": "pissa" if dim < EXACT_SVD_BELOW else "pissa_niter_4"}}[variant]
    build = {}
    t0 = time.perf_counter(); plain = make_ours(model, ours_kw); build["plain"] = time.perf_counter() - t0
    t0 = time.perf_counter(); ours = make_ours(model, {**ours_kw, **v_ours}); build["ours"] = time.perf_counter() - t0
    t0 = time.perf_counter(); theirs = make_peft(model, {**peft_kw, **v_peft}); build["peft"] = time.perf_counter() - t0
    steps = {"plain": stepper(plain, x, precision, device, True), "ours": stepper(ours, x, precision, device, True),
             "peft": stepper(theirs, x, precision, device)}
    for _ in range(2):
        for f in steps.values():
            f()
    times = {k: [] for k in steps}
    keys = list(steps)
    for i in range(reps):
        for k in keys[i % 3:] + keys[:i % 3]:  # rotate who goes first
            times[k].append(timed(steps[k]))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"case": case, "variant": variant, "plain_ms": med["plain"], "ours_ms": med["ours"], "peft_ms": med["peft"],
            "ours_over_plain": med["ours"] / med["plain"], "ours_over_peft": med["ours"] / med["peft"],
            "build_s": build}


def main_variant(a):
    print(f"device {a.device}, {torch.get_num_threads()} threads, {a.precision}, variant {a.variant}, {a.reps} reps")
    print("| case | plain LoRA ms/step | ours ms/step | PEFT ms/step | ours / plain | ours / PEFT | "
          "build s: plain / ours / PEFT |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for case in a.cases.split(","):
        r = run_variant(case, a.variant, a.reps, a.precision, a.device)
        rows.append(r)
        b = r["build_s"]
        print(f"| {case} {a.variant} | {r['plain_ms']:.1f} | {r['ours_ms']:.1f} | {r['peft_ms']:.1f} | "
              f"{r['ours_over_plain']:.2f} | {r['ours_over_peft']:.2f} | {b['plain']:.2f} / {b['ours']:.2f} / {b['peft']:.2f} |",
              flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="minilm,llama,gpt2")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on, for both engines")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--variant", choices=["dora", "pissa"], help="time our variant vs plain LoRA and PEFT's variant")
    a = ap.parse_args()
    if a.variant:
        return main_variant(a)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    peak = gemm_peak(a.device, dtype)
    print(f"device {a.device}, {torch.get_num_threads()} threads, GEMM peak {peak:.0f} GFLOP/s ({a.precision})")
    print("| case | ours ms/step | PEFT ms/step | ratio | ratio of mins | paired ratio | ours peak MB | PEFT peak MB | step/fwd ours | step/fwd PEFT | "
          "ours % of peak | PEFT % of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for case in a.cases.split(","):
        r = run_case(case, a.reps, a.precision, a.device, a.checkpointing)
        # the peak is measured again after every case and the best kept: one measurement taken
        # while the shared machine was busy once read 31 instead of 70 GFLOP/s
        peak = max(peak, gemm_peak(a.device, dtype))
        r["gemm_peak_gflops"] = peak
        rows.append(r)
        ck = ", checkpointing" if a.checkpointing else ""
        print(f"| {case} ({r['batch']}x{r['seq']}, {a.precision}{ck}) | {r['ours_ms']:.1f} | {r['peft_ms']:.1f} | "
              f"{r['ratio']:.3f} | {r['ratio_min']:.3f} | {r['ratio_paired']:.3f} | {r['ours_peak_mb']:.0f} | {r['peft_peak_mb']:.0f} | {r['ours_step_over_fwd']:.2f} | "
              f"{r['peft_step_over_fwd']:.2f} | {100 * r['ours_gflops'] / peak:.0f}% | {100 * r['peft_gflops'] / peak:.0f}% |",
              flush=True)
    print(f"GEMM peak, best of the measurements before and after each case: {peak:.0f} GFLOP/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
