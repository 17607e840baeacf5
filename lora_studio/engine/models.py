"""Loading base models, configs and tokenizers (local folder or hub id), dtype and device."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from lora_studio.engine.demo import demo_model_path  # noqa: F401 - re-exported
from lora_studio.core import names as core_names
from lora_studio.core.names import TASKS  # noqa: F401 - preference: a causal LM
from lora_studio.engine.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _check_folder(ref: str, allow_pickle: bool):
    path = Path(ref)
    if not path.exists():
        if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref:
            raise UserError(f"model folder {ref} does not exist: give a folder with config.json or a hub id like org/name")
        _check_hub(ref)
        return
    if not path.is_dir():
        raise UserError(f"model path {ref} is a file: give the folder that holds config.json")
    if not (path / "config.json").is_file():
        raise UserError(f"{ref} has no config.json: it is not a Hugging Face model folder")
    if not list(path.glob("*.safetensors")) and not allow_pickle:
        if list(path.glob("*.bin")) or list(path.glob("*.pt")) or list(path.glob("*.pth")):
            raise UserError(f"{ref} has only pickled weights (.bin/.pt), which can run code when loaded; "
                            "convert them to safetensors, or allow pickles (--allow-pickle) if you trust the source")


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=32)
def _check_hub(ref: str, timeout: float = 5.0):
    """A name that is not a folder: in the local HF cache, or asked of the hub once with a short
    timeout, so that a typo fails in seconds instead of after transformers' retries."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(ref, "config.json"), str):
            return
    except errors.HFValidationError:
        raise UserError(f"model {ref!r} is neither a local folder nor a valid hub id (org/name): "
                        "check the spelling, or give a folder with config.json") from None
    what = f"model {ref!r} is neither a local folder nor in the Hugging Face cache"
    if _offline():
        raise UserError(f"{what}, and HF_HUB_OFFLINE is set: give a model folder with config.json, "
                        "or unset HF_HUB_OFFLINE to download it")
    try:
        huggingface_hub.model_info(ref, timeout=timeout)
    except errors.GatedRepoError:  # (a subclass of RepositoryNotFoundError) exists; transformers says what access it needs
        return
    except (errors.RepositoryNotFoundError, errors.HFValidationError):
        raise UserError(f"{what}, and the hub has no model of that name (check the spelling, "
                        "or log in for a private or gated one)") from None
    except Exception as e:  # network: DNS, timeout, proxy
        raise UserError(f"{what}, and the hub cannot be reached ({str(e).splitlines()[0][:120]}): "
                        "check the name and the network, or give a model folder") from None


def load_config(ref: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    _check_folder(ref, allow_pickle=True)
    try:
        return AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise UserError(f"{ref} needs custom code from its repository; turn on trust_remote_code "
                            "only if you trust it (--trust-remote-code)") from None
        raise UserError(f"cannot read the model config of {ref}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise UserError(f"cannot load model {ref}: {str(e).splitlines()[0]}") from None


def infer_task(model_ref: str, trust_remote_code: bool = False) -> str:
    """"causal-lm" or "classification" for a model folder or hub id, from its config alone."""
    cfg = load_config(model_ref, trust_remote_code)
    archs = " ".join(getattr(cfg, "architectures", None) or [])
    if "CausalLM" in archs or "LMHead" in archs or getattr(cfg, "is_decoder", False):
        return "causal-lm"
    from lora_studio.engine.families import family_of

    if family_of(cfg).encoder:
        return "classification"
    return "causal-lm"


def base_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The frozen base's dtype: the compute dtype on GPUs (half the memory); fp32 on CPUs."""
    if device.type != "cuda":
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def auto_class(task: str):
    import transformers

    if task not in TASKS:
        raise UserError(f"task {task!r} unknown: use one of {', '.join(TASKS)}")
    return transformers.AutoModelForSequenceClassification if task == "classification" else transformers.AutoModelForCausalLM


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


@functools.lru_cache(maxsize=8)
def skeleton(ref: str, task: str = "causal-lm", num_labels: int = 2, trust_remote_code: bool = False):
    """The model built on the meta device from its config alone: shapes, no weights, no memory.
    Cached: the GUI asks for it on every tick of a checkbox."""
    return skeleton_from_config(load_config(ref, trust_remote_code), task, num_labels, trust_remote_code)


def skeleton_from_config(config, task: str = "causal-lm", num_labels: int = 2, trust_remote_code: bool = False):
    _quiet_transformers()
    if task == "classification":
        config.num_labels = num_labels
    try:
        with torch.device("meta"):
            return auto_class(task).from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as e:
        why = str(e).splitlines()[0]
        if "Unrecognized configuration class" in why:  # no head for this task in transformers
            raise UserError(f"a {config.model_type} model cannot do {task}: {why}") from None
        raise UserError(f"the model's config.json does not describe a valid {config.model_type} model: {why}; "
                        "fix config.json or choose another model") from None  # not the task's fault (GUI N21)


def bf16_native(device: torch.device) -> bool:
    """bf16 in hardware (Ampere and later); emulated bf16 (T4, V100) is slow, so auto avoids it."""
    if device.type != "cuda":
        return False
    if torch.version.hip:  # ROCm: torch knows which AMD GPUs have it
        return torch.cuda.is_bf16_supported(including_emulation=False)
    # this device's compute capability (is_bf16_supported reads the current device, often GPU 0);
    # reading the properties creates no CUDA context on that GPU
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> str:
    """core.names.resolve_precision for this device (the rule itself is torch-free, for the GUI)."""
    cuda = device.type == "cuda"
    return core_names.resolve_precision(precision, device.type, cuda and bf16_native(device),
                                   torch.cuda.get_device_name(device) if cuda else "")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():  # this process's GPU, with its index (set_device refuses a bare "cuda")
            return _cuda_device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        return _cuda_device(device)
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device mps asked for, but Apple MPS is not available: use --device cpu or auto")
    if device not in ("cpu", "mps"):
        raise UserError(f"device {device!r} unknown: use auto, cpu, cuda, cuda:N or mps")
    return torch.device(device)


def visible_gpus() -> list[str]:
    """'cuda:i (name)' for every GPU this process sees (CUDA_VISIBLE_DEVICES applies)."""
    return [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]


def _cuda_device(device: str) -> torch.device:
    if not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but no CUDA GPU is visible: use --device cpu or auto")
    _, _, index = device.partition(":")
    if index and not index.isdigit():
        raise UserError(f"device {device!r} unknown: use cuda or cuda:N with N a GPU number")
    if index and int(index) >= torch.cuda.device_count():
        raise UserError(f"device {device} does not exist: this process sees {', '.join(visible_gpus())}; "
                        "pick one of those (CUDA_VISIBLE_DEVICES renumbers GPUs from 0)")
    local = torch_run_local_rank()
    if local is not None:  # under torchrun every process takes its own GPU, whatever index was saved
        return torch.device("cuda", local)
    return torch.device("cuda", int(index) if index else 0)


def torch_run_local_rank() -> int | None:
    """LOCAL_RANK when this process is one of several started by torchrun (None in one process)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None


def load_model(ref: str, task: str = "causal-lm", dtype: str | torch.dtype | None = "float32",
               device: str | torch.device = "cpu", num_labels: int = 2,
               id2label: dict[int, str] | None = None, allow_pickle: bool = False,
               trust_remote_code: bool = False, quantization_config=None):
    """A pretrained model, weights from safetensors only unless `allow_pickle`. With a
    `quantization_config` (quantize.bnb_config) bitsandbytes quantizes it while it loads onto `device`."""
    _quiet_transformers()
    _check_folder(ref, allow_pickle)
    kwargs = {}
    if task == "classification":
        kwargs["num_labels"] = len(id2label) if id2label else num_labels
        kwargs["ignore_mismatched_sizes"] = True  # a classifier with other classes: its head is new, and trained
        if id2label:
            kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
            kwargs["label2id"] = {v: int(k) for k, v in id2label.items()}
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype, dtype)
    device = torch.device(device)
    if quantization_config is not None:  # quantized straight onto the device: bnb models refuse .to()
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    elif device.type == "cuda":  # weights go straight to that GPU, no full copy in host memory first
        kwargs["device_map"] = {"": device}
    try:
        model = auto_class(task).from_pretrained(
            ref, dtype=dtype, use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "trust_remote_code" in msg:
            raise UserError(f"{ref} needs custom code from its repository; turn on trust_remote_code "
                            "only if you trust it") from None
        raise UserError(f"cannot load {ref} for {task}: {msg}") from None
    except OSError as e:
        raise UserError(f"cannot load model {ref}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # corrupt safetensors, truncated shards …
        if _unreadable(e):
            raise UserError(f"the weights of {ref} are unreadable ({type(e).__name__}: "
                            f"{str(e).splitlines()[0]}); re-download or re-export the model") from None
        raise
    return model if quantization_config is not None else model.to(device)


_UNREADABLE = ("safetensor", "header", "deserializ", "size mismatch", "error(s) in loading state_dict",
               "incomplete", "unexpected end", "invalid load key", "corrupt", "truncated")


def _unreadable(e: Exception) -> bool:
    """A file that cannot be read as weights — not any RuntimeError (a CUDA error or an
    out-of-memory is not a damaged file, and must not be reported as one)."""
    if type(e).__name__ in ("SafetensorError", "HeaderTooLarge"):
        return True
    text = str(e).lower()
    return type(e).__name__ == "RuntimeError" and "out of memory" not in text and any(k in text for k in _UNREADABLE)


def load_tokenizer(ref: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    _quiet_transformers()
    _check_folder(ref, allow_pickle=True)
    try:
        tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a tokenizer from {ref}: {str(e).splitlines()[0]}; "
                        "the model folder needs tokenizer files") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def describe(model_or_config) -> dict:
    """Architecture facts for display: type, layers, hidden size, heads, parameters, dtype."""
    config = getattr(model_or_config, "config", model_or_config)
    from lora_studio.engine.targets import available_targets, text_config

    tc = text_config(config)
    out = {
        "model_type": getattr(tc, "model_type", "?"),
        "layers": getattr(tc, "num_hidden_layers", None) or getattr(tc, "n_layer", None) or getattr(tc, "n_layers", None),
        "hidden_size": getattr(tc, "hidden_size", None) or getattr(tc, "n_embd", None) or getattr(tc, "dim", None),
        "heads": getattr(tc, "num_attention_heads", None) or getattr(tc, "n_head", None) or getattr(tc, "n_heads", None),
        "dtype": str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32").replace("torch.", ""),
    }
    if hasattr(model_or_config, "parameters"):
        out["params"] = sum(p.numel() for p in model_or_config.parameters())
        out["targets"] = available_targets(model_or_config)
    return out
