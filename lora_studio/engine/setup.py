"""What a run needs, loaded once: device, precision, tokenizer, data, model with adapters.

Also the pieces of a step that do not change during a run: autocast, the memory readout and
evaluation (the fused loss at the training batch size, so evaluating never needs more memory
than training does).
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from lora_studio.config import RunConfig
from lora_studio.core.names import PRINCIPAL_INITS
from lora_studio.engine.errors import UserError
from lora_studio.engine.events import Evaluating, Status
from lora_studio.engine.runfolder import model_ref
from lora_studio.engine.models import base_dtype, bf16_native, resolve_precision  # noqa: F401 - also imported from here
from lora_studio.engine.step import Batch, autocast, to_device  # noqa: F401 - also imported from here


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
    heads0: dict = field(default_factory=dict)  # the task head as it started (Try it's base answer)
    objective: object = None  # objective.Objective: the batch and the loss the loop trains on


class Stopped(Exception):
    """The user stopped the run before training began (nothing to save)."""


# -- device and precision: bf16_native and resolve_precision live in engine/models.py ---------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"{device.type.upper()} ({torch.get_num_threads()} threads)"


def memory(device: torch.device) -> tuple[int, int]:
    """(now, peak) bytes: CUDA allocated on a GPU, the process's resident memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)
    return process_memory()


def process_memory() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process on Linux, macOS and Windows."""
    try:
        import psutil

        info = psutil.Process().memory_info()
        peak = getattr(info, "peak_wset", None)  # Windows
        if peak is None:
            peak = _ru_maxrss() or info.rss
        return info.rss, max(peak, info.rss)
    except ImportError:
        peak = _ru_maxrss()
        try:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, AttributeError, ValueError):
            rss = peak
        return rss, max(rss, peak)


def _ru_maxrss() -> int:
    try:
        import resource  # not on Windows
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


# -- loading ----------------------------------------------------------------------------------
def _position_limit(config) -> int | None:
    """The longest input the model reads (engine/families.py `position_limit`; None: no hard limit)."""
    from lora_studio.engine.families import position_limit
    from lora_studio.engine.targets import text_config

    return position_limit(text_config(config))


START_FROM_LORA = ("targets", "layers", "rank", "alpha", "rslora", "dora")  # what shapes or scales the adapter


def check_start_from(config: RunConfig) -> None:
    """A run that starts from a trained adapter (`model.start_from`, --from, the GUI's From) loads
    that adapter's weights into its own: the base and every setting that shapes or scales the
    adapter must be the start run's. Said in one line before anything loads."""
    from pathlib import Path

    from lora_studio.engine.runfolder import RUN_FILE

    start = config.model.start_from
    if not start or not (Path(start) / RUN_FILE).is_file():
        return  # not a run of ours (a PEFT adapter folder): load_adapter checks its shapes
    src = RunConfig.load(Path(start) / RUN_FILE)
    a, b = src.model.path, config.model.path
    same = a == b or (Path(a).is_dir() and Path(b).is_dir() and Path(a).resolve() == Path(b).resolve())
    diffs = [] if same else [f"base {a} (this run: {b})"]
    diffs += [f"{k} {getattr(src.lora, k)} (this run: {getattr(config.lora, k)})"
              for k in START_FROM_LORA if getattr(src.lora, k) != getattr(config.lora, k)]
    if diffs:
        raise UserError(f"{start} was trained with {'; '.join(diffs)}: a run that starts from its adapter keeps "
                        "those settings; set them back, or start without --from")


def setup(config: RunConfig, emit: Callable = lambda e: None, label_names=None, control=None,
          principal: dict | None = None) -> Setup:
    from lora_studio.engine import data as data_mod
    from lora_studio.engine.fast import speed_up
    from lora_studio.engine.lora import inject
    from lora_studio.engine.models import load_config, load_tokenizer, resolve_device

    def check_stop():
        if control is not None and control.stop_requested:
            raise Stopped()

    ref = model_ref(config)
    check_start_from(config)
    from lora_studio.engine.distributed import launched, refuse_sharded_bnb

    if launched():
        refuse_sharded_bnb(config.train.distributed, config.train.optimizer)
    device = resolve_device(config.train.device)
    if device.type == "cuda":  # index-less CUDA calls (streams, caches, kernels) go to this GPU, not GPU 0
        torch.cuda.set_device(device)
    precision = resolve_precision(config.train.precision, device)
    torch.manual_seed(config.train.seed)
    random.seed(config.train.seed)
    limit = _position_limit(load_config(ref, config.model.trust_remote_code))
    if limit and config.data.max_length > limit:
        raise UserError(f"max length {config.data.max_length} is longer than {ref} can read ({limit} tokens): "
                        f"use --max-length {limit} or less")
    emit(Status(f"loading tokenizer of {ref}"))
    tok = load_tokenizer(ref, config.model.trust_remote_code)
    check_stop()
    dcfg = config.data
    if not dcfg.path:
        train_path, val_path = data_mod.demo_path(config.model.task)
        dcfg = type(dcfg)(**{**asdict(dcfg), "path": train_path, "validation_path": val_path})
    emit(Status(f"tokenizing {dcfg.path}"))
    from lora_studio.engine.tasks import objective_for

    objective = objective_for(config)
    prepared = objective.prepare(dcfg, tok, seed=config.train.seed, label_names=label_names)
    if not prepared.train:
        st = prepared.stats["train"]
        fix = ("raise --max-length" if st.too_long_prompts and not st.empty else
               "check that the columns the run reads hold text (--text-column, --label-column, …)")
        raise UserError(f"{dcfg.path} has no usable training examples after tokenization "
                        f"({st.summary()}): {fix}")
    for split, st in prepared.stats.items():
        if st is not None:
            emit(Status(f"{split}: {st.summary()}"))
    check_stop()
    emit(Status(f"loading model {ref}"))
    names = prepared.label_names
    from lora_studio.engine import fsdp_load

    how = fsdp_load.plan(config, ref, device, precision)  # FSDP2: process 0 reads, the others build on meta
    if how == "meta":
        model = fsdp_load.build_on_meta(config, ref, base_dtype(device, precision), names)
    else:
        model = load_base(config, ref, device, precision, names, on=torch.device("cpu") if how else None)
    if how:
        setattr(model, fsdp_load.FLAG, True)
    from lora_studio.engine.quantize import for_training

    for_training(model)  # a 4-bit base: no CPU inference repacking (it would zero the gradients)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    torch.manual_seed(config.train.seed)  # also seeds PiSSA's randomised SVD
    t0 = time.perf_counter()
    # resuming a PiSSA/OLoRA run: its checkpoint's A0, B0 rebuild the very residual it trained on
    adapted = inject(model, config.lora.to_spec(config.model.task), principal=principal)
    if config.model.start_from:  # --from: the run starts from (and trains on) that run's adapter
        from lora_studio.engine.adapters import load_adapter

        emit(Status(f"starting from the adapter of {config.model.start_from}"))
        load_adapter(model, config.model.start_from)
    if config.lora.init in PRINCIPAL_INITS:
        emit(Status(f"{config.lora.init} init of {len(adapted)} matrices took {time.perf_counter() - t0:.2f} s"))
    speed_up(model, device)  # fused GELU-tanh everywhere; the fast dropout on CPUs
    if config.train.packing:  # attention per packed example: no (N, N) mask (engine/packing.py)
        from lora_studio.engine.packing import check_isolation, use_packed_attention

        use_packed_attention(model)
        check_isolation(model)  # proved on this model, or refused in one line
    if config.train.gradient_checkpointing:
        checkpointing(model)
    check_stop()
    heads0 = initial_heads(model) if config.model.task == "classification" else {}
    if hasattr(objective, "start"):  # e.g. DPO's reference: the adapter the run starts from, frozen
        objective.start(model)
    return Setup(config, model, tok, prepared, device, precision, ref, adapted, heads0, objective)


def load_base(config: RunConfig, ref: str, device: torch.device, precision: str, label_names=None,
              on: torch.device | None = None):
    """The base model as a run of `config` trains on it: dtype, quantization and device. Training and
    Try it on a finished run (engine/tryit.py) both load through here, so they see the same base.
    `on`: where the weights go when not `device` (FSDP2's process 0 reads into host memory)."""
    from lora_studio.engine.models import load_model
    from lora_studio.engine.quantize import bnb_config, check_device, compute_dtype, preflight

    check_device(config.model.quantize, device)
    refused = preflight(config.model.quantize, str(device))[0]  # before loading anything
    if refused:
        raise UserError(refused)
    return load_model(ref, config.model.task, dtype=base_dtype(device, precision), device=on or device,
                      id2label=dict(enumerate(label_names)) if label_names else None,
                      allow_pickle=config.model.allow_pickle, trust_remote_code=config.model.trust_remote_code,
                      quantization_config=bnb_config(config.model.quantize, compute_dtype(device, precision),
                                                     config.model.task))


def initial_heads(model) -> dict:
    """The task head's weights as they start (seeded, untrained): the base model's answer uses them."""
    from lora_studio.core.names import HEADS

    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.split(".")[0] in (*HEADS, "pre_classifier")}


def checkpointing(model):
    """Activation checkpointing, non-reentrant (transformers 5 renamed gradient_checkpointing_enable)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def evaluate(s: Setup, batch_size: int, step: int = 0, emit: Callable = lambda e: None,
             control=None) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) over the validation set (see `evaluate_stats`)."""
    mean, stats = evaluate_stats(s, batch_size, step, emit, control)
    return mean, stats.get("accuracy")


def evaluate_stats(s: Setup, batch_size: int, step: int = 0, emit: Callable = lambda e: None,
                   control=None, forward: Callable | None = None) -> tuple[float, dict[str, float]]:
    """(mean loss, the objective's stats) over the validation set, weighted by the objective's
    count (target tokens for causal LMs). Uses the training batch size and the objective's loss
    (the fused one for causal LMs): no full logits, no more memory than a step.
    `forward(model, fn, batch)` runs fn(model, batch) (Dist.forward: through the FSDP2 root)."""
    from lora_studio.engine.tasks import objective_for

    objective = s.objective or objective_for(s.config)
    examples = s.data.validation
    if not examples:
        return float("nan"), {}
    model, was_training = s.model, s.model.training
    forward = forward or (lambda m, fn, b: fn(m, b))
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=s.device)
    weight, sums = 0, {}
    emit(Evaluating(step, 0, len(examples)))
    shown = time.perf_counter()
    with torch.no_grad(), autocast(s):
        for i in range(0, len(examples), batch_size):
            host = objective.collate(examples[i:i + batch_size], s.tokenizer.pad_token_id)
            n = objective.count(host)
            loss, stats = forward(model, lambda m, b: objective.eval_sums(m, b, n), to_device(host, s.device))
            total += loss.double()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v.double()
            weight += n
            if time.perf_counter() - shown >= EVAL_PROGRESS_S:  # never "0/200" for a minute on a CPU
                shown = time.perf_counter()  # (a host clock: no device sync; a fast GPU eval emits a few)
                emit(Evaluating(step, min(i + batch_size, len(examples)), len(examples)))
            if control is not None and control.stop_requested:
                break
    model.train(was_training)
    w = max(weight, 1)
    return total.item() / w, {k: float(v) / w for k, v in sums.items()}  # sync point


EVAL_PROGRESS_S = 0.5  # an evaluation's progress, at most this often


def release(s: Setup | None):
    """Drop the model and give its GPU memory back (the caller must hold no other reference).
    With no Setup (setup() failed after loading), the model died with the exception: the cache
    the allocator still reserves for it is given back all the same."""
    if s is not None:
        s.model = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        import gc

        # only where there is GPU memory to give back: a collection from a GUI worker thread may
        # also reach Qt objects, which must die in the GUI thread (ui.app collects there)
        gc.collect()
        torch.cuda.empty_cache()

