"""Every name and enumeration the project has, once, without torch or Qt: the config validates
against these tuples, argparse's `choices=` and the GUI's combo boxes read them. Also the LoRA
settings' one validation (`check_lora`), layer selections as text ("0-5,8"), and the two formulas
the GUI needs before torch loads: `scaling` and `resolve_precision`."""

from __future__ import annotations

import math
import numbers

from lora_studio.core.errors import UserError

# -- what a run is ------------------------------------------------------------------------------
TASKS = ("causal-lm", "classification", "preference")  # preference: a causal LM on chosen/rejected pairs
PREFERENCE_LOSSES = ("dpo", "orpo", "simpo")  # engine/preference.py
PREFERENCE_BETA = {"dpo": 0.1, "orpo": 0.1, "simpo": 2.0}  # beta 0 means these: DPO/TRL's, ORPO's lambda, SimPO's paper
FORMATS = ("auto", "text", "prompt-completion", "messages", "classification")
FORMATS_BY_TASK = {"classification": ("auto", "classification"),
                   "causal-lm": ("auto", "text", "prompt-completion", "messages"),
                   "preference": ("auto",)}  # pairs are detected from their columns (engine/data_pref.py)
ROLES = {"text": ("text",), "prompt-completion": ("prompt", "completion"), "messages": ("messages",),
         "classification": ("text", "label"),
         "preference": ("prompt", "chosen", "rejected")}  # data format -> the columns it reads
HEADS = ("classifier", "score")  # classification heads trained in full (PEFT's modules_to_save)

# -- what LoRA adapts, and how ------------------------------------------------------------------
LOGICAL = ("q", "k", "v", "o", "gate", "up", "down")  # logical projections, attention then MLP
ATTENTION = ("q", "k", "v", "o")
MLP = ("gate", "up", "down")
INITS = ("kaiming", "gaussian", "pissa", "olora")  # how A and B start
PRINCIPAL_INITS = ("pissa", "olora")  # from W0's SVD / QR: the base becomes the residual (no DoRA)

# -- how it trains ------------------------------------------------------------------------------
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
DISTRIBUTED = ("auto", "ddp", "fsdp")  # under torchrun
SCHEDULES = ("linear", "cosine", "constant")
QUANTIZE = ("none", "nf4", "int8")  # base precision (engine/quantize.py)
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw")
SEED_MAX = 2**32 - 1

# -- what it exports ----------------------------------------------------------------------------
MERGE_DTYPES = ("float32", "bfloat16", "float16")  # merge --dtype
GGUF_TYPES = ("f32", "f16", "q8_0")  # gguf --type


def check_init(init: str, dora: bool = False):
    """The one validation of an init and its combination with DoRA (config, LoraSpec, inject)."""
    if init not in INITS:
        raise UserError(f"init {init!r} unknown: use one of {', '.join(INITS)}")
    if dora and init in PRINCIPAL_INITS:
        raise UserError("DoRA with PiSSA/OLoRA init is not supported: choose --dora or --init pissa|olora")


def scaling(r: int, alpha: float, rslora: bool = False) -> float:
    """s = alpha / r (rsLoRA: alpha / sqrt(r))."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def resolve_precision(precision: str, device_kind: str, bf16_ok: bool = False, gpu_name: str = "") -> str:
    """The precision a run trains in: `auto` is bf16 on a GPU with native bf16, fp16 on other GPUs,
    fp32 elsewhere. `device_kind`: "cuda", "cpu", "mps"; `bf16_ok`: the GPU has native bf16.
    fp16 on a CPU and bf16 on a GPU without it are refused."""
    if precision == "auto":
        if device_kind == "cuda":
            return "bf16" if bf16_ok else "fp16"
        return "fp32"
    if precision == "fp16" and device_kind == "cpu":
        raise UserError("fp16 training is for GPUs; on a CPU use fp32 or bf16")
    if precision == "bf16" and device_kind == "cuda" and not bf16_ok:
        raise UserError(f"{gpu_name or 'this GPU'} has no native bf16: use --precision fp16 or fp32")
    return precision


def check_lora(targets, rank, alpha, dropout) -> tuple[list[str], int, float, float]:
    """Validated (targets, rank, alpha, dropout), or a UserError that says what to change."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = [str(t).strip() for t in (targets or []) if str(t).strip()]
    if not targets:
        raise UserError("no targets: tick at least one projection (e.g. q,v)")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank <= 0:
        raise UserError(f"rank must be a positive integer, got {rank!r} (try 8)")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise UserError(f"alpha must be a number > 0, got {alpha!r} (a common choice is 2 x rank)")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise UserError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return targets, int(rank), float(alpha), float(dropout)


def parse_layers(text: str | None) -> list[int] | None:
    """'0-5,8' -> [0, 1, 2, 3, 4, 5, 8]; '' or None or 'all' -> None (every layer)."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-"))
                if b < a:
                    raise ValueError(part)
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise UserError(f"layers {text!r} not understood: use numbers and ranges like 0-5,8") from None
    return sorted(set(out))


def format_layers(layers: list[int] | None) -> str:
    if not layers:
        return "all"
    parts, start = [], layers[0]
    for a, b in zip(layers, layers[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(parts)
