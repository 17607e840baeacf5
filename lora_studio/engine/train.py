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
from lora_studio.engine.inits import read_principal
from lora_studio.engine.run_errors import _failure, _no_gradient, _nonfinite, oom_message  # noqa: F401
from lora_studio.engine.events import (Checkpoint, Control, Eval, Failed, Finished, Paused, Resumed, Spectra,
                                       Started, Status, Step)
from lora_studio.engine.runfolder import (CHAT_FILE, LABELS_FILE, METRICS_FILE, RUN_FILE, check_not_training, discard_new_run,
                                          latest_checkpoint, metrics_line, prepare_new_run, read_labels,
                                          read_metrics, trim_metrics, with_absolute_paths, write_run_state)
from lora_studio.engine.setup import Setup, Stopped, device_name, evaluate_stats, memory, release, setup, to_device

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
    if s.data.chat:  # a chat run (runfolder.is_chat_run)
        from lora_studio.engine.generate import chat_record

        atomic_write_json(run_dir / CHAT_FILE, chat_record(s.tokenizer))
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
            check_not_training(Path(resume).expanduser().resolve())  # another live process trains it
            run_dir = Path(resume).expanduser().resolve()
            ckpt, state, notes = load_latest(run_dir)
            for note in notes:
                emit(Status(note))
            if ckpt is None:
                notes.append("no checkpoint was saved yet: the run starts again from step 0")
            config = config.replace(out=str(run_dir))
            if ckpt is not None and config.data.chat_template and not (run_dir / CHAT_FILE).is_file():
                # trained before prompt/completion went through the chat template: it keeps plain text
                config = config.replace(data={"chat_template": False})
        else:
            config = with_absolute_paths(config)
            fresh = not Path(config.out).expanduser().exists()
            run_dir = prepare_new_run(config.out, overwrite) if dist.main else Path(config.out)
            ckpt, state, notes = None, None, []
        if dist.main:  # [dist] rank 0 alone writes the run folder
            config.save(run_dir / RUN_FILE)
            write_run_state(run_dir, "running", state["step"] if state else 0, 0, "loading")
        s = setup(config, emit, label_names=read_labels(run_dir) if resume else None, control=control,
                  principal=read_principal(ckpt) if resume and ckpt is not None else None)
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
    if dist.main and fresh and isinstance(ev, Failure) and ev.kind == "user" and reached["step"] == 0 \
            and run_dir is not None and run_dir.is_dir():  # None: the folder could not even be made
        discard_new_run(run_dir)
    elif dist.main and run_dir is not None and run_dir.is_dir():  # rank 0 alone writes the run folder
        try:
            state = "stopped" if isinstance(ev, Finished) else "failed"
            write_run_state(run_dir, state, ev.step, reached["total"], getattr(ev, "message", ""))
        except OSError:
            pass
    emit(ev)
    return ev


def _loop(s: Setup, run_dir: Path, emit, control: Control, state: dict | None, ckpt: Path | None,
          spectra_every: int, notes: list[str], dist=None) -> Finished:
    from lora_studio.engine.distributed import Dist

    return Loop(s, run_dir, emit, control, dist or Dist(), spectra_every).run(state, ckpt, notes)


class Loop:
    """One run's training state and the named parts of its loop: `restore` (batch plan, optimizer,
    resume), `baseline`, then per step `micro_batches` -> `optimizer_step` -> `after_step` (which
    `report`s, evaluates, checkpoints, pauses), and `finish`. The loss is the Setup's objective
    (engine/objective.py); whatever differs with several processes is asked of `dist`
    (engine/distributed.py `Dist`: every call is a no-op in one process)."""

    def __init__(self, s: Setup, run_dir: Path, emit, control: Control, dist, spectra_every: int = 0):
        from lora_studio.engine.tasks import objective_for

        self.s, self.run_dir, self.emit, self.control, self.dist = s, run_dir, emit, control, dist
        self.t, self.model, self.device = s.config.train, s.model, s.device
        self.objective = s.objective or objective_for(s.config)
        self.spectra_every = spectra_every
        self.step = self.epoch = self.pos = 0
        self.elapsed_before = self.eval_seconds = 0.0  # eval_seconds: the last evaluation, for the ETA
        self.last_eval = (None, None)
        self.recent = deque(maxlen=50)  # seconds per step, the last 50: the estimate forgets a slow start
        self.stopping = False  # the stop all processes agreed on at the last step
        self.learned = False  # a non-zero gradient norm was seen (on a reported step)
        self.t_start = time.perf_counter()
        from lora_studio.engine import flops

        # MFU on a listed GPU (engine/flops.py states the FLOP convention); None elsewhere
        self.peak = flops.peak_flops(s.device, s.precision)
        self.flops = flops.count(s.model) if self.peak else None

    def run(self, state: dict | None, ckpt: Path | None, notes: list[str]) -> Finished:
        self.restore(state, ckpt, notes)
        self.baseline(state)
        start_step = self.step
        self.synced = (time.perf_counter(), self.step)  # the last moment the host waited for the device
        try:
            while self.step < self.total and not self.dist.should_stop(self.control, self.stopping):
                t0 = time.perf_counter()
                done = self.micro_batches()
                lr, norm = self.optimizer_step()
                self.after_step(t0, done, lr, norm)
        except (torch.cuda.OutOfMemoryError, MemoryError):
            self.optimizer.zero_grad(set_to_none=True)
            raise
        finally:
            self.metrics.close()
        if self.step >= self.total and self.step > start_step and not self.learned:
            raise _no_gradient(self.s, self.step)  # the adapter never changed: no "done"
        return self.finish(self.step > start_step or state is None)

    # -- before the first step ------------------------------------------------------------------
    def restore(self, state: dict | None, ckpt: Path | None, notes: list[str]):
        """The batch plan, the optimizer and its schedule, and (resuming) their saved state;
        metrics.jsonl cut back to the checkpoint; the run files; `Started`."""
        from lora_studio.engine.adapters import load_adapter
        from lora_studio.engine.lora import trainable_parameters
        from lora_studio.engine.optim import build_optimizer

        s, t, dist, model = self.s, self.t, self.dist, self.model
        self.n, self.accum = len(s.data.train), t.grad_accum
        self.bs, note = dist.per_process_batch(t.batch_size, (state or {}).get("global_batch"))
        if note:
            notes.append(note)
        self.gbs = self.bs * dist.world  # a micro-batch's examples over all processes
        self.batches_per_epoch = math.ceil(self.n / self.gbs)
        self.total = t.max_steps or max(1, math.ceil(t.epochs * self.batches_per_epoch / self.accum))
        warmup = t.warmup_steps or int(t.warmup_ratio * self.total)
        if state is not None:
            load_adapter(model, ckpt)  # before wrapping: FSDP2 shards what was loaded
        wrapped = dist.wrap(model, t.distributed, self.device, self.objective, t.optimizer)
        if wrapped:
            self.emit(Status(wrapped))
        self.params = trainable_parameters(model)
        self.optimizer = build_optimizer(model, t)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(t.schedule, warmup, self.total))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=s.precision == "fp16")
        if state is not None:
            self._load_state(state, notes)
        elif dist.main:
            (self.run_dir / METRICS_FILE).write_text("")
        if dist.main:
            write_run_files(s, self.run_dir, adapter=False)
            write_run_state(self.run_dir, "running", self.step, self.total)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.emit(Started(str(self.run_dir), self.total, self.step, self.device.type, device_name(self.device),
                          s.precision, sum(p.numel() for p in self.params),
                          sum(p.numel() for p in model.parameters()), self.n, len(s.data.validation),
                          s.config.model.task, s.data.label_names, self.elapsed_before, notes or None))
        self.metrics = open(self.run_dir / METRICS_FILE if dist.main else os.devnull, "a", encoding="utf-8")
        self.order = epoch_order(self.n, t.seed, self.epoch)
        self.last_ckpt = (ckpt, time.monotonic())

    def _load_state(self, state: dict, notes: list[str]):
        self.dist.load_optimizer(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the learning rate of the next step under this run's schedule: after --max-steps extends
        # a run, the one stored (the old schedule's last, 0 for linear or cosine) would be used
        sch = self.scheduler
        for group, base, f in zip(self.optimizer.param_groups, sch.base_lrs, sch.lr_lambdas):
            group["lr"] = base * f(sch.last_epoch)
        sch._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        elif self.scaler.is_enabled():
            notes.append("the checkpoint had no fp16 loss scale: it starts again from the default")
        self.step, self.epoch, self.pos = state["step"], state["epoch"], state["pos"]
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if self.step >= self.total:
            notes.append(f"the run already reached step {self.step} of {self.total}: give more --max-steps or "
                         "--epochs to train further")
        if self.dist.main:  # the curve continues the one before the checkpoint: drop what was logged after it
            notes.extend(trim_metrics(self.run_dir, self.step))

    def baseline(self, state: dict | None):
        """The RNG as the checkpoint left it, or the evaluation of the untrained adapter (step 0)."""
        from lora_studio.engine.samples import sampler_for_run

        self.sampler = sampler_for_run(self.s, self.run_dir, self.step if state is not None else None, self.dist)
        if state is not None:
            note = set_rng_state(state["rng"])
            if note:
                self.emit(Status(note))
        elif self.s.data.validation and self.t.eval_every > 0:
            self.last_eval = self.run_eval()
        if self.sampler and state is None:
            self.sampler.run(self.s, 0, self.run_dir, self.emit)  # step 0: the base model's answers
        self.dist.seed(self.t.seed, self.step)
        self.model.train()
        self.t_start = time.perf_counter()  # the baseline evaluation is not training time

    # -- one step ---------------------------------------------------------------------------------
    def micro_batches(self) -> dict:
        """Forward and backward over the step's `accum` micro-batches. Returns device sums (no sync):
        `loss` (of the micro-batch means / accum), and the objective's `stats` weighted by `count`,
        plus host counts: `tokens` (real tokens) and `count` (the units the loss is a mean over)."""
        t, dist, objective = self.t, self.dist, self.objective
        done = {"loss": torch.zeros((), device=self.device), "tokens": 0, "positions": 0, "squares": 0, "count": 0,
                "stats": {}}
        for k in range(self.accum):
            if self.pos >= self.batches_per_epoch:
                self.epoch, self.pos = self.epoch + 1, 0
                self.order = epoch_order(self.n, t.seed, self.epoch)
            idx, real = dist.shard(self.order[self.pos * self.gbs:(self.pos + 1) * self.gbs], self.bs)
            self.pos += 1
            host = objective.collate([self.s.data.train[i] for i in idx], self.s.tokenizer.pad_token_id)
            count = objective.count(host) if real else 0  # a padding part weighs nothing
            done["tokens"] += objective.tokens(host) if real else 0
            done["positions"] += objective.positions(host) if real else 0  # padding included
            if self.peak and real:
                from lora_studio.engine.flops import length_squares

                done["squares"] += length_squares(host)
            done["count"] += count
            batch = to_device(host, self.device)
            with dist.sync(last=k == self.accum - 1):  # no gradient reduction before the last
                with dist.autocast(self.s):
                    loss, stats = dist.loss(objective, self.model, batch, count)
                    loss = loss / self.accum
                self.scaler.scale(loss).backward()
            done["loss"] += loss.detach().float()
            for name, v in stats.items():
                done["stats"][name] = done["stats"].get(name, 0) + v.detach().float() * count
        return done

    def optimizer_step(self) -> tuple[float, torch.Tensor]:
        """Clip, step, schedule; returns (the learning rate this step used, the gradient norm)."""
        t = self.t
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm if t.max_grad_norm > 0 else float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.scheduler.get_last_lr()[0]
        with warnings.catch_warnings():  # a skipped fp16 step makes the scheduler warn; that is expected
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return lr, norm

    def after_step(self, t0: float, done: dict, lr: float, norm: torch.Tensor):
        """What is due after a step: report, evaluate, spectra, checkpoint, pause. Every process
        takes the same branches (they hold collectives): the stop and the timed save are agreed."""
        t, step, control, dist = self.t, self.step, self.control, self.dist
        timed = t.save_minutes and time.monotonic() - self.last_ckpt[1] >= 60 * t.save_minutes
        self.stopping, timed = dist.agree(control.stop_requested, timed)
        eval_due = bool(self.s.data.validation) and ((t.eval_every and step % t.eval_every == 0) or
                                                     step == self.total)
        save_due = step < self.total and ((t.save_every and step % t.save_every == 0) or timed)
        log_due = step % t.log_every == 0 or step == self.total
        synced = log_due or eval_due or save_due or self.stopping or (dist.can_pause and control.paused)
        if synced:
            self.report(t0, done, lr, norm, log_due, eval_due)
        if eval_due:
            self.last_eval = self.run_eval()
        if self.sampler and self.sampler.due(step, self.total, eval_due):
            self.sampler.run(self.s, step, self.run_dir, self.emit)
            synced = True
        if self.spectra_every and step % self.spectra_every == 0:
            emit_spectra(self.model, step, self.emit)
            synced = True
        if save_due:
            self.checkpoint()
        if dist.can_pause and control.paused and not control.stop_requested:  # (read now: an event may pause)
            paused_at = time.perf_counter()
            self.emit(Paused(step))
            control.wait_while_paused(self.s)
            self.t_start += time.perf_counter() - paused_at  # elapsed time counts training, not the pause
            self.model.train()
            synced = True
            if not control.stop_requested:
                self.emit(Resumed(step))
        if synced:
            self.synced = (time.perf_counter(), step)  # what ran after the sync is not the next steps' time

    def report(self, t0: float, done: dict, lr: float, norm: torch.Tensor, log_due: bool, eval_due: bool):
        """Check the step's loss and gradient norm are finite; on a log step, the `Step` event and
        its metrics.jsonl row (the objective's stats by name)."""
        step, dist = self.step, self.dist
        loss_value = float(dist.reduce_sum(done["loss"])) / dist.world  # sync point: the GPU finishes the step
        grad_norm = dist.scalar(norm)
        if not math.isfinite(loss_value):
            raise _nonfinite(step, loss_value, "loss", lr, self.last_ckpt[0])
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            raise _nonfinite(step, grad_norm, "gradient norm", lr, self.last_ckpt[0])
        self.learned = self.learned or grad_norm > 0
        # N18: seconds per step from sync to sync: unsynced steps queued on a GPU finish here, so the
        # time of this step alone (t0 on) would hold their backlog (and a CPU run averages the same way)
        since, at = self.synced
        dt = (time.perf_counter() - since) / max(1, step - at)
        if log_due:
            elapsed = self.elapsed_before + time.perf_counter() - self.t_start
            per_step = sum(self.recent) / len(self.recent) if self.recent else dt
            # this step's own evaluation (eval_due) runs after the event: it is still to come
            eta = per_step * (self.total - step) + self.eval_seconds * (self.evals_left(step) + eval_due)
            alloc, peak = memory(self.device)
            tokens = dist.sum_number(done["tokens"])
            positions = dist.sum_number(done["positions"])
            padding = 1.0 - tokens / positions if positions else 0.0  # share of the computed positions
            mfu = None
            if self.peak and dt > 0:
                from lora_studio.engine.flops import step_flops

                squares = dist.sum_number(done["squares"])
                mfu = step_flops(self.flops, tokens, squares) / dt / (self.peak * dist.world)
            stats = dist.weighted_means(done["stats"], done["count"])
            ev = Step(step, self.total, self.epoch + self.pos / self.batches_per_epoch, loss_value, lr, grad_norm,
                      tokens / dt if dt > 0 else 0.0, elapsed, eta, alloc, peak, stats or None, padding, mfu)
            self.log({"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": ev.tokens_per_s, "padding": padding,
                      **({"mfu": mfu} if mfu is not None else {}),
                      "time": time.time(), "elapsed": elapsed, "epoch": ev.epoch, "grad_norm": grad_norm,
                      "mem_allocated": alloc, "mem_peak": peak, **stats})
            self.emit(ev)
        self.recent.append(time.perf_counter() - t0)  # the whole step: its logging and event included

    def evals_left(self, at: int) -> int:
        """Evaluations still to come after step `at` (the last step always has one)."""
        t, total = self.t, self.total
        if not self.s.data.validation or at >= total:
            return 0
        every = (total // t.eval_every - at // t.eval_every) if t.eval_every else 0
        return every + (0 if t.eval_every and total % t.eval_every == 0 else 1)

    def log(self, record: dict):
        self.metrics.write(metrics_line(record))
        self.metrics.flush()

    def run_eval(self) -> tuple[float, float | None]:
        t0 = time.perf_counter()
        stop_before = self.control.stop_requested
        # every process evaluates the whole validation set (under FSDP2 through the wrapped root)
        loss, stats = evaluate_stats(self.s, self.bs, self.step, self.emit,
                                     self.control if self.dist.stops_alone else None, forward=self.dist.forward)
        self.eval_seconds = time.perf_counter() - t0
        if self.dist.stops_alone and self.control.stop_requested and not stop_before:  # cut short by the stop
            self.emit(Status(f"the evaluation at step {self.step} was stopped before its end: not recorded"))
            return self.last_eval
        accuracy = stats.pop("accuracy", None)
        self.emit(Eval(self.step, loss, accuracy, stats or None))
        self.log({"step": self.step, "eval_loss": loss, **({"accuracy": accuracy} if accuracy is not None else {}),
                  **{f"eval_{k}": v for k, v in stats.items()}, "time": time.time()})
        return loss, accuracy

    def checkpoint(self) -> Path:
        dist, model = self.dist, self.model
        adapter, opt = dist.gather(model, self.optimizer)  # collective: the full state, on CPU
        st = {"step": self.step, "epoch": self.epoch, "pos": self.pos, "global_batch": self.gbs,
              "optimizer": opt or self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
              "scaler": self.scaler.state_dict(), "rng": rng_state(self.device),
              "elapsed": self.elapsed_before + time.perf_counter() - self.t_start}
        if not dist.main:
            return self.run_dir
        with dist.full_params(model, adapter):
            path = save_checkpoint(model, self.s.model_ref, self.run_dir, st, self.t.keep_checkpoints)
        self.last_ckpt = (path, time.monotonic())
        self.emit(Checkpoint(self.step, str(path)))
        return path

    # -- after the last step ----------------------------------------------------------------------
    def finish(self, save: bool) -> Finished:
        """The last checkpoint, the adapter at the folder's top, the run state and memory.json."""
        s, dist, model, device, step = self.s, self.dist, self.model, self.device, self.step
        stopped = step < self.total
        if save:
            self.checkpoint()
        adapter = dist.gather(model, self.optimizer)[0]  # collective: rank 0 gathers the final adapter
        if dist.main:
            with dist.full_params(model, adapter):
                write_run_files(s, self.run_dir)
            write_run_state(self.run_dir, "stopped" if stopped else "finished", step, self.total)
            from lora_studio.engine.fit import record_peak

            record_peak(self.run_dir, s.model_ref, s.config, model.lora_studio_spec, s.precision, device.type,
                        memory(device)[1], s.data.label_names)  # memory.json: the estimate and the measured peak
        if self.spectra_every:  # stopped too: the Spectra tab then shows the step the run stopped at
            emit_spectra(model, step, self.emit)
        ev = Finished(step, str(self.run_dir), stopped, *self.last_eval, mem_peak=memory(device)[1])
        self.emit(ev)
        return ev


def emit_spectra(model, step: int, emit):
    from lora_studio.engine.spectra import analyse

    emit(Spectra(step, analyse(model)))


__all__ = ["train", "Control", "Started", "Step", "Eval", "Checkpoint", "Spectra", "Paused", "Resumed",
           "Finished", "Failed", "Status", "read_metrics", "latest_checkpoint", "lr_lambda"]
