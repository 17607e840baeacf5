"""Checks made when Start (or Continue) is pressed, before any thread starts: what would make the
run fail at step 0 gets a dialog that says what to change, never a "bug" dialog after loading."""

from __future__ import annotations

GUI_FIX = "\n\nIn LoRA variants, set Base precision to “Full (bf16 / fp32)”, or train on a machine with a CUDA GPU."


def check(config) -> tuple[str, str]:
    """(error, warning) in words for a dialog ("" when none): engine.quantize.preflight, the same
    check the CLI makes, on the run's base precision and device."""
    from lora_studio.engine import warm_imports

    warm_imports()  # torch's first import happens in one thread only
    from lora_studio.engine.quantize import preflight

    error, warning = preflight(config.model.quantize, config.train.device)
    if error:
        return _sentence(error) + GUI_FIX, ""
    return "", _sentence(warning) if warning else ""


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
