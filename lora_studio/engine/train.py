"""The training loop: events out, stop/pause in, checkpoints and exact resume.

`train(config, on_event, control)` runs one run to its end (or to a stop) in the calling thread;
the GUI calls it from a worker thread, the CLI from the main one. Events (engine/events.py) hold
Python numbers only, never live tensors, so they cross threads as they are. The run folder's
names and rules live in engine/runfolder.py, checkpoints in engine/checkpoint.py, loading and
evaluation in engine/setup.py.

The loop waits for the GPU only on steps it logs, evaluates or checkpoints (as nanoGPT does).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Callable

import torch

from lora_studio.config import RunConfig
from lora_studio.engine.checkpoint import epoch_order, load_latest, rng_state, save_checkpoint, set_rng_state
from lora_studio.engine.errors import Failure, NonFiniteLoss, failure_of
from lora_studio.engine.events import (Checkpoint, Control, Eval, Failed, Finished, Paused, Resumed, Spectra,
                                       Started, Status, Step)
from lora_studio.engine.runfolder import (LABELS_FILE, METRICS_FILE, RUN_FILE, discard_new_run, latest_checkpoint,
                                          metrics_line,
                                          prepare_new_run, read_labels, read_metrics, with_absolute_paths,
                                          write_run_state)
from lora_studio.engine.setup import (Setup, Stopped, autocast, device_name, evaluate, memory, release, setup,
                                      to_device)

# names other modules and users' scripts import from here
from lora_studio.engine.events import Evaluating  # noqa: F401,E402
from lora_studio.engine.runfolder import STATE_FILE, model_ref  # noqa: F401,E402
from lora_studio.engine.setup import resolve_precision  # noqa: F401,E402


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


def write_run_files(s: Setup, run_dir: Path, adapter: bool = True):
    """run.toml, labels.json and (once something was trained) the adapter at the folder's top."""
    from lora_studio.engine.adapters import atomic_write_json, save_adapter

    if adapter:
        save_adapter(s.model, run_dir, s.model_ref)
    s.config.save(run_dir / RUN_FILE)
    if s.data.label_names:
        atomic_write_json(run_dir / LABELS_FILE, s.data.label_names)


def train(config: RunConfig, on_event: Callable | None = None, control: Control | None = None,
          resume: str | Path | None = None, spectra_every: int = 0, overwrite: bool = False) -> Finished | Failure:
    """Run `config` to the end or to a stop. With `resume`, continue that run folder from its newest
    readable checkpoint (`config` is the run's own, possibly with more steps). A new run refuses a
    folder that already holds files unless `overwrite`. Every outcome is an event; the return value
    is the last one."""
    from lora_studio.engine.distributed import Dist
    from lora_studio.engine.tblog import with_tensorboard

    dist = Dist.from_env(config.train.device)  # [dist] one process: every call below is a no-op
    user_emit = with_tensorboard(on_event or (lambda e: None), config) if dist.main else (lambda e: None)
    control = control or Control()
    s = None
    reached = {"step": 0, "total": 0}  # the last step reported, for a failure's "at step N"
    run_dir = None
    fresh = False  # this call made the run folder: a run refused before its first step removes it

    def emit(e):
        if isinstance(e, Step):
            reached["step"] = e.step
        elif isinstance(e, Started):
            reached["step"], reached["total"] = e.start_step, e.total_steps
        user_emit(e)

    try:
        if resume:
            run_dir = Path(resume).expanduser().resolve()
            ckpt, state, notes = load_latest(run_dir)
            for note in notes:
                emit(Status(note))
            if ckpt is None:
                notes.append("no checkpoint was saved yet: the run starts again from step 0")
            config = config.replace(out=str(run_dir))
        else:
            config = with_absolute_paths(config)
            fresh = not Path(config.out).expanduser().exists()
            run_dir = prepare_new_run(config.out, overwrite) if dist.main else Path(config.out)
            ckpt, state, notes = None, None, []
        if dist.main:  # [dist] rank 0 alone writes the run folder
            config.save(run_dir / RUN_FILE)
            write_run_state(run_dir, "running", state["step"] if state else 0, 0, "loading")
        s = setup(config, emit, label_names=read_labels(run_dir) if resume else None, control=control)
        return _loop(s, run_dir, emit, control, state, ckpt, spectra_every, notes, dist)
    except Stopped:
        ev = Finished(reached["step"], str(run_dir), True)
    except NonFiniteLoss as e:
        ev = failure_of(e)
    except BaseException as e:  # noqa: BLE001 - every outcome is an event; the caller stays alive
        if isinstance(e, KeyboardInterrupt) and not isinstance(e, Exception):
            control.stop()
        ev = _failure(e, config, run_dir, reached["step"])
    finally:
        control.drop_calls("the run has ended")
        release(s)
        dist.close()
    if not dist.main:  # [dist] rank 0 alone writes the run folder
        pass
    elif fresh and isinstance(ev, Failure) and ev.kind == "user" and reached["step"] == 0 and run_dir.is_dir():
        discard_new_run(run_dir)
    elif run_dir is not None and run_dir.is_dir():
        try:
            state = "stopped" if isinstance(ev, Finished) else "failed"
            write_run_state(run_dir, state, ev.step, reached["total"], getattr(ev, "message", ""))
        except OSError:
            pass
    emit(ev)
    return ev


def _failure(e: BaseException, config: RunConfig, run_dir, step: int) -> Failure:
    f = failure_of(e, step, str(run_dir or config.out))
    if f.kind == "oom":
        f.message = oom_message(config, gpu=type(e).__name__ == "OutOfMemoryError")
    elif f.kind == "disk":
        if run_dir is not None and latest_checkpoint(run_dir) is not None:
            f.message += f", then resume the run (lora-studio train --resume {run_dir})"
        else:
            f.message += "; nothing was saved yet, so start the run again once there is room"
    return f


def oom_message(config: RunConfig, gpu: bool) -> str:
    t, d = config.train, config.data
    where = "GPU memory" if gpu else "host memory"
    tips = [f"lower the batch size (now {t.batch_size}; raise grad accumulation to keep the effective batch)",
            f"shorten max length (now {d.max_length})"]
    if not t.gradient_checkpointing:
        tips.append("turn on gradient checkpointing")
    if gpu and t.precision == "fp32":
        tips.append("train in bf16 (or fp16 on GPUs without bf16)")
    return f"out of {where} at batch {t.batch_size} x {d.max_length} tokens: " + "; ".join(tips) + \
        ". The last checkpoint is kept: resume after changing the setting."


def _nonfinite(step: int, value: float, what: str, lr: float, ckpt) -> NonFiniteLoss:
    kept = f"the last finite checkpoint ({ckpt.name}) is kept" if ckpt else "no checkpoint was saved"
    return NonFiniteLoss(f"the {what} became {value} at step {step}: lower the learning rate (now {lr:.3g}), "
                         f"use fp32 or bf16 rather than fp16, or check the data for empty or extreme examples; "
                         f"{kept}, and nothing was exported from this run", step)


def _loop(s: Setup, run_dir: Path, emit, control: Control, state: dict | None, ckpt: Path | None,
          spectra_every: int, notes: list[str], dist=None) -> Finished:
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.data import collate
    from lora_studio.engine.lora import trainable_parameters
    from lora_studio.engine.loss import training_loss

    from lora_studio.engine.distributed import Dist

    dist = dist or Dist()
    cfg, t = s.config, s.config.train
    model, device = s.model, s.device
    train_ex = s.data.train
    n, bs, accum = len(train_ex), t.batch_size, t.grad_accum
    gbs = bs * dist.world  # [dist] a micro-batch's examples over all processes
    kept_gbs = (state or {}).get("global_batch", gbs)
    if kept_gbs != gbs:  # [dist] resumed on another number of processes: keep the run's global batch
        if kept_gbs % dist.world:
            from lora_studio.engine.errors import UserError

            raise UserError(f"this run's micro-batch holds {kept_gbs} examples over all processes, which "
                            f"{dist.world} processes cannot share evenly: resume with a number of processes "
                            f"that divides {kept_gbs}")
        notes.append(f"the run's micro-batch of {kept_gbs} examples is kept: batch size {kept_gbs // dist.world} "
                     f"per process (was {bs}) on {dist.world} process{'es' if dist.many else ''}")
        bs, gbs = kept_gbs // dist.world, kept_gbs
    batches_per_epoch = math.ceil(n / gbs)
    total = t.max_steps or max(1, math.ceil(t.epochs * batches_per_epoch / accum))
    warmup = t.warmup_steps or int(t.warmup_ratio * total)
    if state is not None:
        load_adapter(model, ckpt)  # before wrapping: FSDP2 shards what was loaded
    if dist.many:
        emit(Status(dist.wrap(model, t.distributed, device)))
    params = trainable_parameters(model)
    from lora_studio.engine.quantize import make_optimizer
    from lora_studio.engine.variants import optimizer_groups

    optimizer = make_optimizer(t.optimizer, optimizer_groups(model, t.lr, t.loraplus_ratio), t.lr, t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.schedule, warmup, total))
    scaler = torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")
    step, epoch, pos, elapsed_before = 0, 0, 0, 0.0
    if state is not None:
        dist.load_optimizer(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        elif scaler.is_enabled():
            notes.append("the checkpoint had no fp16 loss scale: it starts again from the default")
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        elapsed_before = float(state.get("elapsed", 0.0))
        if step >= total:
            notes.append(f"the run already reached step {step} of {total}: give more --max-steps or --epochs "
                         "to train further")
        # the curve continues the one before the checkpoint: drop what was logged after it
        kept = [m for m in read_metrics(run_dir) if m.get("step", 0) <= step]
        from lora_studio.engine.atomic import atomic_write_bytes

        if dist.main:
            atomic_write_bytes(run_dir / METRICS_FILE, "".join(metrics_line(m) for m in kept).encode())
    elif dist.main:
        (run_dir / METRICS_FILE).write_text("")
    if dist.main:
        write_run_files(s, run_dir, adapter=False)
        write_run_state(run_dir, "running", step, total)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    emit(Started(str(run_dir), total, step, device.type, device_name(device), s.precision,
                 sum(p.numel() for p in params), sum(p.numel() for p in model.parameters()), n,
                 len(s.data.validation), cfg.model.task, s.data.label_names, elapsed_before, notes or None))
    metrics = open(run_dir / METRICS_FILE if dist.main else os.devnull, "a", encoding="utf-8")
    pad = s.tokenizer.pad_token_id
    order = epoch_order(n, t.seed, epoch)

    def evals_left(at: int) -> int:  # evaluations still to come after step `at` (the last step always has one)
        if not s.data.validation or at >= total:
            return 0
        every = (total // t.eval_every - at // t.eval_every) if t.eval_every else 0
        return every + (0 if t.eval_every and total % t.eval_every == 0 else 1)

    eval_seconds = 0.0  # duration of the last evaluation, for the time-left estimate

    def log(record: dict):
        metrics.write(metrics_line(record))
        metrics.flush()

    def run_eval() -> tuple[float, float | None]:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        with dist.full_root():  # [dist] every rank evaluates the whole validation set
            result = evaluate(s, bs, step, emit, control)
        eval_seconds = time.perf_counter() - t0
        emit(Eval(step, *result))
        log({"step": step, "eval_loss": result[0], **({"accuracy": result[1]} if result[1] is not None else {}),
             "time": time.time()})
        return result

    last_ckpt = {"path": ckpt, "time": time.monotonic()}

    def checkpoint() -> Path:
        adapter, opt = dist.gather(model, optimizer)  # [dist] collective: the full state, on CPU
        st = {"step": step, "epoch": epoch, "pos": pos, "global_batch": gbs,
              "optimizer": opt or optimizer.state_dict(),
              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
              "elapsed": elapsed_before + time.perf_counter() - t_start}
        if not dist.main:
            return run_dir
        with dist.full_params(model, adapter):
            path = save_checkpoint(model, s.model_ref, run_dir, st, t.keep_checkpoints)
        last_ckpt.update(path=path, time=time.monotonic())
        emit(Checkpoint(step, str(path)))
        return path

    last_eval = (None, None)
    t_start = time.perf_counter()
    if state is not None:
        note = set_rng_state(state["rng"])
        if note:
            emit(Status(note))
    elif s.data.validation and t.eval_every > 0:
        last_eval = run_eval()
    dist.seed(t.seed, step)
    model.train()
    t_start = time.perf_counter()  # the baseline evaluation is not training time
    start_step = step
    recent = deque(maxlen=50)  # seconds per step, the last 50: the estimate forgets a slow start
    loss_value = float("nan")
    stopping = False
    try:
        while step < total:
            # [dist] with several processes only the stop all ranks agreed on counts: they stop together
            if (stopping if dist.many else control.stop_requested):
                break
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            tokens = torch.zeros((), dtype=torch.long, device=device)
            for k in range(accum):
                if pos >= batches_per_epoch:
                    epoch, pos = epoch + 1, 0
                    order = epoch_order(n, t.seed, epoch)
                idx, real = dist.shard(order[pos * gbs:(pos + 1) * gbs], bs)
                pos += 1
                batch = to_device(collate([train_ex[i] for i in idx], pad), device)
                tokens += batch["attention_mask"].sum() if real else 0
                with dist.sync(last=k == accum - 1):  # [dist] no gradient reduction before the last
                    with dist.autocast(s):
                        if dist.many:  # [dist] token-weighted: the ranks' average is the global mean
                            loss = dist.loss(model, batch) * dist.weight(_count(batch) if real else
                                                                         torch.zeros((), device=device)) / accum
                        else:
                            loss = training_loss(model, batch) / accum
                    scaler.scale(loss).backward()
                loss_sum += loss.detach().float()
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm if t.max_grad_norm > 0 else float("inf"))
            scaler.step(optimizer)
            scaler.update()
            lr = scheduler.get_last_lr()[0]
            with warnings.catch_warnings():  # a skipped fp16 step makes the scheduler warn; that is expected
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            now = time.monotonic()
            timed = t.save_minutes and now - last_ckpt["time"] >= 60 * t.save_minutes
            # [dist] every rank takes the same branches below (they hold collectives); one process: as is
            stopping, timed = dist.agree(control.stop_requested, timed)
            eval_due = bool(s.data.validation) and ((t.eval_every and step % t.eval_every == 0) or step == total)
            save_due = step < total and ((t.save_every and step % t.save_every == 0) or
                                         timed)
            log_due = step % t.log_every == 0 or step == total
            if log_due or eval_due or save_due or stopping or control.paused:
                loss_value = float(dist.reduce_sum(loss_sum)) / dist.world  # sync point: the GPU finishes the step
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
                if not math.isfinite(loss_value):
                    raise _nonfinite(step, loss_value, "loss", lr, last_ckpt["path"])
                if not math.isfinite(grad_norm) and not scaler.is_enabled():
                    raise _nonfinite(step, grad_norm, "gradient norm", lr, last_ckpt["path"])
                dt = time.perf_counter() - t0
                if log_due:
                    elapsed = elapsed_before + time.perf_counter() - t_start
                    per_step = sum(recent) / len(recent) if recent else dt
                    # this step's own evaluation (eval_due) runs after the event: it is still to come
                    eta = per_step * (total - step) + eval_seconds * (evals_left(step) + eval_due)
                    alloc, peak = memory(device)
                    ev = Step(step, total, epoch + pos / batches_per_epoch, loss_value, lr, grad_norm,
                              float(dist.reduce_sum(tokens)) / dt if dt > 0 else 0.0, elapsed, eta, alloc, peak)
                    log({"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": ev.tokens_per_s,
                         "time": time.time(), "epoch": ev.epoch, "grad_norm": grad_norm,
                         "mem_allocated": alloc, "mem_peak": peak})
                    emit(ev)
                recent.append(time.perf_counter() - t0)  # the whole step: its logging and event included
            if eval_due:
                last_eval = run_eval()
            if spectra_every and step % spectra_every == 0:
                emit_spectra(model, step, emit)
            if save_due:
                checkpoint()
            if control.paused and not control.stop_requested and not dist.many:  # [dist] no pause
                emit(Paused(step))
                control.wait_while_paused(s)
                model.train()
                if not control.stop_requested:
                    emit(Resumed(step))
    except (torch.cuda.OutOfMemoryError, MemoryError):
        optimizer.zero_grad(set_to_none=True)
        raise
    finally:
        metrics.close()
    stopped = step < total
    if step > start_step or state is None:
        checkpoint()
    if dist.main:
        with dist.full_params(model, dist.gather(model, optimizer)[0]):
            write_run_files(s, run_dir)
        write_run_state(run_dir, "stopped" if stopped else "finished", step, total)
        from lora_studio.engine.fit import record_peak

        record_peak(run_dir, s.model_ref, cfg, model.lora_studio_spec, s.precision, device.type, memory(device)[1],
                    s.data.label_names)  # memory.json: the planner's estimate and the measured peak
    else:
        dist.gather(model, optimizer)  # [dist] collective: rank 0 gathers the final adapter
    if spectra_every and not stopped:
        emit_spectra(model, step, emit)
    ev = Finished(step, str(run_dir), stopped, *last_eval, mem_peak=memory(device)[1])
    emit(ev)
    return ev


def _count(batch: dict) -> torch.Tensor:
    """What a micro-batch's mean loss is over: target tokens (causal LM), or examples."""
    labels = batch["labels"]
    return (labels[:, 1:] != -100).sum() if labels.dim() == 2 else torch.tensor(labels.shape[0], device=labels.device)


def emit_spectra(model, step: int, emit):
    from lora_studio.engine.spectra import analyse

    emit(Spectra(step, analyse(model)))


__all__ = ["train", "Control", "Started", "Step", "Eval", "Checkpoint", "Spectra", "Paused", "Resumed",
           "Finished", "Failed", "Status", "read_metrics", "latest_checkpoint", "lr_lambda"]
