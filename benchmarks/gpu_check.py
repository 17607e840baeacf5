"""LoRA Studio on a CUDA GPU: one named check per issue-18 finding that needs a GPU to show, and
issue 15's list (bf16/fp16 steps, OOM, NF4, DDP, step time and memory vs PEFT, MFU).

    python benchmarks/gpu_check.py                  # every check, < 8 min on an H100/H200
    python benchmarks/gpu_check.py --only oom,mfu   # some
    python benchmarks/gpu_check.py --dry-run        # list the checks, run none (exit 0 anywhere)

Each check prints OK (works as it should), REPRO (the finding is still there), SKIP (with why) or
INFO (a measurement). On a GPU the table goes to docs/gpu_check_results.md (or --out), with the
command, the card and the versions. Tiny models are built from configs under $TMPDIR; nothing is
downloaded. Without a GPU every check is SKIP and nothing is written.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

ROOT = Path(tempfile.gettempdir()) / "lora_studio_gpu_check"
CUDA = torch.cuda.is_available()
CHECKS: list[tuple[str, str, object]] = []  # (name, issue item, function returning (status, detail))


def check(name: str, item: str):
    def register(fn):
        CHECKS.append((name, item, fn))
        return fn
    return register


# -- fixtures ------------------------------------------------------------------------------------
def models() -> dict:
    """Tiny llama (causal) and bert (classification) folders with the demo tokenizer, plus data."""
    import random

    import transformers as T

    from lora_studio.engine.models import demo_model_path

    ROOT.mkdir(exist_ok=True)
    out = {"llama": ROOT / "llama", "bert": ROOT / "bert", "causal": ROOT / "causal.jsonl", "cls": ROOT / "cls.jsonl"}
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=30522,
                  pad_token_id=0)
    for arch in ("llama", "bert"):
        p = out[arch]
        if (p / "config.json").exists():
            continue
        torch.manual_seed(0)
        if arch == "llama":
            m = T.AutoModelForCausalLM.from_config(T.LlamaConfig(num_key_value_heads=2, bos_token_id=101,
                                                                 eos_token_id=102, **common))
        else:
            m = T.AutoModelForSequenceClassification.from_config(T.BertConfig(**common))
        m.save_pretrained(p)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (Path(demo_model_path()) / f).exists():
                shutil.copy(Path(demo_model_path()) / f, p / f)
    rows = [{"prompt": f"what comes after {i} ?", "completion": " seven seven"} for i in range(64)]
    out["causal"].write_text("\n".join(json.dumps(r) for r in rows))
    rng = random.Random(0)
    rows = [{"text": f"the film was {rng.choice(['great', 'awful'])} and {rng.choice(['fine', 'dull'])}",
             "label": rng.choice(["pos", "neg"])} for _ in range(160)]
    out["cls"].write_text("\n".join(json.dumps(r) for r in rows))
    return out


def cfg(name, task="causal-lm", precision="bf16", device="cuda", dropout=0.1, **train):
    from lora_studio.config import RunConfig

    m = models()
    t = {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "eval_every": 0, "save_every": 0, "seed": 3,
         "device": device, "precision": precision, **train}
    out = ROOT / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    return RunConfig().replace(
        model={"path": str(m["llama" if task == "causal-lm" else "bert"]), "task": task},
        lora={"targets": ["q", "v"], "rank": 4, "alpha": 8, "dropout": dropout},
        data={"path": str(m["causal" if task == "causal-lm" else "cls"]), "max_length": 32},
        train=t, out=str(out))


def cli(*args, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(HERE.parent), **(env or {}))
    return subprocess.run([sys.executable, "-m", "lora_studio", *args], capture_output=True, text=True, env=e)


def last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1][:160]


def free():
    gc.collect()
    torch.cuda.empty_cache()


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# -- issue 18 ------------------------------------------------------------------------------------
@check("tryit_deterministic", "18.1")
def tryit_deterministic():
    from lora_studio.engine import train as T
    from lora_studio.engine import tryit

    c = cfg("tryit", "classification", dropout=0.5)
    T.train(c)
    tryit.forget()
    a = tryit.compare(c.out, "the film was great", device="cuda").adapted.probabilities
    b = tryit.compare(c.out, "the film was great", device="cuda").adapted.probabilities
    tryit.forget()
    return ("OK" if a == b else "REPRO"), f"two answers with LoRA dropout 0.5: {'equal' if a == b else f'{a} vs {b}'}"


@check("fp16_classification", "18.2")
def fp16_classification():
    from lora_studio.engine import train as T

    r = T.train(cfg("fp16_cls", "classification", "fp16"))
    return ("OK" if type(r).__name__ == "Finished" else "REPRO"), f"{type(r).__name__} {getattr(r, 'message', '')[:100]}"


@check("head_dtype_bf16", "18.2")
def head_dtype_bf16():
    from lora_studio.engine.setup import release, setup

    s = setup(cfg("head_dtype", "classification", "bf16"))
    dts = {n: str(p.dtype).replace("torch.", "") for n, p in s.model.named_parameters()
           if p.requires_grad and "lora_" not in n}
    release(s)
    bad = {n: d for n, d in dts.items() if d != "float32"}
    return ("REPRO" if bad or not dts else "OK"), f"trained head parameters: {dts}"


@check("eval_memory", "18.3")
def eval_memory():
    """Peak of an evaluation at the training batch size vs a training step, 1024 tokens, 30k vocab."""
    from lora_studio.engine.data import collate
    from lora_studio.engine.loss import training_loss
    from lora_studio.engine.setup import autocast, evaluate, release, setup

    s = setup(cfg("eval_mem", batch_size=2))
    ex = [{"input_ids": list(range(200, 1224)), "attention_mask": [1] * 1024, "labels": list(range(200, 1224))}] * 8
    s.data.validation[:] = ex
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with autocast(s):
        loss = training_loss(s.model, {k: v.cuda() for k, v in collate(ex[:2], 0).items()})
    loss.backward()
    step_peak = torch.cuda.max_memory_allocated() - base
    s.model.zero_grad(set_to_none=True)
    del loss
    torch.cuda.reset_peak_memory_stats()
    evaluate(s, 2)
    eval_peak = torch.cuda.max_memory_allocated() - base
    release(s)
    return ("OK" if eval_peak <= step_peak else "REPRO"), \
        f"peak above the model: training step {mib(step_peak)}, evaluation {mib(eval_peak)} (batch 2 x 1024)"


@check("fused_loss_fp16_gradient", "18.4")
def fused_loss_fp16_gradient():
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
    ok = torch.isfinite(got).all().item() and err < 1e-3 and zeros == 0
    return ("OK" if ok else "REPRO"), f"fp16 dL/dh at 16k tokens: relative error {err:.2e}, zeros {zeros:.2%}"


@check("resume_on_cpu", "18.5")
def resume_on_cpu():
    m = models()
    out = ROOT / "runs" / "res_cpu"
    shutil.rmtree(out, ignore_errors=True)
    r = cli("train", "--model", str(m["llama"]), "--task", "causal-lm", "--data", str(m["causal"]), "--max-steps", "4",
            "--save-every", "2", "--eval-every", "0", "--device", "cuda", "--precision", "bf16", "--out", str(out),
            "--quiet")
    if r.returncode:
        return "REPRO", f"the GPU run failed: {last_line(r.stderr)}"
    toml = out / "run.toml"
    toml.write_text(toml.read_text().replace('device = "cuda"', 'device = "cpu"')
                    .replace('precision = "bf16"', 'precision = "fp32"').replace("max_steps = 4", "max_steps = 6"))
    shutil.rmtree(out / "checkpoints" / "step-4", ignore_errors=True)
    r = cli("train", "--resume", str(out), "--quiet", env={"CUDA_VISIBLE_DEVICES": ""})
    return ("OK" if r.returncode == 0 else "REPRO"), f"GPU checkpoint resumed with no GPU visible: exit {r.returncode} " \
        f"{last_line(r.stderr)}"


@check("resume_bf16_as_fp16", "18.5")
def resume_bf16_as_fp16():
    from lora_studio.engine import train as T

    c = cfg("res_prec", max_steps=4, save_every=2)
    T.train(c)
    shutil.rmtree(Path(c.out) / "checkpoints" / "step-4", ignore_errors=True)
    r = T.train(c.replace(train={**vars(c.train), "precision": "fp16", "max_steps": 6}), resume=c.out)
    ok = type(r).__name__ == "Finished" and r.step == 6
    return ("OK" if ok else "REPRO"), f"{type(r).__name__} at step {r.step} {getattr(r, 'message', '')[:100]}"


@check("resume_fewer_gpus", "18.5")
def resume_fewer_gpus():
    if torch.cuda.device_count() < 2:
        return "SKIP", "needs 2 GPUs"
    m, out = models(), ROOT / "runs" / "res_gpus"
    shutil.rmtree(out, ignore_errors=True)
    cli("train", "--model", str(m["llama"]), "--task", "causal-lm", "--data", str(m["causal"]), "--max-steps", "4",
        "--save-every", "2", "--eval-every", "0", "--device", "cuda", "--out", str(out), "--quiet",
        env={"CUDA_VISIBLE_DEVICES": "0,1"})
    shutil.rmtree(out / "checkpoints" / "step-4", ignore_errors=True)
    (out / "run.toml").write_text((out / "run.toml").read_text().replace("max_steps = 4", "max_steps = 6"))
    r = cli("train", "--resume", str(out), "--quiet", env={"CUDA_VISIBLE_DEVICES": "0"})
    return ("OK" if r.returncode == 0 else "REPRO"), f"exit {r.returncode} {last_line(r.stderr)}"


@check("tryit_live_memory", "18.6")
def tryit_live_memory():
    from lora_studio.engine.setup import release, setup
    from lora_studio.engine.tryit import compare_live

    s = setup(cfg("tryit_live"))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    compare_live(s, "what comes after 3 ?", max_new_tokens=4)
    held = torch.cuda.memory_allocated() - before
    weights = sum(p.numel() * p.element_size() for p in s.model.parameters())
    release(s)
    return ("OK" if held < weights // 10 else "REPRO"), f"Try it on the live model holds {mib(held)} after the call " \
        f"(model {mib(weights)})"


@check("release_after_run", "18.7")
def release_after_run():
    from lora_studio.engine import train as T

    free()
    T.train(cfg("release"))
    reserved = torch.cuda.memory_reserved()
    free()
    left = torch.cuda.memory_reserved()
    return ("OK" if reserved - left <= 2**20 else "REPRO"), \
        f"after train() returned {mib(reserved)} reserved; another gc + empty_cache frees {mib(reserved - left)}"


@check("release_after_setup_failure", "18.7")
def release_after_setup_failure():
    models()
    code = ("import torch,gc,json,sys;sys.path.insert(0,%r);import gpu_check as G;from lora_studio.engine import train as T;"
            "c=G.cfg('sf','classification');c=c.replace(lora={'rank':512});r=T.train(c);"
            "a=torch.cuda.memory_reserved();gc.collect();torch.cuda.empty_cache();b=torch.cuda.memory_reserved();"
            "print(json.dumps([r.kind,a,b]))") % str(HERE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    try:
        kind, a, b = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "REPRO", last_line(out.stderr)
    return ("OK" if kind == "user" and a <= b + 2**20 else "REPRO"), \
        f"failure kind {kind}: {mib(a)} reserved after train() returned, {mib(b)} after gc + empty_cache"


@check("peak_reset", "18.7")
def peak_reset():
    from lora_studio.engine import train as T

    peaks = []
    for bs in (32, 2):
        ev = []
        T.train(cfg(f"peak_{bs}", batch_size=bs), ev.append)
        peaks.append(max(e.mem_peak for e in ev if type(e).__name__ == "Step"))
    return ("OK" if peaks[1] < peaks[0] else "REPRO"), f"reported peak at batch 32: {mib(peaks[0])}, " \
        f"next run at batch 2: {mib(peaks[1])}"


@check("auto_precision", "18.8")
def auto_precision():
    from lora_studio.engine.setup import resolve_precision

    cc = torch.cuda.get_device_capability()
    got, want = resolve_precision("auto", torch.device("cuda")), "bf16" if cc[0] >= 8 else "fp16"
    return ("OK" if got == want else "REPRO"), f"capability {cc[0]}.{cc[1]}: auto -> {got} (want {want})"


@check("syncs_per_step", "18.9")
def syncs_per_step():
    from lora_studio.engine import train as T

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            T.train(cfg("syncs", max_steps=3, grad_accum=2, log_every=10))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    where: dict[str, int] = {}
    for x in w:
        if "synchroniz" in str(x.message):
            key = f"{Path(x.filename).name}:{x.lineno}"
            where[key] = where.get(key, 0) + 1
    # expected: the last (logged) step, the evaluation and the checkpoint; none inside the loss
    in_loss = {k: v for k, v in where.items() if k.startswith("loss.py")}
    return ("REPRO" if in_loss else "OK"), f"sync warnings over 3 steps x 2 micro-batches: {where or 'none'}"


@check("load_straight_to_gpu", "18.9")
def load_straight_to_gpu():
    from lora_studio.engine.models import load_model
    from lora_studio.engine.setup import process_memory

    rss0 = process_memory()[0]
    m = load_model(str(models()["llama"]), "causal-lm", dtype=torch.bfloat16, device=torch.device("cuda", 0))
    where = {str(p.device) for p in m.parameters()}
    grew = process_memory()[0] - rss0
    del m
    free()
    return ("OK" if where == {"cuda:0"} else "REPRO"), f"parameters on {where}; host memory grew {mib(grew)}"


@check("bad_device_index", "18.10")
def bad_device_index():
    r = cli("train", "--device", f"cuda:{torch.cuda.device_count()}", "--max-steps", "1", "--out",
            str(ROOT / "runs" / "badidx"), "--overwrite", "--quiet")
    return ("OK" if r.returncode == 2 else "REPRO"), f"exit {r.returncode}: {last_line(r.stderr)}"


@check("cuda1_leaves_gpu0_alone", "18.10")
def cuda1_leaves_gpu0_alone():
    if torch.cuda.device_count() < 2:
        return "SKIP", "needs 2 GPUs"
    code = ("import torch,json,sys;sys.path.insert(0,%r);import gpu_check as G;from lora_studio.engine import train as T;"
            "r=T.train(G.cfg('cuda1',device='cuda:1'));import subprocess,os;"
            "q=subprocess.run(['nvidia-smi','--query-compute-apps=pid,gpu_uuid','--format=csv,noheader'],"
            "capture_output=True,text=True).stdout;"
            "u0=subprocess.run(['nvidia-smi','-i','0','--query-gpu=uuid','--format=csv,noheader'],"
            "capture_output=True,text=True).stdout.strip();"
            "print(json.dumps([type(r).__name__, any(l.startswith(str(os.getpid())) and u0 in l for l in q.splitlines())]))"
            ) % str(HERE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    try:
        outcome, on0 = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "REPRO", last_line(out.stderr)
    return ("OK" if outcome == "Finished" and not on0 else "REPRO"), f"{outcome}; a context on GPU 0: {on0}"


@check("fp16_no_scheduler_warning", "18.12")
def fp16_no_scheduler_warning():
    from lora_studio.engine import train as T

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = T.train(cfg("sched_warn", "causal-lm", "fp16"))
    bad = [str(x.message)[:80] for x in w if "lr_scheduler" in str(x.message)]
    return ("OK" if not bad and type(r).__name__ == "Finished" else "REPRO"), \
        f"{type(r).__name__}; scheduler warnings: {bad or 'none'}"


# -- issue 15: the runtime list (gpu_check_perf.py) ----------------------------------------------
from gpu_check_perf import register_perf  # noqa: E402

register_perf(check, cfg, models, free, mib)


# -- running -------------------------------------------------------------------------------------
def environment() -> str:
    import transformers

    card = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)" \
        if CUDA else "no CUDA GPU"
    return f"{card}; torch {torch.__version__}, CUDA {torch.version.cuda}, transformers {transformers.__version__}"


def table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| check | issue item | result | detail |", "|---|---|---|---|"]
    lines += [f"| {n} | {i} | {s} | {d.replace('|', '/')} |" for n, i, s, d in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated check names")
    ap.add_argument("--dry-run", action="store_true", help="list the checks without running them")
    ap.add_argument("--out", help="markdown file for the table (default on a GPU: docs/gpu_check_results.md)")
    args = ap.parse_args(argv)
    want = set(args.only.split(",")) if args.only else None
    unknown = (want or set()) - {n for n, _, _ in CHECKS}
    if unknown:
        ap.error(f"unknown checks: {', '.join(sorted(unknown))}")
    rows, t_all = [], time.perf_counter()
    for name, item, fn in CHECKS:
        if want and name not in want:
            continue
        if args.dry_run or not CUDA:
            status, detail = "SKIP", "dry run" if args.dry_run else "no CUDA GPU visible"
        else:
            t0 = time.perf_counter()
            try:
                status, detail = fn()
            except Exception as e:  # noqa: BLE001 - a check that crashes is itself a finding
                status, detail = "ERROR", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            detail += f" ({time.perf_counter() - t0:.0f} s)"
            free()
        rows.append((name, item, status, detail))
        print(f"[{status:5s}] {name} ({item}): {detail}", flush=True)
    text = table(rows)
    print("\n" + text)
    out = args.out or (str(HERE.parent / "docs" / "gpu_check_results.md") if CUDA and not args.dry_run else None)
    if out:
        cmd = "python benchmarks/gpu_check.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
        Path(out).write_text(f"# GPU check results\n\n`{cmd}` on {environment()}, "
                             f"{time.strftime('%Y-%m-%d %H:%M')}, {time.perf_counter() - t_all:.0f} s in all.\n\n"
                             f"{text}\n")
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
