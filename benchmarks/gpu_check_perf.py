"""The runtime checks and measurements of benchmarks/gpu_check.py: bf16/fp16 steps, an OOM caught,
QLoRA (NF4 weight memory, training with 8-bit/paged AdamW, checkpoint and resume), and on a
Llama-3.2-1B-shaped model (random weights from its config): step time, peak memory and tokens/s
against PEFT, MFU, and the planner's estimate against the measured peak."""

from __future__ import annotations

import json
import math
import statistics
import time

import torch

from gpu_check_lib import CTX, FAIL, OK, cfg, check, fixtures, finished, free, mib, outcome, run, verdict


@check("bf16_steps", "15", 120, cpu=True)
def bf16_steps():
    """bf16 runs (causal LM, classification; gradient checkpointing off/on) finish with finite losses, the
    causal LM's falling (the tiny classifier's random-embedding task does not learn in 6 steps)."""
    out = []
    for task in ("causal-lm", "classification"):
        for ckpt in (False, True):
            r, ev = run(cfg(f"bf16_{task}_{ckpt}", task, "bf16", max_steps=6, lr=1e-2, gradient_checkpointing=ckpt))
            losses = [e.loss for e in ev if type(e).__name__ == "Step"]
            good = finished(r) and len(losses) == 6 and all(math.isfinite(x) for x in losses) and \
                (task != "causal-lm" or losses[-1] < losses[0])
            out.append((task, ckpt, good, outcome(r), [round(x, 3) for x in losses[::5]]))
    bad = [o for o in out if not o[2]]
    return verdict(not bad, f"{len(out) - len(bad)}/{len(out)} good {bad or ''}")


@check("fp16_steps_not_skipped", "15", 90)
def fp16_steps_not_skipped():
    """fp16 with the GradScaler: the adapter moves (not every step skipped as inf) and the loss falls."""
    r, ev = run(cfg("fp16_steps", "causal-lm", "fp16", max_steps=8, lr=1e-2))
    losses = [e.loss for e in ev if type(e).__name__ == "Step"]
    ok = finished(r) and len(losses) == 8 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    return verdict(ok, f"{outcome(r)}; loss {losses[:1]} -> {losses[-1:]}")


@check("oom_caught", "15", 150)
def oom_caught():
    """A batch far beyond the card fails as kind "oom" with its advice, and the GPU works after."""
    from gpu_check_cases import _half_billion

    c = cfg("oom", batch_size=512, max_steps=1, model={"path": str(_half_billion())},
            data={"path": str(fixtures()["long"]), "max_length": 2048})
    r, _ = run(c)
    free()
    x = torch.ones(1024, 1024, device="cuda").sum().item()
    return verdict(getattr(r, "kind", None) == "oom" and "batch size" in getattr(r, "message", "") and
                   x == 1024 * 1024, outcome(r))


# -- QLoRA --------------------------------------------------------------------------------------------
@check("nf4_weight_memory", "15/N23", 180)
def nf4_weight_memory():
    """NF4 vs bf16 weight memory on the GPU (0.6B Llama shape, untied 32k head): each within 10 % of the
    planner's count, and NF4 under 0.7x bf16 (the head and embeddings stay bf16)."""
    from gpu_check_cases import _half_billion
    from lora_studio.engine.budget import base_weight_bytes
    from lora_studio.engine.models import load_model, skeleton
    from lora_studio.engine.quantize import bnb_config

    folder = str(_half_billion())
    got = {}
    for q in ("none", "nf4"):
        free()
        before = torch.cuda.memory_allocated()
        m = load_model(folder, "causal-lm", dtype=torch.bfloat16, device=torch.device("cuda", 0),
                       quantization_config=bnb_config(q, torch.bfloat16))
        got[q] = torch.cuda.memory_allocated() - before
        del m
    free()
    skel = skeleton(folder, "causal-lm")
    plan = {q: base_weight_bytes(skel, "bf16", q) for q in ("none", "nf4")}
    ratio = got["nf4"] / got["none"]
    return verdict(ratio <= 0.7 and all(abs(got[q] / plan[q] - 1) <= 0.1 for q in plan),
                   f"NF4 {mib(got['nf4'])} vs bf16 {mib(got['none'])} ({ratio:.2f}x); planner: NF4 {mib(plan['nf4'])}, "
                   f"bf16 {mib(plan['none'])}")


@check("qlora_train_resume", "N23", 180)
def qlora_train_resume():
    """NF4 base through train() with adamw8bit and paged_adamw, gradient checkpointing on: checkpoint at 2,
    resume to 6; the loss stays finite."""
    out, ok = [], True
    for opt in ("adamw8bit", "paged_adamw"):
        c = cfg(f"qlora_{opt}", model={"quantize": "nf4"}, optimizer=opt, max_steps=6, save_every=2,
                gradient_checkpointing=True)
        first, _ = run(c.replace(train={"max_steps": 3}))
        r, ev = run(c, resume=c.out)
        losses = [e.loss for e in ev if type(e).__name__ == "Step"]
        good = finished(first) and finished(r) and r.step == 6 and all(math.isfinite(x) for x in losses)
        ok &= good
        out.append(f"{opt}: {outcome(first)}, resumed: {outcome(r)}")
    return verdict(ok, "; ".join(out))


# -- Llama-3.2-1B shape: ours vs PEFT, MFU ------------------------------------------------------------
BATCH, SEQ, RANK = 4, 2048, 16


def llama32_1b(layers: int = 16):
    """Llama-3.2-1B's shape (hidden 2048, 16 layers, 32/8 heads, SwiGLU 8192, tied 128k vocabulary),
    random bf16 weights built on the GPU from the config (nothing downloaded)."""
    import transformers as T

    c = T.LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=layers, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096, tie_word_embeddings=True,
                      rope_theta=500000.0, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = T.AutoModelForCausalLM.from_config(c, dtype=torch.bfloat16, attn_implementation="sdpa")
    return m.train()


def _timed(steps: dict, reps: int = 5) -> dict:
    """Median seconds per step and peak bytes above the start, alternating the contenders."""
    times = {k: [] for k in steps}
    peaks = {}
    for k, step in steps.items():  # warm-up (and each one's peak)
        step()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peaks[k] = torch.cuda.max_memory_allocated() - base
    for _ in range(reps):
        for k, step in steps.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), peaks[k]) for k, v in times.items()}


def perf_1b() -> dict:
    """Ours vs PEFT on the same model, LoRA r16 on q,k,v,o, batch 4 x 2048, bf16 autocast, AdamW. Cached
    in the results folder (the MFU check reads the same measurement)."""
    cache = CTX.root / "perf_1b.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import peft
    from torch.utils.flop_counter import FlopCounterMode

    from lora_studio import LoraSpec, inject
    from lora_studio.engine import flops
    from lora_studio.engine.objective import CausalLM
    from lora_studio.engine.setup import to_device

    ids = torch.randint(3, 128256, (BATCH, SEQ))
    host = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    ours = llama32_1b()
    inject(ours, LoraSpec(targets=["q", "k", "v", "o"], rank=RANK, alpha=2 * RANK))
    theirs = peft.get_peft_model(llama32_1b(), peft.LoraConfig(
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], r=RANK, lora_alpha=2 * RANK, task_type="CAUSAL_LM"))
    objective = CausalLM()

    def stepper(model, fn):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step():
            batch = to_device(host, torch.device("cuda", 0))  # as the loop: pinned copy, host target rows
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fn(model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    s_ours = stepper(ours, lambda m, b: objective.loss(m, b)[0])
    s_peft = stepper(theirs, lambda m, b: m(**b).loss)
    with FlopCounterMode(display=False) as fc:
        s_ours()
    measured = _timed({"ours": s_ours, "peft": s_peft})
    c = flops.count(ours)
    tokens = BATCH * SEQ
    out = {"t_ours": measured["ours"][0], "m_ours": measured["ours"][1], "t_peft": measured["peft"][0],
           "m_peft": measured["peft"][1], "executed": fc.get_total_flops(),
           "convention": flops.step_flops(c, tokens, BATCH * SEQ * SEQ), "six_n": 6 * c["frozen"] * tokens,
           "tokens": tokens, "card": torch.cuda.get_device_name(0),
           "peak": flops.peak_flops(torch.device("cuda", 0), "bf16")}
    cache.write_text(json.dumps(out))
    return out


@check("step_vs_peft_1b", "15", 300)
def step_vs_peft_1b():
    """Llama-3.2-1B shape, bf16, 4 x 2048, r16 q,k,v,o: step time, tokens/s and peak memory vs PEFT;
    FAIL if ours is slower than 1.1x PEFT's step or needs more memory than PEFT."""
    m = perf_1b()
    return verdict(m["t_ours"] <= 1.1 * m["t_peft"] and m["m_ours"] <= m["m_peft"],
                   f"step {m['t_ours'] * 1e3:.0f} ms = {m['tokens'] / m['t_ours']:.0f} tokens/s "
                   f"(PEFT {m['t_peft'] * 1e3:.0f} ms = {m['tokens'] / m['t_peft']:.0f} tokens/s, "
                   f"{m['t_peft'] / m['t_ours']:.2f}x); peak above the model {mib(m['m_ours'])} "
                   f"(PEFT {mib(m['m_peft'])})")


@check("mfu_1b", "15", 300)
def mfu_1b():
    """MFU of the same step: engine/flops.py's convention (LoRA: 4N per token for the frozen base, 6 per
    adapter weight, causal attention 6 d L^2) and the executed FLOPs (FlopCounterMode), over the card's
    dense bf16 peak; the 6N figure beside them. FAIL under 15 % by the convention."""
    m = perf_1b()
    if not m["peak"]:
        return "SKIP", f"no dense bf16 peak on file for {m['card']} (engine/flops.py PEAKS)"
    mfu = m["convention"] / m["t_ours"] / m["peak"]
    return verdict(mfu >= 0.15, f"MFU {mfu:.1%} by the LoRA convention ({m['convention'] / 1e12:.1f} TFLOP/step); "
                                f"executed {m['executed'] / m['t_ours'] / m['peak']:.1%} "
                                f"({m['executed'] / 1e12:.1f} TFLOP counted); 6N {m['six_n'] / m['t_ours'] / m['peak']:.1%}"
                                f"; of {m['card']}'s {m['peak'] / 1e12:.0f} TFLOP/s")


@check("planner_vs_peak", "N8", 240)
def planner_vs_peak():
    """The planner's estimate of a bf16 run (0.5B Llama shape, batch 2 x 2048, r16 q,k,v,o) within -20 %/+30 %
    of the peak train() measures (memory.json)."""
    from gpu_check_cases import _half_billion

    c = cfg("planner", model={"path": str(_half_billion())}, batch_size=2, max_steps=3,
            lora={"targets": ["q", "k", "v", "o"], "rank": 16, "alpha": 32},
            data={"path": str(fixtures()["long"]), "max_length": 2048})
    r, _ = run(c)
    mem = CTX.root / "runs" / "planner" / "memory.json"
    if not finished(r) or not mem.exists():
        return FAIL(outcome(r))
    d = json.loads(mem.read_text())
    ratio = d["estimate_bytes"] / max(d["measured_peak_bytes"], 1)
    return verdict(0.8 <= ratio <= 1.3, f"estimate {mib(d['estimate_bytes'])} (activations "
                                        f"{mib(d['estimate']['activations'])}), measured {mib(d['measured_peak_bytes'])}:"
                                        f" {ratio:.2f}x")


__all__ = ["OK"]
