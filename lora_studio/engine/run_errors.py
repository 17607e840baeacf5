"""What a training run says when it cannot go on: out of memory (what to lower), a full disk (resume
or start again), a non-finite loss or gradient (the step and what to change), no gradient at all.
The kinds are engine/errors.py's; these are the messages only a training run can give."""

from __future__ import annotations

from lora_studio.config import RunConfig
from lora_studio.engine.errors import Failure, NonFiniteLoss, failure_of
from lora_studio.engine.runfolder import latest_checkpoint


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


def _no_gradient(s, step: int) -> Exception:
    """Every gradient of the run was zero: the adapter never changed, so the run must not end as done."""
    from lora_studio.engine.errors import UserError

    q = getattr(s.config.model, "quantize", "none")
    why = (f"the {q} base (bitsandbytes) gave zero gradients on {s.device.type}" if q != "none" else
           "check that the data has trained tokens (labels) and that the learning rate and targets are right")
    return UserError(f"every gradient was zero for the whole run (to step {step}): the adapter learned nothing, "
                     f"so the run is not marked done; {why}")
