"""Checks made when Start (or Continue) is pressed, before any thread starts: what would make the
run fail at step 0 gets a dialog that says what to change, never a "bug" dialog after loading."""

from __future__ import annotations

QUANT_NAMES = {"nf4": "A 4-bit (QLoRA) base", "int8": "An 8-bit base"}


def cuda_available() -> bool:
    from lora_studio.engine import warm_imports

    warm_imports()  # torch's first import happens in one thread only
    import torch

    return torch.cuda.is_available()


def problem(config, has_cuda=cuda_available) -> str:
    """Why `config` cannot train on this machine, in words for a dialog, or "" when it can.
    `has_cuda`: a callable (tests pass one)."""
    quantize = config.model.quantize
    if quantize == "none":
        return ""
    device = str(config.train.device)
    on_cpu = device == "cpu" or (device != "mps" and not has_cuda())
    if device == "mps" or on_cpu:
        where = "this machine has no CUDA GPU" if device != "cpu" else "the device is set to CPU"
        return (f"{QUANT_NAMES.get(quantize, 'A quantized base')} needs an NVIDIA GPU (bitsandbytes), and {where}. "
                "On a CPU the quantized base either fails at the first step or trains nothing.\n\n"
                "In LoRA variants, set Base precision to “Full (bf16 / fp32)”, then press Start again.")
    return ""
