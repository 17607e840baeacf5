"""Quantized base (QLoRA): bitsandbytes 4-bit NF4 / 8-bit linear weights, adapters in float.

`--quantize nf4` loads every linear layer of the base that transformers' bitsandbytes integration
converts (all nn.Linear / GPT-2 Conv1D except the output embedding, tied weights and the last
module) as `bnb.nn.Linear4bit`: NF4 codes packed two per byte, one absmax per 64 weights, the
absmaxes themselves quantized to 8 bits (double quantization, Dettmers et al. 2023). `int8` loads
them as `bnb.nn.Linear8bitLt` (LLM.int8(): int8 weights, one fp32 scale per output row).
Embeddings, norms and the LM head stay in the load dtype, as bitsandbytes leaves them.

Merging never re-quantizes: `full_precision_gap` measures how far a merged full-precision model
is from the quantized base + adapter that was trained (export.py reports it).
"""

from __future__ import annotations

import math
import torch
import torch.nn as nn

from lora_studio.engine.errors import UserError

from lora_studio.core.names import HEADS, OPTIMIZERS, QUANTIZE  # noqa: F401 - re-exported
INSTALL = "pip install 'lora-studio[qlora]'"
NF4_BLOCK = 64  # weights per absmax (bitsandbytes' default 4-bit blocksize)
NESTED_BLOCK = 256  # absmaxes per second-level fp32 scale (double quantization)
OPT8_BLOCK = 256  # 8-bit optimizer: values per fp32 absmax (dynamic blockwise quantization)
OPT8_MIN_SIZE = 4096  # smaller tensors keep 32-bit optimizer state (bnb's min_8bit_size)


def require_bitsandbytes(what: str = "a quantized base"):
    """The bitsandbytes module, or one line saying how to get it. Imported quietly: on a machine
    without the GPU it was built for it warns at length on import, and `preflight` says in one
    line what matters (can this machine train with it)."""
    import contextlib
    import io
    import logging
    import warnings

    log = logging.getLogger("bitsandbytes")
    level = log.level
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            log.setLevel(logging.ERROR)
            import bitsandbytes
    except ImportError:
        raise UserError(f"{what} needs bitsandbytes, which is not installed: {INSTALL}") from None
    finally:
        log.setLevel(level)
    return bitsandbytes


_PROBED: dict = {}


def preflight(quantize: str, device: str | None = "auto") -> tuple[str | None, str | None]:
    """Can this machine train on a `quantize`d base? (error, warning), each one line or None, for
    the CLI and the GUI to show BEFORE a run starts: bitsandbytes missing, a device it does not
    run on, or a 4-/8-bit layer that cannot run forward and backward here (tried on a 64 x 64 layer)."""
    if quantize in (None, "", "none"):
        return None, None
    try:
        bnb = require_bitsandbytes(f"a base quantized to {quantize}")
    except UserError as e:
        return str(e), None
    want = device or "auto"
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" else torch.device(want).type
    if kind not in ("cpu", "cuda"):
        return (f"a base quantized to {quantize} runs on CUDA GPUs or the CPU, not {kind}: choose the cuda or cpu device, "
                "or no quantization"), None
    key = (quantize, kind)
    if key not in _PROBED:
        _PROBED[key] = _probe(bnb, quantize, kind)
    if _PROBED[key]:
        return (f"this machine cannot train on a {quantize} base with bitsandbytes {bnb.__version__} on the "
                f"{kind.upper()} ({_PROBED[key]}): {'use a CUDA GPU, or ' if kind == 'cpu' else ''}"
                "train without quantization"), None
    if kind == "cpu":
        return None, (f"a base quantized to {quantize} on the CPU: bitsandbytes' CPU kernels are far slower than a GPU's and "
                      "save memory only; fine for trying QLoRA on a small model")
    return None, None


def _probe(bnb, quantize: str, kind: str) -> str:
    """"" when a 64 x 64 bitsandbytes layer runs forward and backward on `kind`, else why not."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if quantize == "nf4":
                layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
            else:
                layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
            layer = layer.to(kind)
            x = torch.randn(2, 64, device=kind, requires_grad=True)
            layer(x).float().sum().backward()
        return "" if x.grad is not None and bool(x.grad.abs().sum() > 0) else "its layers give no gradient"
    except Exception as e:  # noqa: BLE001 - whatever bitsandbytes raises, it cannot train here
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def compute_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype bitsandbytes dequantizes into for the matmul: the run's half type on CUDA, fp32 on CPU."""
    if torch.device(device).type != "cuda":
        return torch.float32
    return {"fp16": torch.float16, "fp32": torch.float32}.get(precision, torch.bfloat16)


def bnb_config(quantize: str, dtype: torch.dtype = torch.float32, task: str = "causal-lm"):
    """transformers' BitsAndBytesConfig for `quantize` (None for "none"). A classifier's head is
    trained in full, so it stays out of quantization (with the LM head, which transformers keeps)."""
    if quantize not in QUANTIZE:
        raise UserError(f"quantize {quantize!r} unknown: use one of {', '.join(QUANTIZE)}")
    if quantize == "none":
        return None
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    skip = {"llm_int8_skip_modules": [*HEADS, "lm_head"]} if task == "classification" else {}
    if quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, **skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, **skip)


def for_training(model: nn.Module) -> nn.Module:
    """A quantized base about to be trained. bitsandbytes repacks a 4-bit weight for its CPU
    inference kernel the first time the layer runs in eval mode without gradients (on CPUs with
    AVX512-BF16: the step-0 evaluation); after that, backward through the layer gives wrong (zero)
    gradients and the run learns nothing. Training keeps the trainable layout."""
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    return model


def check_device(quantize: str, device: torch.device):
    if quantize != "none" and torch.device(device).type not in ("cpu", "cuda"):
        raise UserError(f"a {quantize} base runs on CUDA GPUs or the CPU, not {torch.device(device).type}: "
                        "use --device cuda or cpu, or --quantize none")


def is_quantized_module(module: nn.Module) -> bool:
    """A bitsandbytes 4-/8-bit linear layer (its weight is packed integers, not a float matrix)."""
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt") or (
        getattr(module, "weight", None) is not None and not module.weight.dtype.is_floating_point)


def is_quantized(model: nn.Module) -> bool:
    return any(is_quantized_module(m) for m in model.modules())


def source_is_conv1d(module: nn.Module) -> bool:
    """A bnb layer that transformers made from a GPT-2 Conv1D (it stores the weight as out x in)."""
    return getattr(getattr(module, "source_cls", None), "__name__", "") == "Conv1D"


# -- which weights bitsandbytes converts, and their bytes ------------------------------------------
def quantizable(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, in, out) of each linear layer that transformers' bitsandbytes loading converts. Works
    on a meta-device model (same rule: Linear/Conv1D, minus tied/last/output-embedding modules)."""
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = get_keys_to_not_convert(model) + list(getattr(model, "_keep_in_fp32_modules", None) or [])
    if type(model).__name__.endswith("ForSequenceClassification"):  # its head is trained: not quantized
        skip += [*HEADS, "lm_head"]
    out = []
    for name, m in model.named_modules():
        if not name or not should_convert_module(name, skip):
            continue
        if type(m) is nn.Linear:
            out.append((name, m.in_features, m.out_features))
        elif type(m).__name__ == "Conv1D":
            out.append((name, m.weight.shape[0], m.weight.shape[1]))
    return out


def quantized_weight_bytes(n: int, out_features: int, quantize: str) -> int:
    """Bytes bitsandbytes holds for one (out x in) weight of n = in*out entries (bias excluded).
    NF4 + double quantization: n/2 codes, n/64 uint8 absmaxes, an fp32 scale per 256 of those,
    the 16-value NF4 and 256-value nested code books and an offset (~0.516 byte/param).
    int8: n bytes and one fp32 scale per output row."""
    if quantize == "int8":
        return n + 4 * out_features
    blocks = math.ceil(n / NF4_BLOCK)
    return math.ceil(n / 2) + blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + 4 * (16 + 256 + 1)


def optimizer_state_bytes(numels: list[int], optimizer: str) -> int:
    """AdamW's m and v for trainable tensors of these sizes: fp32 (8 bytes/param), or for
    adamw8bit 1 byte each + an fp32 absmax per 256 values + two 256-entry code books per tensor
    (tensors under 4096 values keep fp32 state). Paged AdamW holds fp32 state in paged memory
    that can spill to the host: counted in full (it is on the GPU while it fits)."""
    if optimizer != "adamw8bit":
        return 8 * sum(numels)
    total = 0
    for n in numels:
        total += 8 * n if n < OPT8_MIN_SIZE else 2 * n + 8 * math.ceil(n / OPT8_BLOCK) + 2 * 4 * 256
    return total


def make_optimizer(name: str, params: list, lr: float, weight_decay: float):
    """AdamW (torch), 8-bit AdamW or paged AdamW (bitsandbytes) over `params`."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name not in OPTIMIZERS:
        raise UserError(f"optimizer {name!r} unknown: use one of {', '.join(OPTIMIZERS)}")
    bnb = require_bitsandbytes(f"the {name} optimizer")
    cls = bnb.optim.AdamW8bit if name == "adamw8bit" else bnb.optim.PagedAdamW
    return cls(params, lr=lr, weight_decay=weight_decay)


# -- the merged model vs the quantized one it trained ---------------------------------------------
def quantized_logits(base_ref: str, task: str, run_dir, quantize: str, inputs: dict, id2label=None,
                     allow_pickle: bool = False, trust_remote_code: bool = False) -> torch.Tensor:
    """fp32 logits of the model that was trained: `quantize`d base + the adapter in `run_dir`."""
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.models import load_model

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dtype = compute_dtype(device, _gap_precision(run_dir, device))
    model = load_model(base_ref, task, dtype=dtype, device=device, id2label=id2label,
                       allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                       quantization_config=bnb_config(quantize, dtype, task)).eval()
    load_adapter(model, run_dir)
    with torch.no_grad():
        out = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _gap_precision(run_dir, device: torch.device) -> str:
    """The precision the quantized base computes in for the export's gap check: the run's own,
    resolved for this device. "auto" was bf16 on every GPU (GPU review N20), emulated and slow on
    a pre-Ampere one, where the run itself trained in fp16; a bf16 run checked on such a GPU
    computes in fp16 too."""
    from lora_studio.engine.models import bf16_native, resolve_precision

    config = _run_config(run_dir)
    precision = config.train.precision if config else "auto"
    if device.type != "cuda" or (precision == "bf16" and not bf16_native(device)):
        precision = "auto"  # a CPU computes in fp32 whatever the run used
    return resolve_precision(precision, device)


def _run_config(run_dir):
    """The RunConfig a run folder (or one of its checkpoints) was trained with; None for a plain
    PEFT adapter folder."""
    from pathlib import Path

    from lora_studio.config import RunConfig
    from lora_studio.engine.runfolder import RUN_FILE, run_of

    path = run_of(Path(run_dir)) / RUN_FILE  # a checkpoint folder: its run's settings
    return RunConfig.load(path) if path.is_file() else None


def run_quantize(run_dir) -> str:
    """The `quantize` a run folder was trained with ("none" for a plain PEFT adapter folder)."""
    config = _run_config(run_dir)
    return config.model.quantize if config else "none"
