"""The training loop: events out, stop/pause in, checkpoints and exact resume.

`train(config, on_event, control)` runs one run to its end (or to a stop) in the calling thread;
the GUI calls it from a worker thread, the CLI from the main one. Events are small dataclasses
holding Python numbers only, never live tensors, so they can cross threads as they are.

Exact resume: a checkpoint holds the adapter, the optimizer, scheduler and grad-scaler states,
every RNG state and the data position (epoch, micro-batch); the data order of an epoch is a pure
function of (seed, epoch). Resuming from step N therefore replays steps N+1… bit for bit on a CPU.
"""

from __future__ import annotations

import errno
import gc
import json
import math
import os
import random
import resource
import shutil
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lora_studio.config import RunConfig
from lora_studio.engine import UserError

STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.toml"
LABELS_FILE = "labels.json"


# -- events ---------------------------------------------------------------------------------
@dataclass
class Status:
    message: str


@dataclass
class Started:
    out: str
    total_steps: int
    start_step: int  # > 0 when resumed
    device: str  # "cuda", "cpu" …
    device_name: str  # "NVIDIA H100 80GB HBM3", "CPU (2 threads)"
    precision: str
    trainable_params: int
    total_params: int
    train_examples: int
    validation_examples: int
    task: str
    label_names: list[str] | None = None


@dataclass
class Step:
    step: int
    total_steps: int
    epoch: float
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    elapsed: float  # seconds since this process started the run
    eta: float  # seconds left at the current pace
    mem_allocated: int  # bytes: CUDA allocated, or process RSS on CPU
    mem_peak: int  # bytes: CUDA peak allocated, or peak RSS on CPU


@dataclass
class Eval:
    step: int
    eval_loss: float
    accuracy: float | None = None  # classification only


@dataclass
class Checkpoint:
    step: int
    path: str


@dataclass
class Spectra:
    step: int
    modules: list  # spectra.ModuleSpectrum (plain numbers)


@dataclass
class Paused:
    step: int


@dataclass
class Resumed:
    step: int


@dataclass
class Finished:
    step: int
    out: str
    stopped: bool  # True: stopped by the user before the last step (resumable)
    eval_loss: float | None = None
    accuracy: float | None = None


@dataclass
class Failed:
    message: str  # user-readable: what happened and what to do
    kind: str  # "oom" | "disk" (full: free space, then resume) | "user" | "bug"
    step: int = 0
    detail: str = ""  # traceback, for bugs


class Control:
    """Flags set from another thread (GUI, Ctrl-C handler), read by the loop between steps."""

    def __init__(self):
        self._stop = threading.Event()
        self._run = threading.Event()
        self._run.set()

    def stop(self):
        self._stop.set()
        self._run.set()  # a paused loop wakes up to stop

    def pause(self):
        self._run.clear()

    def resume(self):
        self._run.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._run.is_set()

    def wait_while_paused(self):
        while not self._run.wait(0.1):
            pass


# -- helpers --------------------------------------------------------------------------------
def memory(device: torch.device) -> tuple[int, int]:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        rss = peak
    return rss, peak


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"{device.type.upper()} ({torch.get_num_threads()} threads)"


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise UserError("fp16 training is for GPUs; on a CPU use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU has no bf16 support: use --precision fp16 or fp32")
    return precision


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return f


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((p for p in (run_dir / "checkpoints").glob("step-*") if (p / STATE_FILE).is_file()),
                   key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            break
    return out


# -- the run --------------------------------------------------------------------------------
@dataclass
class Setup:
    """Everything a run needs, loaded once (model, tokenizer, data)."""

    config: RunConfig
    model: torch.nn.Module
    tokenizer: object
    data: object  # data.Prepared
    device: torch.device
    precision: str
    model_ref: str
    adapted: list[str] = field(default_factory=list)


def model_ref(config: RunConfig) -> str:
    from lora_studio.engine.models import demo_model_path

    if config.model.path:
        return config.model.path
    if config.model.task != "classification":
        raise UserError("the demo model is an encoder (classification only): give a causal LM with --model")
    return demo_model_path()


def setup(config: RunConfig, emit: Callable = lambda e: None, label_names=None) -> Setup:
    from lora_studio.engine import data as data_mod
    from lora_studio.engine.lora import LoraSpec, inject
    from lora_studio.engine.models import load_model, load_tokenizer, resolve_device
    from lora_studio.engine.targets import parse_layers

    ref = model_ref(config)
    device = resolve_device(config.train.device)
    precision = resolve_precision(config.train.precision, device)
    torch.manual_seed(config.train.seed)
    random.seed(config.train.seed)
    emit(Status(f"loading tokenizer of {ref}"))
    tok = load_tokenizer(ref, config.model.trust_remote_code)
    dcfg = config.data
    if not dcfg.path:
        train_path, val_path = data_mod.demo_path(config.model.task)
        dcfg = type(dcfg)(**{**asdict(dcfg), "path": train_path, "validation_path": val_path})
    emit(Status(f"tokenizing {dcfg.path}"))
    prepared = data_mod.prepare(dcfg, tok, config.model.task, seed=config.train.seed, label_names=label_names)
    if not prepared.train:
        raise UserError(f"{dcfg.path} has no usable training examples after tokenization")
    emit(Status(f"loading model {ref}"))
    # Frozen base in the compute dtype on GPUs (half the memory); fp32 on CPUs. Adapters stay fp32.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32) \
        if device.type == "cuda" else torch.float32
    names = prepared.label_names
    model = load_model(ref, config.model.task, dtype=dtype, device=device,
                       id2label=dict(enumerate(names)) if names else None,
                       allow_pickle=config.model.allow_pickle, trust_remote_code=config.model.trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    lc = config.lora
    spec = LoraSpec(targets=lc.targets, rank=lc.rank, alpha=lc.alpha, dropout=lc.dropout,
                    layers=parse_layers(lc.layers), rslora=lc.rslora,
                    modules_to_save=["classifier", "score"] if config.model.task == "classification" else [])
    torch.manual_seed(config.train.seed)
    adapted = inject(model, spec)
    from lora_studio.engine.fast import speed_up

    speed_up(model, device)  # fused GELU-tanh everywhere; the fast dropout on CPUs
    if config.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Setup(config, model, tok, prepared, device, precision, ref, adapted)


def evaluate(s: Setup, batch_size: int) -> tuple[float, float | None]:
    from lora_studio.engine.data import collate

    examples = s.data.validation
    if not examples:
        return float("nan"), None
    model, was_training = s.model, s.model.training
    model.eval()
    total, weight, correct = 0.0, 0, 0
    classify = s.config.model.task == "classification"
    with torch.no_grad(), autocast(s):
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(s.device) for k, v in collate(examples[i:i + batch_size], s.tokenizer.pad_token_id).items()}
            out = model(**batch)
            if classify:
                n = batch["labels"].numel()
                correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
            else:
                n = int((batch["labels"][:, 1:] != -100).sum().item())
            total += out.loss.float().item() * n  # sync point
            weight += n
    model.train(was_training)
    return total / max(weight, 1), (correct / max(weight, 1) if classify else None)


def autocast(s: Setup):
    if s.precision in ("bf16", "fp16"):
        return torch.autocast(s.device.type, dtype=torch.bfloat16 if s.precision == "bf16" else torch.float16)
    return torch.autocast(s.device.type, enabled=False)


def save_checkpoint(s: Setup, run_dir: Path, state: dict, keep: int) -> Path:
    """checkpoints/step-N/ written as .tmp-step-N and renamed: a kill never leaves half of one."""
    from lora_studio.engine.adapters import save_adapter

    root = run_dir / "checkpoints"
    final = root / f"step-{state['step']}"
    tmp = root / f".tmp-step-{state['step']}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(s.model, tmp, s.model_ref)
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    old = sorted((p for p in root.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def write_run_files(s: Setup, run_dir: Path):
    from lora_studio.engine.adapters import atomic_write_json, save_adapter

    save_adapter(s.model, run_dir, s.model_ref)
    s.config.save(run_dir / RUN_FILE)
    if s.data.label_names:
        atomic_write_json(run_dir / LABELS_FILE, s.data.label_names)


def train(config: RunConfig, on_event: Callable | None = None, control: Control | None = None,
          resume: str | os.PathLike | None = None, spectra_every: int = 0) -> Finished | Failed:
    """Run `config` to the end or to a stop. With `resume`, continue that run folder from its
    newest checkpoint. Every outcome is an event; the return value is the last one."""
    user_emit = on_event or (lambda e: None)
    control = control or Control()
    s = None
    reached = {"step": 0}  # the last step reported, for a failure's "at step N"

    def emit(e):
        if isinstance(e, Step):
            reached["step"] = e.step
        elif isinstance(e, Started):
            reached["step"] = e.start_step
        user_emit(e)

    try:
        run_dir = Path(resume or config.out or "")
        if not str(run_dir):
            raise UserError("no run folder: give --out DIR")
        state = None
        if resume:
            ckpt = latest_checkpoint(run_dir)
            if ckpt is None:
                raise UserError(f"{run_dir} has no checkpoint to resume from (checkpoints/step-N)")
            state = torch.load(ckpt / STATE_FILE, weights_only=True)
        labels = json.loads((run_dir / LABELS_FILE).read_text()) if resume and (run_dir / LABELS_FILE).is_file() else None
        s = setup(config, emit, label_names=labels)
        result = _loop(s, run_dir, emit, control, state, ckpt if resume else None, spectra_every)
        return result
    except UserError as e:
        ev = Failed(str(e), "user", reached["step"])
    except torch.cuda.OutOfMemoryError as e:
        ev = Failed(oom_message(config, e), "oom", reached["step"])
    except MemoryError:
        ev = Failed(oom_message(config, None), "oom", reached["step"])
    except OSError as e:
        ev = disk_failure(e, resume or config.out, reached["step"])
    except Exception as e:  # a bug: say so, keep the caller alive
        ev = Failed(f"{type(e).__name__}: {e}", "bug", reached["step"], traceback.format_exc())
    finally:
        if s is not None and s.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
    emit(ev)
    return ev


def disk_failure(e: OSError, run_dir, step: int) -> Failed:
    """A full disk or an unwritable folder is the user's to fix, and the run stays resumable:
    checkpoints are written to a temp name and renamed, so the last complete one is intact."""
    where = e.filename or run_dir
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return Failed(f"the disk is full (writing {where}): free some space, then resume the run "
                      f"(lora-studio train --resume {run_dir})", "disk", step)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Failed(f"cannot write {where}: {e.strerror}; choose a run folder you can write to", "user", step)
    return Failed(f"{type(e).__name__}: {e}", "bug", step, traceback.format_exc())


def oom_message(config: RunConfig, err) -> str:
    t, d = config.train, config.data
    where = "GPU memory" if err is not None else "host memory"
    tips = [f"lower the batch size (now {t.batch_size}; raise grad accumulation to keep the effective batch)",
            f"shorten max length (now {d.max_length})"]
    if not t.gradient_checkpointing:
        tips.append("turn on gradient checkpointing")
    if t.precision in ("fp32", "auto") and torch.cuda.is_available():
        tips.append("train in bf16")
    return f"out of {where} at batch {t.batch_size} x {d.max_length} tokens: " + "; ".join(tips) + \
        ". The last checkpoint is kept: resume after changing the setting."


def _loop(s: Setup, run_dir: Path, emit, control: Control, state: dict | None, ckpt: Path | None,
          spectra_every: int) -> Finished:
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.data import collate
    from lora_studio.engine.lora import trainable_parameters
    from lora_studio.engine.loss import training_loss

    cfg, t = s.config, s.config.train
    model, device = s.model, s.device
    train_ex = s.data.train
    n, bs, accum = len(train_ex), t.batch_size, t.grad_accum
    batches_per_epoch = math.ceil(n / bs)
    total = t.max_steps or max(1, math.ceil(t.epochs * batches_per_epoch / accum))
    warmup = t.warmup_steps or int(t.warmup_ratio * total)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.schedule, warmup, total))
    scaler = torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")
    step, epoch, pos = 0, 0, 0
    run_dir.mkdir(parents=True, exist_ok=True)
    if state is not None:
        load_adapter(model, ckpt)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        # the curve continues the one before the checkpoint: drop what was logged after it
        kept = [m for m in read_metrics(run_dir) if m.get("step", 0) <= step]
        (run_dir / METRICS_FILE).write_text("".join(json.dumps(m) + "\n" for m in kept))
    else:
        (run_dir / METRICS_FILE).write_text("")
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    write_run_files(s, run_dir)
    total_params = sum(p.numel() for p in model.parameters())
    emit(Started(str(run_dir), total, step, device.type, device_name(device), s.precision,
                 sum(p.numel() for p in params), total_params, n, len(s.data.validation),
                 cfg.model.task, s.data.label_names))
    metrics = open(run_dir / METRICS_FILE, "a")
    pad = s.tokenizer.pad_token_id
    order = epoch_order(n, t.seed, epoch)
    eval_bs = max(bs, 16)

    def log(record: dict):
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()

    def checkpoint() -> Path:
        st = {"step": step, "epoch": epoch, "pos": pos, "optimizer": optimizer.state_dict(),
              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state()}
        path = save_checkpoint(s, run_dir, st, t.keep_checkpoints)
        emit(Checkpoint(step, str(path)))
        return path

    last_eval = (None, None)
    if state is not None:
        set_rng_state(state["rng"])
    elif s.data.validation and t.eval_every > 0:
        last_eval = evaluate(s, eval_bs)
        emit(Eval(0, *last_eval))
        log({"step": 0, "eval_loss": last_eval[0], **({"accuracy": last_eval[1]} if last_eval[1] is not None else {})})
        set_rng_state(rng_state())
    model.train()
    t_start = time.perf_counter()
    start_step = step
    try:
        while step < total:
            t0 = time.perf_counter()
            loss_sum, tokens = 0.0, 0
            for _ in range(accum):
                if pos >= batches_per_epoch:
                    epoch, pos = epoch + 1, 0
                    order = epoch_order(n, t.seed, epoch)
                idx = order[pos * bs:(pos + 1) * bs]
                pos += 1
                batch = {k: v.to(device, non_blocking=True) for k, v in collate([train_ex[i] for i in idx], pad).items()}
                tokens += int(batch["attention_mask"].sum())
                with autocast(s):
                    loss = training_loss(model, batch) / accum
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm if t.max_grad_norm > 0 else float("inf"))
            scaler.step(optimizer)
            scaler.update()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_value = float(loss_sum)  # sync point: the GPU finishes the step here
            now = time.perf_counter()
            dt = now - t0
            if step % t.log_every == 0 or step == total:
                elapsed = now - t_start
                rate = elapsed / max(1, step - start_step)
                alloc, peak = memory(device)
                ev = Step(step, total, epoch + pos / batches_per_epoch, loss_value, lr, float(norm),
                          tokens / dt if dt > 0 else 0.0, elapsed, rate * (total - step), alloc, peak)
                log({"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": ev.tokens_per_s,
                     "time": time.time(), "epoch": ev.epoch, "grad_norm": ev.grad_norm,
                     "mem_allocated": alloc, "mem_peak": peak})
                emit(ev)
            if s.data.validation and ((t.eval_every and step % t.eval_every == 0) or step == total):
                last_eval = evaluate(s, eval_bs)
                emit(Eval(step, *last_eval))
                log({"step": step, "eval_loss": last_eval[0],
                     **({"accuracy": last_eval[1]} if last_eval[1] is not None else {})})
            if spectra_every and step % spectra_every == 0:
                emit_spectra(model, step, emit)
            if t.save_every and step % t.save_every == 0 and step < total:
                checkpoint()
            if control.paused and not control.stop_requested:
                emit(Paused(step))
                control.wait_while_paused()
                if not control.stop_requested:
                    emit(Resumed(step))
            if control.stop_requested and step < total:
                checkpoint()
                write_run_files(s, run_dir)
                ev = Finished(step, str(run_dir), True, *last_eval)
                emit(ev)
                return ev
    except (torch.cuda.OutOfMemoryError, MemoryError):
        optimizer.zero_grad(set_to_none=True)
        raise
    finally:
        metrics.close()
    checkpoint()
    write_run_files(s, run_dir)
    if spectra_every:
        emit_spectra(model, step, emit)
    ev = Finished(step, str(run_dir), False, *last_eval)
    emit(ev)
    return ev


def emit_spectra(model, step: int, emit):
    try:
        from lora_studio.engine.spectra import analyse
    except ImportError:
        return
    emit(Spectra(step, analyse(model)))
