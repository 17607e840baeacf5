"""The correctness checks of benchmarks/gpu_check.py: the default device end to end, the GPU-readiness
review's findings (N1-N10, issue 21) and the earlier ones that need a GPU to show (issue 18)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from gpu_check_lib import (CTX, FAIL, HERE, OK, cfg, check, cli, fixtures, first_line, finished, free, loop_counts,
                           mib, outcome, probe, run, verdict, world1)


# -- the default device, end to end (N1) ----------------------------------------------------------
@check("auto_device_end_to_end", "N1", 300, cpu=True)
def auto_device_end_to_end():
    """`lora-studio train` with no --device (auto), then resume, merge and try, as a user runs them."""
    fx = fixtures()
    out, merged = CTX.root / "runs" / "auto", CTX.root / "runs" / "auto_merged"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(merged, ignore_errors=True)
    steps = []
    rc, so, se = cli("train", "--model", str(fx["llama"]), "--task", "causal-lm", "--data", str(fx["causal"]),
                     "--max-steps", "4", "--save-every", "2", "--out", str(out), "--quiet")
    steps.append(("train", rc, se))
    if rc == 0:
        (out / "run.toml").write_text((out / "run.toml").read_text().replace("max_steps = 4", "max_steps = 6"))
        shutil.rmtree(out / "checkpoints" / "step-4", ignore_errors=True)
        rc, so, se = cli("train", "--resume", str(out), "--quiet")
        steps.append(("resume", rc, se))
    if rc == 0:
        rc, so, se = cli("merge", str(out), "--out", str(merged))
        steps.append(("merge", rc, se))
    if rc == 0:
        rc, so, se = cli("try", str(out), "--text", "what comes after 3 ?", "--max-new-tokens", "4", "--json")
        steps.append(("try", rc, se))
    failed = [(n, c, first_line(e.strip().splitlines()[-1] if e.strip() else "", 160)) for n, c, e in steps if c]
    if failed:
        return FAIL(f"{failed[0][0]} exit {failed[0][1]}: {failed[0][2]}")
    import tomllib

    device = tomllib.loads((out / "run.toml").read_text())["train"]["device"]
    mem = (out / "memory.json").read_text() if (out / "memory.json").exists() else ""
    on_gpu = "cuda.max_memory_allocated" in mem
    return verdict(device == "auto" and (on_gpu or not CTX.cuda),
                   f"train (device {device}), resume to step 6, merge, try: all exit 0; "
                   f"trained on {'the GPU' if on_gpu else 'the CPU'}")


@check("auto_device_under_torchrun", "N1/N7", 240)
def auto_device_under_torchrun():
    """torchrun with device auto and with cuda:0 (as the GUI saves it): each rank on cuda:LOCAL_RANK over nccl."""
    fx = fixtures()
    gpus = torch.cuda.device_count()
    n = min(gpus, 2)
    out = []
    for device in ("auto", "cuda:0"):
        run_dir = CTX.root / "runs" / f"torchrun_{device.replace(':', '')}"
        shutil.rmtree(run_dir, ignore_errors=True)
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                            "-m", "lora_studio", "train", "--model", str(fx["llama"]), "--task", "causal-lm",
                            "--data", str(fx["causal"]), "--max-steps", "2", "--device", device, "--out",
                            str(run_dir), "--quiet"], capture_output=True, text=True, timeout=200,
                           env={**__import__("os").environ, "PYTHONPATH": str(HERE.parent)})
        out.append((device, p.returncode, first_line((p.stderr.strip().splitlines() or [""])[-1], 140)))
    bad = [o for o in out if o[1]]
    return verdict(not bad, f"{n} process(es): " + "; ".join(f"{d}: exit {c} {m if c else ''}".strip()
                                                            for d, c, m in out))


# -- issue 18, on a GPU ---------------------------------------------------------------------------
@check("fp16_classification", "18 A1", 90)
def fp16_classification():
    """fp16 + a trained classification head finishes (no 'unscale FP16 gradients') with finite losses."""
    import math

    r, ev = run(cfg("fp16_cls", "classification", "fp16", max_steps=8))
    losses = [e.loss for e in ev if type(e).__name__ == "Step"]
    return verdict(finished(r) and len(losses) == 8 and all(math.isfinite(x) for x in losses),
                   f"{outcome(r)}; loss {losses[0] if losses else None} -> {losses[-1] if losses else None}")


@check("head_dtype_bf16", "18 A2", 60)
def head_dtype_bf16():
    """The trained classification head is fp32 on a bf16 base."""
    from lora_studio.engine.setup import release, setup

    s = setup(cfg("head_dtype", "classification", "bf16"))
    dts = {n: str(p.dtype) for n, p in s.model.named_parameters() if p.requires_grad and "lora_" not in n}
    base = {str(p.dtype) for p in s.model.parameters() if not p.requires_grad}
    release(s)
    return verdict(bool(dts) and set(dts.values()) == {"torch.float32"}, f"head {dts}; frozen base {base}")


@check("fused_loss_fp16_gradient", "18 A3", 60)
def fused_loss_fp16_gradient():
    """The fused loss's fp16 dL/dh at 16k tokens and loss scale 65536: relative error < 1e-3, no zeros."""
    import torch.nn.functional as F

    from lora_studio.engine.loss import LinearCrossEntropy

    torch.manual_seed(0)
    c, v, n, scale = 256, 4096, 16384, 65536.0
    w32 = torch.randn(v, c, device="cuda") * 0.02
    h32 = torch.randn(n, c, device="cuda")
    y = torch.randint(0, v, (n,), device="cuda")
    ref = h32.clone().requires_grad_(True)
    F.cross_entropy(ref @ w32.T, y).backward()
    h = h32.half().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = LinearCrossEntropy.apply(h, w32.half(), None, y, n, 256)
    (loss * scale).backward()
    got = h.grad.float() / scale
    err = ((got - ref.grad).norm() / ref.grad.norm()).item()
    zeros = (got == 0).float().mean().item()
    return verdict(bool(torch.isfinite(got).all()) and err < 1e-3 and zeros == 0,
                   f"relative error {err:.2e}, zeros {zeros:.2%}")


@check("eval_memory", "18 B1", 90)
def eval_memory():
    """An evaluation at the training batch size peaks no higher than a training step (1024 tokens)."""
    from lora_studio.engine.setup import autocast, evaluate, release, setup, to_device

    s = setup(cfg("eval_mem", batch_size=2))
    ex = [{"input_ids": list(range(10, 1034)), "attention_mask": [1] * 1024, "labels": list(range(10, 1034))}] * 8
    s.data.validation[:] = ex
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with autocast(s):
        loss, _ = s.objective.loss(s.model, to_device(s.objective.collate(ex[:2], 0), s.device))
    loss.backward()
    step_peak = torch.cuda.max_memory_allocated() - base
    s.model.zero_grad(set_to_none=True)
    del loss
    torch.cuda.reset_peak_memory_stats()
    evaluate(s, 2)
    eval_peak = torch.cuda.max_memory_allocated() - base
    release(s)
    return verdict(eval_peak <= step_peak, f"step {mib(step_peak)}, evaluation {mib(eval_peak)}")


@check("resume_on_cpu", "18 D1", 180)
def resume_on_cpu():
    """A GPU run's checkpoint resumes with no GPU visible (map_location)."""
    fx = fixtures()
    out = CTX.root / "runs" / "res_cpu"
    shutil.rmtree(out, ignore_errors=True)
    rc, _, se = cli("train", "--model", str(fx["llama"]), "--task", "causal-lm", "--data", str(fx["causal"]),
                    "--max-steps", "4", "--save-every", "2", "--device", "cuda", "--precision", "bf16",
                    "--out", str(out), "--quiet")
    if rc:
        return FAIL(f"the GPU run failed: {first_line(se.strip().splitlines()[-1] if se.strip() else '')}")
    toml = out / "run.toml"
    toml.write_text(toml.read_text().replace('device = "cuda"', 'device = "cpu"')
                    .replace('precision = "bf16"', 'precision = "fp32"').replace("max_steps = 4", "max_steps = 6"))
    shutil.rmtree(out / "checkpoints" / "step-4", ignore_errors=True)
    rc, _, se = cli("train", "--resume", str(out), "--quiet", env={"CUDA_VISIBLE_DEVICES": ""})
    return verdict(rc == 0, f"resumed with CUDA_VISIBLE_DEVICES='': exit {rc} {first_line(se[-200:]) if rc else ''}")


@check("resume_close", "18 D6", 120)
def resume_close():
    """A run stopped at step 4 and resumed to 8 ends within 1e-2 of the unbroken run's last loss (bf16)."""
    whole, ev = run(cfg("rc_whole", max_steps=8, save_every=4))
    c = cfg("rc_part", max_steps=8, save_every=4)
    part, _ = run(c.replace(train={"max_steps": 4}))
    resumed, ev2 = run(c, resume=c.out)
    a = [e.loss for e in ev if type(e).__name__ == "Step"][-1:]
    b = [e.loss for e in ev2 if type(e).__name__ == "Step"][-1:]
    ok = finished(whole) and finished(resumed) and a and b and abs(a[0] - b[0]) <= 1e-2
    return verdict(bool(ok), f"last loss unbroken {a}, resumed {b} ({outcome(resumed)})")


@check("rng_fewer_gpus", "18 D3", 30)
def rng_fewer_gpus():
    """CUDA RNG states saved on more GPUs than visible restore (with a note), no IndexError."""
    from lora_studio.engine.checkpoint import rng_state, set_rng_state

    state = rng_state()
    saved = list(state.get("cuda") or [torch.cuda.get_rng_state()])
    state["cuda"] = saved * (torch.cuda.device_count() + 2)
    try:
        note = set_rng_state(state)
    except Exception as e:  # noqa: BLE001
        return FAIL(f"{type(e).__name__}: {first_line(e)}")
    return verdict(bool(note), f"note: {note}")


@check("release_after_run", "18 B2", 90)
def release_after_run():
    """After train() returns, its GPU memory is given back (another gc + empty_cache frees < 1 MiB)."""
    free()
    run(cfg("release"))
    reserved = torch.cuda.memory_reserved()
    free()
    return verdict(reserved - torch.cuda.memory_reserved() <= 2**20,
                   f"{mib(reserved)} reserved after train(); {mib(reserved - torch.cuda.memory_reserved())} more freed")


@check("peak_reset", "18 B4", 90)
def peak_reset():
    """The reported peak of a run at batch 2 after one at batch 32 is that run's own (smaller) peak."""
    peaks = []
    for bs in (32, 2):
        _, ev = run(cfg(f"peak_{bs}", batch_size=bs))
        peaks.append(max(e.mem_peak for e in ev if type(e).__name__ == "Step"))
    return verdict(peaks[1] < peaks[0], f"batch 32: {mib(peaks[0])}, then batch 2: {mib(peaks[1])}")


@check("auto_precision", "18 A4", 30)
def auto_precision():
    """`auto` precision is bf16 on compute capability >= 8, fp16 below (per device)."""
    from lora_studio.engine.setup import resolve_precision

    cc = torch.cuda.get_device_capability(0)
    got, want = resolve_precision("auto", torch.device("cuda", 0)), "bf16" if cc[0] >= 8 else "fp16"
    return verdict(got == want, f"capability {cc[0]}.{cc[1]}: auto -> {got}")


@check("syncs_per_step", "18 C1", 150)
def syncs_per_step():
    """One process: no host sync in a step that is not logged (any file: loop, setup, loss)."""
    syncs, rows, where, outs = loop_counts("syncs1")
    if not all(finished(o) for o in outs):
        return FAIL(outcome(next(o for o in outs if not finished(o))))
    return verdict(syncs < 0.5 and rows == 0, f"{syncs:.2f} syncs per unlogged step {where or ''}; "
                                              f"target rows on the device {rows:.2f} per micro-batch")


@check("load_straight_to_gpu", "18 C2/N2", 180)
def load_straight_to_gpu():
    """A 0.6 GB bf16 model loads onto the GPU without a host copy: peak anonymous host memory grows < 50 %
    of the model (a CPU load then .to() holds all of it; one tensor in flight, the largest 21 %, is fine)."""
    from lora_studio.engine.models import load_model

    folder = _half_billion()
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))

    def anon() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    base, peak, done = anon(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            time.sleep(0.002)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    m = load_model(str(folder), "causal-lm", dtype=torch.bfloat16, device=torch.device("cuda", 0))
    done.set()
    t.join()
    where = {str(p.device) for p in m.parameters()}
    del m
    free()
    grew = peak[0] - base
    return verdict(where == {"cuda:0"} and grew < 0.5 * size,
                   f"parameters on {where}; anonymous host memory peaked {mib(grew)} above the start "
                   f"for a {mib(size)} model")


@check("bad_device_index", "18 D5", 60)
def bad_device_index():
    """--device cuda:N past the visible GPUs is the user's error: exit 2, one line naming the GPUs."""
    rc, _, se = cli("train", "--device", f"cuda:{torch.cuda.device_count()}", "--max-steps", "1", "--out",
                    str(CTX.root / "runs" / "badidx"), "--quiet")
    return verdict(rc == 2 and "cuda:0" in se, f"exit {rc}: {first_line(se.strip()[-200:])}")


@check("tryit_finished_run", "N6", 120)
def tryit_finished_run():
    """Try it on a finished bf16 run loads the base in bf16 on the GPU (not an fp32 copy): the loaded
    model's weights take the bf16 size; the answer comes back."""
    from lora_studio.engine import tryit

    c = cfg("tryit_bf16")
    r, _ = run(c)
    if not finished(r):
        return FAIL(outcome(r))
    tryit.forget()
    free()
    before = torch.cuda.memory_allocated()
    res = tryit.compare(c.out, "what comes after 3 ?", max_new_tokens=4)
    model = tryit._load(c.out)[0]
    dtypes = {str(p.dtype) for n, p in model.named_parameters() if "lora_" not in n}
    held = torch.cuda.memory_allocated() - before
    tryit.forget()
    return verdict(dtypes == {"torch.bfloat16"} and isinstance(res.adapted.text, str),
                   f"base dtypes {dtypes}, {mib(held)} on the GPU")


@check("fp16_no_scheduler_warning", "18 A5", 60)
def fp16_no_scheduler_warning():
    """An fp16 run finishes without the lr_scheduler order warning."""
    import warnings

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r, _ = run(cfg("sched_warn", "causal-lm", "fp16"))
    bad = [str(x.message)[:80] for x in w if "lr_scheduler" in str(x.message)]
    return verdict(finished(r) and not bad, f"{outcome(r)}; scheduler warnings: {bad or 'none'}")


# -- DDP / FSDP2 code on one GPU (world size 1, nccl) ----------------------------------------------
def _wrapped(name, mode, **train):
    with world1(), probe() as p:
        r, ev = run(cfg(name, distributed=mode, **train))
    status = [e.message for e in ev if type(e).__name__ == "Status" and "processes," in e.message]
    return r, ev, p, status


@check("ddp_fsdp_one_gpu", "N3/N10", 240, cpu=True)
def ddp_fsdp_one_gpu():
    """DDP and FSDP2 wrap on one GPU (nccl), evaluate at step 0 (the defaults) and checkpoint; the
    adapter equals one process's (fp32, <= 1e-4); a checkpoint gathers the trained tensors only."""
    from lora_studio.engine.adapters import read_adapter

    common = dict(precision="fp32", max_steps=3, save_every=2, eval_every=50, data={"validation_split": 0.1})
    one, _ = run(cfg("dist_one", **common))
    if not finished(one):
        return FAIL(f"one process: {outcome(one)}")
    ref = read_adapter(one.out).modules
    if not any(m.B.abs().max() > 0 for m in ref.values()):
        return FAIL("one process did not train its adapter (B is still zero)")
    trained = sum(m.A.numel() + m.B.numel() for m in ref.values()) * 4
    out, ok = [], True
    for mode in ("ddp", "fsdp"):
        r, ev, p, status = _wrapped(f"dist_{mode}", mode, **common)
        evals = [e for e in ev if type(e).__name__ == "Eval"]
        if not finished(r) or not status:
            ok = False
            out.append(f"{mode}: {outcome(r)}{'' if status else ' (not wrapped)'}")
            continue
        got = read_adapter(r.out).modules
        diff = max(max((got[n].A - ref[n].A).abs().max().item(), (got[n].B - ref[n].B).abs().max().item())
                   for n in ref)
        worst = max(p.gathers) if p.gathers else 0
        ok &= diff <= 1e-4 and len(evals) >= 2 and bool(p.gathers) and worst <= 2 * trained + 2**16
        out.append(f"{mode}: {len(evals)} evaluations, adapter vs one process {diff:.1e}, "
                   f"{len(p.gathers)} checkpoint gathers of up to {mib(worst)} for {mib(trained)} trained")
    return verdict(ok, "; ".join(out))


@check("dist_syncs_per_step", "N9", 240)
def dist_syncs_per_step():
    """Under DDP and FSDP2 the fused loss keeps its host-found target rows (no device-side search) and a
    step syncs at most once (the stop agreement)."""
    out, ok = [], True
    for mode in ("ddp", "fsdp"):
        syncs, rows, where, outs = loop_counts(f"dsync_{mode}", mode)
        if not all(finished(o) for o in outs):
            ok = False
            out.append(f"{mode}: {outcome(next(o for o in outs if not finished(o)))}")
            continue
        ok &= rows == 0 and syncs <= 1.5
        out.append(f"{mode}: {syncs:.2f} syncs/step, device-side target rows {rows:.2f}/micro-batch "
                   f"{dict(list(where.items())[:3]) or ''}")
    return verdict(ok, "; ".join(out))


@check("fsdp_bnb_optimizer", "N4", 120, cpu=True)
def fsdp_bnb_optimizer():
    """FSDP2 with adamw8bit / paged_adamw is refused in one line naming the optimizer to use."""
    out, ok = [], True
    for opt in ("adamw8bit", "paged_adamw"):
        r, _, _, _ = _wrapped(f"fsdp_{opt}", "fsdp", optimizer=opt)
        msg = getattr(r, "message", "")
        good = getattr(r, "kind", "") == "user" and "--optimizer adamw" in msg and "\n" not in msg
        ok &= good
        out.append(f"{opt}: {outcome(r)}")
    return verdict(ok, "; ".join(out))


@check("fsdp_load_sharded", "N5", 180)
def fsdp_load_sharded():
    """Under FSDP2 a rank does not hold the whole model on its GPU before sharding (needed for a base that
    does not fit one GPU): GPU memory at the first fully_shard < 60 % of the bf16 model."""
    import torch.distributed.fsdp as F

    seen = []
    real = F.fully_shard

    def first(module, *a, **k):
        if not seen:
            seen.append(torch.cuda.memory_allocated())
        return real(module, *a, **k)

    F.fully_shard = first
    try:
        r, _, _, _ = _wrapped("fsdp_load", "fsdp", model={"path": str(_half_billion())}, batch_size=1, max_steps=1,
                              data={"max_length": 32})
    finally:
        F.fully_shard = real
    size = sum(f.stat().st_size for f in _half_billion().glob("*.safetensors"))
    if not seen:
        return FAIL(f"fully_shard was not reached: {outcome(r)}")
    return verdict(seen[0] < 0.6 * size, f"{mib(seen[0])} on the GPU at the first fully_shard, model {mib(size)}")


def _half_billion() -> Path:
    """A Llama-shaped 0.5B model (4 layers of TinyLlama's width), bf16 safetensors, word-level tokenizer."""
    import transformers as T

    from gpu_check_lib import save_model

    folder = CTX.root / "llama_05b"
    if not (folder / "config.json").exists():
        c = T.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=4, num_attention_heads=16,
                          num_key_value_heads=4, vocab_size=32000, pad_token_id=0, bos_token_id=2, eos_token_id=3)
        torch.manual_seed(0)
        save_model(T.AutoModelForCausalLM.from_config(c, dtype=torch.bfloat16), folder)
    return folder
