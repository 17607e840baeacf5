"""Merge an adapter into its base weights and write a Hugging Face model folder, verified.

The folder is written as `<out>.partial-<pid>` and renamed to `<out>` only after the merged
model has been saved and checked: an interrupted export never leaves a folder that looks done.
The check: max |logits(merged) - logits(base + adapter)| on a probe batch, against a tolerance
that depends on the export dtype.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lora_studio.engine import UserError

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 6e-2, torch.float16: 1e-2}
PROBE = ["LoRA Studio merges the update into the base weights.",
         "The quick brown fox jumps over the lazy dog.",
         "Low-rank adaptation freezes the pretrained model."]


@dataclass
class ExportResult:
    path: str
    max_abs_diff: float  # max |logits(merged) - logits(base + adapter)| on the probe batch
    tolerance: float
    ok: bool
    dtype: str
    files: list[str]


def run_info(run_dir: Path) -> tuple[str, str, list[str] | None]:
    """(base model, task, label names) recorded in a run folder or a PEFT adapter folder."""
    from lora_studio.config import RunConfig
    from lora_studio.engine.train import LABELS_FILE, RUN_FILE, model_ref

    labels = json.loads((run_dir / LABELS_FILE).read_text()) if (run_dir / LABELS_FILE).is_file() else None
    if (run_dir / RUN_FILE).is_file():
        cfg = RunConfig.load(run_dir / RUN_FILE)
        return model_ref(cfg), cfg.model.task, labels
    cfg_path = run_dir / "adapter_config.json"
    if not cfg_path.is_file():
        raise UserError(f"{run_dir} is neither a run folder nor a PEFT adapter folder (no adapter_config.json)")
    cfg = json.loads(cfg_path.read_text())
    task = "classification" if cfg.get("task_type") == "SEQ_CLS" else "causal-lm"
    return cfg.get("base_model_name_or_path") or "", task, labels


def merge_and_export(run_dir, out_dir, model: str | None = None, dtype: str = "float32",
                     max_shard_size: str = "2GB", progress: Callable[[str, float], None] | None = None,
                     allow_pickle: bool = False, trust_remote_code: bool = False) -> ExportResult:
    """Load base + adapter, merge, save a model folder at `out_dir`, verify it, return the figure."""
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.lora import adapters_disabled, merge, unload
    from lora_studio.engine.models import DTYPES, load_model, load_tokenizer

    say = progress or (lambda msg, frac: None)
    run_dir, out = Path(run_dir), Path(out_dir)
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} unknown: use float32, bfloat16 or float16")
    target = DTYPES[dtype]
    base_ref, task, labels = run_info(run_dir)
    base_ref = model or base_ref
    if not base_ref:
        raise UserError(f"{run_dir} does not say which base model it adapts: pass --model")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose a new folder for the merged model")
    say("loading base model", 0.05)
    base = load_model(base_ref, task, dtype=torch.float32, id2label=dict(enumerate(labels)) if labels else None,
                      allow_pickle=allow_pickle, trust_remote_code=trust_remote_code).eval()
    tok = load_tokenizer(base_ref, trust_remote_code)
    say("loading adapter", 0.2)
    load_adapter(base, run_dir)
    probe = tok(PROBE, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = base(**probe).logits.float()  # base + adapter, unmerged, fp32
        with adapters_disabled(base):
            plain = base(**probe).logits.float()
    say("merging", 0.35)
    merge(base)
    merged = unload(base, merge_first=False).to(target)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        say("writing safetensors", 0.5)
        merged.config.dtype = target
        merged.save_pretrained(tmp, max_shard_size=max_shard_size)
        tok.save_pretrained(tmp)
        say("verifying the written model", 0.8)
        from lora_studio.engine.models import auto_class

        with torch.no_grad():
            reloaded = auto_class(task).from_pretrained(tmp, dtype=target).eval()
            got = reloaded(**probe).logits.float()
        diff = (got - expected).abs().max().item()
        tol = TOLERANCE[target] * max(1.0, expected.abs().max().item())
        changed = (expected - plain).abs().max().item()
        ok = diff <= tol
        files = sorted(p.name for p in tmp.iterdir())
        if not ok:
            raise UserError(f"merged model differs from base + adapter by {diff:.3g} (tolerance {tol:.3g}); "
                            "not exported. Try --dtype float32")
        (tmp / "lora_studio_export.json").write_text(json.dumps(
            {"base_model": base_ref, "adapter": str(run_dir.resolve()), "dtype": dtype,
             "max_abs_diff": diff, "tolerance": tol, "adapter_effect": changed}, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say("done", 1.0)
    return ExportResult(str(out), diff, tol, ok, dtype, files + ["lora_studio_export.json"])
