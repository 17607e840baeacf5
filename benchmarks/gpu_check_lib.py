"""Shared pieces of benchmarks/gpu_check.py: the check registry, fixtures built on the spot (tiny
models with a word-level tokenizer: no model files travel and nothing is downloaded), RunConfigs,
and the instrumentation the checks read (host syncs, checkpoint gathers, the world-size-1 group).

A check is `fn() -> (status, detail)` with status OK, FAIL or SKIP. It must be able to FAIL when the
thing its name promises is broken: each one asserts a number or an outcome, never only "it ran".
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent


@dataclass
class Check:
    name: str
    item: str  # the finding or issue item it covers
    timeout: int  # seconds, enforced by the parent (the child is killed)
    cpu: bool  # also meaningful with --cpu (the script's own self-test on a machine without a GPU)
    fn: object = field(repr=False, default=None)
    what: str = ""


CHECKS: list[Check] = []
CTX = SimpleNamespace(dev="cuda", root=Path("/tmp/lora_studio_gpu_check"), cuda=True)


def check(name: str, item: str, timeout: int = 90, cpu: bool = False):
    def register(fn):
        CHECKS.append(Check(name, item, timeout, cpu, fn, (fn.__doc__ or "").strip().splitlines()[0]
                            if fn.__doc__ else ""))
        return fn
    return register


def OK(detail: str):
    return "OK", detail


def FAIL(detail: str):
    return "FAIL", detail


def verdict(ok: bool, detail: str):
    return ("OK" if ok else "FAIL"), detail


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if abs(n) >= 2**20 else f"{n / 2**10:.1f} KiB"


def first_line(text, n: int = 200) -> str:
    return (str(text).strip().splitlines() or [""])[0][:n]


def free():
    gc.collect()
    if CTX.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# -- fixtures -------------------------------------------------------------------------------------
WORDS = ("the film was great awful and fine dull what comes after seven ? lora studio trains adapters "
         "on a gpu every step counts tokens").split()


def make_tokenizer():
    """Word-level tokenizer: <pad>=0 <unk>=1 <s>=2 </s>=3, then words and the numbers 0-2047."""
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<unk>", "<s>", "</s>"] + WORDS + [str(i) for i in range(2048)]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return T.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                     eos_token="</s>")


def save_model(model, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    make_tokenizer().save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def fixtures() -> dict:
    """Tiny llama (causal) and bert (classification) folders plus data files, built once per results folder."""
    import random

    import transformers as T

    r = CTX.root
    out = {"llama": r / "llama", "bert": r / "bert", "causal": r / "causal.jsonl", "cls": r / "cls.jsonl",
           "long": r / "long.jsonl"}
    if (r / "fixtures.done").exists():
        return out
    r.mkdir(parents=True, exist_ok=True)
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  vocab_size=2100, pad_token_id=0)
    torch.manual_seed(0)
    save_model(T.AutoModelForCausalLM.from_config(T.LlamaConfig(num_key_value_heads=2, bos_token_id=2,
                                                                eos_token_id=3, **common)), out["llama"])
    torch.manual_seed(0)
    save_model(T.AutoModelForSequenceClassification.from_config(T.BertConfig(**common)), out["bert"])
    rows = [{"prompt": f"what comes after {i} ?", "completion": " seven seven"} for i in range(64)]
    out["causal"].write_text("\n".join(json.dumps(x) for x in rows))
    rng = random.Random(0)
    rows = []
    for _ in range(160):  # the label follows the first adjective: learnable in a few steps
        good = rng.random() < 0.5
        rows.append({"text": f"the film was {'great' if good else 'awful'} and {rng.choice(['fine', 'dull'])}",
                     "label": "pos" if good else "neg"})
    out["cls"].write_text("\n".join(json.dumps(x) for x in rows))
    words = " ".join(str(i % 2048) for i in range(2100))
    out["long"].write_text("\n".join(json.dumps({"text": words}) for _ in range(512)))  # 512 x 2048: an OOM
    (r / "fixtures.done").write_text("ok")
    return out


def cfg(name, task="causal-lm", precision="bf16", device=None, model=None, lora=None, data=None, **train):
    """A RunConfig on the tiny models; evaluation and periodic checkpoints off unless asked."""
    from lora_studio.config import RunConfig

    fx = fixtures()
    if not CTX.cuda and precision in ("fp16", "bf16"):
        precision = "fp32" if precision == "fp16" else precision
    t = {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "eval_every": 0, "save_every": 0, "save_minutes": 0,
         "seed": 3, "device": device or CTX.dev, "precision": precision, **train}
    out = CTX.root / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    m = {"path": str(fx["llama" if task == "causal-lm" else "bert"]), "task": task, **(model or {})}
    lo = {"targets": ["q", "v"], "rank": 4, "alpha": 8, "dropout": 0.0, **(lora or {})}
    d = {"path": str(fx["causal" if task == "causal-lm" else "cls"]), "max_length": 32, "validation_split": 0.0,
         **(data or {})}
    return RunConfig().replace(model=m, lora=lo, data=d, train=t, out=str(out))


def run(c, resume=None):
    """train() as the GUI and the CLI call it: (last event, all events)."""
    from lora_studio.engine.train import train

    events = []
    return train(c, events.append, resume=resume), events


def finished(r) -> bool:
    return type(r).__name__ == "Finished"


def outcome(r) -> str:
    if finished(r):
        return f"Finished at step {r.step}"
    return f"{type(r).__name__} {getattr(r, 'kind', '')}: {first_line(getattr(r, 'message', ''), 160)}"


def cli(*args, env=None, timeout=240):
    """`python -m lora_studio ARGS` as a user types it: (exit code, stdout, stderr)."""
    import subprocess

    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
             **(env or {}))
    p = subprocess.run([sys.executable, "-m", "lora_studio", *args], capture_output=True, text=True, env=e,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# -- instrumentation ------------------------------------------------------------------------------
@contextlib.contextmanager
def probe():
    """Counts, without changing behaviour: CUDA host syncs by file:line (sync debug mode), target rows the
    fused loss finds on the device (a sync each), and the bytes each checkpoint gather returns."""
    import torch.distributed.checkpoint.state_dict as sd

    from lora_studio.engine import loss as L

    p = SimpleNamespace(syncs=0, where={}, device_rows=0, gathers=[])
    real_rows, real_get = L.target_rows, sd.get_model_state_dict

    def rows(labels):
        if sys._getframe(1).f_code.co_name == "causal_lm_loss":
            p.device_rows += 1
        return real_rows(labels)

    def get(model, *a, **k):
        out = real_get(model, *a, **k)
        p.gathers.append(sum(t.numel() * t.element_size() for t in out.values() if isinstance(t, torch.Tensor)))
        return out

    L.target_rows, sd.get_model_state_dict = rows, get
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        if CTX.cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield p
        finally:
            if CTX.cuda:
                torch.cuda.set_sync_debug_mode(0)
            L.target_rows, sd.get_model_state_dict = real_rows, real_get
            for x in w:
                if "synchroniz" in str(x.message):
                    p.syncs += 1
                    key = f"{Path(x.filename).name}:{x.lineno}"
                    p.where[key] = p.where.get(key, 0) + 1


@contextlib.contextmanager
def world1():
    """TEST HOOK: a world-size-1 process group (nccl on the GPU, gloo on a CPU) with Dist.many forced, so
    train() wraps the model in DDP / FSDP2 exactly as under torchrun, on one device: nccl, CUDA DTensors,
    the input move of DDP/FSDP2, their checkpoint gathers. train() destroys the group at its end."""
    import torch.distributed as td

    from lora_studio.engine import distributed as D

    if CTX.cuda:
        torch.cuda.set_device(0)
        td.init_process_group("nccl", store=td.HashStore(), rank=0, world_size=1, device_id=torch.device("cuda", 0))
    else:
        td.init_process_group("gloo", store=td.HashStore(), rank=0, world_size=1)
    old = D.Dist.__dict__["many"]
    D.Dist.many = property(lambda self: True)
    try:
        yield
    finally:
        D.Dist.many = old
        if td.is_initialized():
            td.destroy_process_group()


def loop_counts(name, mode=None, steps=(2, 6), accum=2, **train):
    """Two runs that differ only in their number of steps, logging only at the end: what grows with the
    steps is the loop's steady state. (syncs per step, device-side target rows per micro-batch, where, outcomes)."""
    counts, probes, outs = [], [], []
    for n in steps:
        c = cfg(f"{name}_{n}", max_steps=n, batch_size=4, grad_accum=accum, log_every=1000,
                **({"distributed": mode} if mode else {}), **train)
        with (world1() if mode else contextlib.nullcontext()), probe() as p:
            r, _ = run(c)
        outs.append(r)
        probes.append(p)
        counts.append((p.syncs, p.device_rows))
    d = steps[1] - steps[0]
    where = {k: probes[1].where.get(k, 0) - probes[0].where.get(k, 0) for k in probes[1].where}
    where = dict(sorted(((k, v) for k, v in where.items() if v > 0), key=lambda kv: -kv[1]))
    return (counts[1][0] - counts[0][0]) / d, (counts[1][1] - counts[0][1]) / (d * accum), where, outs
