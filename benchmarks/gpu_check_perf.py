"""Issue 15's GPU list for benchmarks/gpu_check.py: bf16/fp16 training steps, an OOM caught and
explained, an NF4 step, DDP on one GPU, step time and peak memory vs PEFT on a Llama-shaped ~1B
model (bf16), and MFU against the card's dense bf16 peak."""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

# dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (sparsity not counted)
BF16_PEAK = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
             "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0}


def card_peak(name: str) -> float | None:
    for key, peak in BF16_PEAK.items():
        if all(part in name for part in key.split()):
            return peak
    return None


def llama_1b():
    """TinyLlama-1.1B's shape, random weights, built in bf16 on the GPU (nothing downloaded)."""
    import transformers as T

    cfg = T.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                        num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = T.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.config.pad_token_id = 0
    return model.train()


TARGETS = ["q", "k", "v", "o", "gate", "up", "down"]
PEFT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BATCH, SEQ, RANK = 4, 1024, 16
_MEASURED: dict = {}


def _stepper(model, x, ours: bool):
    from lora_studio.engine.loss import training_loss

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = training_loss(model, x) if ours else model(**x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _measure(step, reps: int = 10) -> tuple[float, int]:
    """(median seconds per step, peak bytes above the model and optimizer state)."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), torch.cuda.max_memory_allocated() - base


def measure_vs_peft() -> dict:
    """Ours vs PEFT on the same ~1B model, same targets, rank, batch, bf16 autocast. Cached."""
    if _MEASURED:
        return _MEASURED
    import peft
    from torch.utils.flop_counter import FlopCounterMode

    from lora_studio import LoraSpec, inject
    from lora_studio.engine.fast import speed_up

    base = llama_1b()
    ids = torch.randint(0, 32000, (BATCH, SEQ), device="cuda")
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    ours = copy.deepcopy(base)
    inject(ours, LoraSpec(targets=TARGETS, rank=RANK, alpha=2 * RANK))
    speed_up(ours, torch.device("cuda"))
    step = _stepper(ours, x, True)
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    t_ours, m_ours = _measure(step)
    del ours, step
    torch.cuda.empty_cache()
    theirs = peft.get_peft_model(base, peft.LoraConfig(target_modules=PEFT_TARGETS, r=RANK, lora_alpha=2 * RANK,
                                                       task_type="CAUSAL_LM"))
    t_peft, m_peft = _measure(_stepper(theirs, x, False))
    del theirs, base
    torch.cuda.empty_cache()
    _MEASURED.update(t_ours=t_ours, t_peft=t_peft, m_ours=m_ours, m_peft=m_peft, flops=flops)
    return _MEASURED


def register_perf(check, cfg, models, free, mib):
    @check("bf16_autocast_steps", "15")
    def bf16_autocast_steps():
        from lora_studio.engine import train as T

        out = []
        for task in ("causal-lm", "classification"):
            for ckpt in (False, True):
                r = T.train(cfg(f"bf16_{task}_{ckpt}", task, "bf16", gradient_checkpointing=ckpt))
                out.append((task, ckpt, type(r).__name__, getattr(r, "message", "")[:60]))
        bad = [o for o in out if o[2] != "Finished"]
        return ("REPRO" if bad else "OK"), f"{len(out) - len(bad)}/{len(out)} runs finished {bad or ''}"

    @check("fp16_autocast_gradscaler_steps", "15")
    def fp16_autocast_gradscaler_steps():
        from lora_studio.engine import train as T

        out = []
        for task in ("causal-lm", "classification"):
            ev = []
            r = T.train(cfg(f"fp16_{task}", task, "fp16", max_steps=8), ev.append)
            losses = [e.loss for e in ev if type(e).__name__ == "Step"]
            first, last = (f"{losses[0]:.3f}", f"{losses[-1]:.3f}") if losses else (None, None)
            out.append((task, f"{type(r).__name__} {getattr(r, 'message', '')[:100]}".strip(), first, last))
        ok = all(o[1] == "Finished" and o[3] not in (None, "nan") for o in out)
        return ("OK" if ok else "REPRO"), "; ".join(f"{t}: {n}, loss {a} -> {b}" for t, n, a, b in out)

    @check("oom_caught", "15")
    def oom_caught():
        """A batch far beyond the card (1024 x 2048 tokens through a 1024-wide, 8-layer model):
        train() must return Failure kind "oom" with its advice, and the GPU be usable after."""
        import transformers as T

        from lora_studio.engine import train as T_

        root = Path(models()["llama"]).parent
        big = root / "llama_wide"
        if not (big / "config.json").exists():
            import shutil

            c = T.LlamaConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=8,
                              num_key_value_heads=8, vocab_size=30522, pad_token_id=0, bos_token_id=101,
                              eos_token_id=102, max_position_embeddings=4096)
            T.AutoModelForCausalLM.from_config(c, dtype=torch.bfloat16).save_pretrained(big)
            for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
                if (models()["llama"] / f).exists():
                    shutil.copy(models()["llama"] / f, big / f)
        data = root / "long.jsonl"
        data.write_text("\n".join(json.dumps({"text": "lora studio trains adapters " * 600}) for _ in range(1024)))
        c = cfg("oom", batch_size=1024, max_steps=1)
        c = c.replace(model={"path": str(big)}, data={"path": str(data), "max_length": 2048, "validation_split": 0.0})
        r = T_.train(c)
        free()
        x = torch.ones(1024, 1024, device="cuda").sum().item()  # the GPU still works
        kind = getattr(r, "kind", None)
        return ("OK" if kind == "oom" and x == 1024 * 1024 else "REPRO"), \
            f"{type(r).__name__} kind {kind}: {getattr(r, 'message', '')[:140]}"

    @check("nf4_step", "15")
    def nf4_step():
        if not (HERE / "bench_quantized.py").exists():
            return "SKIP", "benchmarks/bench_quantized.py is not on this branch (the QLoRA issue adds it)"
        import math

        from bench_quantized import nf4_step_check

        r = nf4_step_check()
        if "skipped" in r:
            return "SKIP", r["skipped"]
        ok = all(math.isfinite(x) for x in r["losses"])
        return ("OK" if ok else "REPRO"), (
            f"{r['params'] / 1e6:.0f}M-parameter Llama, NF4 base, batch {r['batch']} x {r['seq']}: loss "
            f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} (fell: {r['loss_fell']}), step {r['step_ms']:.0f} ms, peak {mib(r['peak_bytes'])} "
            f"(planned {mib(r['planned_peak_bytes'])}), weights {mib(r['weights_bytes'])} "
            f"(planned {mib(r['planned_weights_bytes'])})")

    @check("ddp_one_gpu", "15")
    def ddp_one_gpu():
        import lora_studio

        src = Path(lora_studio.__file__).parent
        if not any("torch.distributed" in p.read_text(encoding="utf-8") for p in src.rglob("*.py")):
            return "SKIP", "lora_studio has no distributed training yet (nothing to run under torchrun)"
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                            "-m", "lora_studio", "train", "--model", str(models()["llama"]), "--task", "causal-lm",
                            "--data", str(models()["causal"]), "--max-steps", "2", "--eval-every", "0",
                            "--out", str(Path(models()["llama"]).parent / "runs" / "ddp"), "--overwrite", "--quiet"],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
        return ("OK" if r.returncode == 0 else "REPRO"), f"torchrun, 1 process: exit {r.returncode}"

    @check("step_vs_peft_1b", "15")
    def step_vs_peft_1b():
        m = measure_vs_peft()
        return "INFO", (f"Llama-shaped 1.1B, bf16, batch {BATCH} x {SEQ}, rank {RANK} on q k v o gate up down: "
                        f"step {m['t_ours'] * 1e3:.0f} ms (PEFT {m['t_peft'] * 1e3:.0f} ms, "
                        f"{m['t_peft'] / m['t_ours']:.2f}x); peak above the model {mib(m['m_ours'])} "
                        f"(PEFT {mib(m['m_peft'])})")

    @check("mfu_bf16", "15")
    def mfu_bf16():
        m = measure_vs_peft()
        name = torch.cuda.get_device_name()
        achieved = m["flops"] / m["t_ours"] / 1e12
        peak = card_peak(name)
        if peak is None:
            return "INFO", f"{achieved:.0f} TFLOP/s counted by FlopCounterMode; no bf16 peak on file for {name}"
        return "INFO", (f"{achieved:.0f} TFLOP/s (FlopCounterMode count of one step, "
                        f"{m['flops'] / 1e12:.1f} TFLOP) = {achieved / peak:.1%} of {name}'s {peak:.0f} dense bf16")
