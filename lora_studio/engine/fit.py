"""Will it fit? Peak training memory of bf16, int8 and NF4 bases, with and without gradient
checkpointing, against a GPU's memory, from the model config alone (meta device), and the
largest batch that fits. After a run, the measured peak is written next to the estimate.

The estimate is budget.estimate's LoRA memory (weights + gradients + optimizer state +
activations). Activations are linear in the batch, so the largest batch is one division.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch.nn as nn

from lora_studio.engine.budget import activation_bytes, estimate
from lora_studio.engine.lora import LoraSpec

HEADROOM = 0.9  # share of the GPU's memory a run may plan to use (CUDA context, fragmentation)
MEMORY_FILE = "memory.json"
CASES = (("none", "bf16 LoRA"), ("int8", "int8 base"), ("nf4", "NF4 base (QLoRA)"))


@dataclass
class FitRow:
    quantize: str  # none | int8 | nf4
    label: str
    checkpointing: bool
    peak_bytes: int  # estimated peak at the asked batch
    weights_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    fits: bool  # peak <= HEADROOM * GPU memory
    max_batch: int  # largest batch whose peak fits (0: not even batch 1)


@dataclass
class FitTable:
    gpu_bytes: int
    usable_bytes: int
    batch: int
    seq: int
    precision: str
    optimizer: str
    rows: list[FitRow]

    def to_json(self) -> dict:
        return asdict(self)


def gpu_of(device: str = "auto") -> tuple[int, str] | None:
    """(total bytes, name) of the GPU a run on `device` trains on: `cuda:N` that one; auto and cuda
    the current one, as `--device auto` takes it (cuda:LOCAL_RANK under torchrun). None without
    CUDA, or for cpu / mps. (GPU N15: the planner read GPU 0 whatever cuda:N was chosen.)"""
    import torch

    device = str(device or "auto")
    if not torch.cuda.is_available() or not (device in ("auto", "cuda") or device.startswith("cuda:")):
        return None
    index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else torch.cuda.current_device()
    p = torch.cuda.get_device_properties(index)
    return int(p.total_memory), p.name


def gpu_memory_bytes(typed_gb: float | None = None, device: str = "auto") -> int | None:
    """The GPU's memory: typed (GiB), else that of the GPU `device` trains on (`gpu_of`), else None."""
    if typed_gb is not None:
        return int(typed_gb * 2**30)
    gpu = gpu_of(device)
    return gpu[0] if gpu else None


def will_it_fit(model: nn.Module, spec: LoraSpec, gpu_bytes: int, batch: int = 8, seq: int = 512,
                precision: str = "bf16", optimizer: str = "adamw", per_example: int = 1) -> FitTable:
    """One row per base precision x gradient checkpointing (off, on). `per_example`: sequences per
    example (2 for a preference pair: chosen and rejected both go through the model)."""
    usable = int(HEADROOM * gpu_bytes)
    rows = []
    for quantize, label in CASES:
        for ckpt in (False, True):
            mem = estimate(model, spec, precision, batch * per_example, seq, ckpt, quantize, optimizer).memory_lora
            fixed = mem.total - mem.activations
            one = activation_bytes(model.config, per_example, seq, precision, ckpt, spec.targets)
            max_batch = max(0, (usable - fixed) // max(one, 1))
            rows.append(FitRow(quantize, label, ckpt, mem.total, mem.weights, mem.optimizer, mem.activations,
                               mem.total <= usable, int(max_batch)))
    return FitTable(gpu_bytes, usable, batch, seq, precision, optimizer, rows)


def format_table(t: FitTable) -> str:
    from lora_studio.engine.budget import human_bytes

    lines = [f"will it fit? batch {t.batch} x {t.seq} tokens, {t.precision}, {t.optimizer}; "
             f"GPU {human_bytes(t.gpu_bytes)} ({int(HEADROOM * 100)}% usable: {human_bytes(t.usable_bytes)})",
             f"{'base':<18} {'checkpointing':<13} {'peak':>10} {'weights':>10} {'activations':>11}  fits  largest batch"]
    for r in t.rows:
        lines.append(f"{r.label:<18} {'on' if r.checkpointing else 'off':<13} {human_bytes(r.peak_bytes):>10} "
                     f"{human_bytes(r.weights_bytes):>10} {human_bytes(r.activation_bytes):>11}  "
                     f"{'yes ' if r.fits else 'NO  '}  {r.max_batch if r.max_batch else '-'}")
    return "\n".join(lines)


def record_peak(run_dir, model_ref: str, config, spec: LoraSpec, precision: str, device_type: str,
                measured_peak: int, label_names=None) -> dict:
    """Write `memory.json` in the run folder: the planner's estimate for this run and the peak
    the run measured (CUDA: max_memory_allocated; CPU: the process's peak RSS, which also holds
    the tokenized data and the Python runtime, so it is an upper bound)."""
    from lora_studio.engine.adapters import atomic_write_json
    from lora_studio.engine.models import skeleton

    t = config.train
    skel = skeleton(model_ref, config.model.task, len(label_names) if label_names else 2,
                    config.model.trust_remote_code)
    from lora_studio.engine.budget import sequences_per_example

    mem = estimate(skel, spec, precision if device_type == "cuda" else "fp32",
                   t.batch_size * sequences_per_example(config.model.task),
                   config.data.max_length, t.gradient_checkpointing, config.model.quantize, t.optimizer,
                   device="cuda" if device_type == "cuda" else "cpu").memory_lora
    out = {"estimate_bytes": mem.total, "estimate": {**asdict(mem), "total": mem.total},
           "measured_peak_bytes": int(measured_peak),
           "measured_by": "cuda.max_memory_allocated" if device_type == "cuda" else "peak RSS of the process",
           "quantize": config.model.quantize, "optimizer": t.optimizer, "batch": t.batch_size,
           "seq": config.data.max_length, "gradient_checkpointing": t.gradient_checkpointing}
    atomic_write_json(Path(run_dir) / MEMORY_FILE, out)
    return out


def read_peak(run_dir) -> dict | None:
    path = Path(run_dir) / MEMORY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class PerDevice:
    """Per-GPU training memory of one run spread over `gpus` processes (bytes)."""

    mode: str  # ddp | fsdp
    gpus: int
    weights: int
    gradients: int
    optimizer: int
    activations: int  # per process: its own micro-batch
    total: int


def _largest_block_params(model: nn.Module) -> int:
    """Parameters of the largest decoder block (FSDP2 gathers one unit at a time, plus the next)."""
    from lora_studio.engine.targets import decoder_blocks  # the blocks FSDP2 shards (engine/distributed.py)

    return max((sum(p.numel() for p in b.parameters()) for b in decoder_blocks(model)), default=0)


def per_device(model: nn.Module, mem, gpus: int, precision: str = "bf16") -> list[PerDevice]:
    """DDP replicates the base on every GPU (and keeps a gradient bucket as large as the trainable
    gradients); FSDP2 shards base, adapters, gradients and optimizer state over the GPUs and holds
    two decoder blocks unsharded at a time (the one computing, the one prefetched). Activations are
    each process's own micro-batch in both."""
    from lora_studio.engine.budget import BYTES

    n = max(1, int(gpus))
    ddp = PerDevice("ddp", n, mem.weights, 2 * mem.gradients, mem.optimizer, mem.activations, 0)
    gathered = 2 * _largest_block_params(model) * BYTES.get(precision, 2) if n > 1 else 0
    fsdp = PerDevice("fsdp", n, -(-mem.weights // n) + gathered, -(-mem.gradients // n),
                     -(-mem.optimizer // n), mem.activations, 0)
    for d in (ddp, fsdp):
        d.total = d.weights + d.gradients + d.optimizer + d.activations
    return [ddp, fsdp]
