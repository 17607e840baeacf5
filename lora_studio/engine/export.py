"""Merge an adapter into its base weights and write a Hugging Face model folder, verified.

The folder is written as `<out>.partial-<pid>` (inside `<out>` when that folder exists) and moved
to `<out>` only after the merged model has been saved and checked: an interrupted export never
leaves a folder that looks done, and an --overwrite replaces only what an earlier export wrote.
The check: max |logits(merged) - logits(base + adapter)| on a probe batch, against a tolerance
that depends on the export dtype. A run trained on a 4-/8-bit base is merged into the base loaded
in full precision (never re-quantized), and the result also says how far the merged model is from
the quantized base + adapter that was trained (`quantized_gap`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lora_studio.engine import runfolder
from lora_studio.engine.errors import UserError

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
    # a run trained on a 4-/8-bit base: max |logits(merged) - logits(quantized base + adapter)|,
    # how far the full-precision merge is from the model that was trained (None: not quantized)
    quantized_gap: float | None = None
    quantize: str = "none"


def check_trained(adapter_dir: Path):
    """Refuse an adapter whose every B is zero: it was never trained and would merge into the base
    model unchanged (a run killed before its first checkpoint has only its initial adapter)."""
    from lora_studio.engine.adapters import read_adapter

    ad = read_adapter(adapter_dir)
    if all(not m.B.any() for m in ad.modules.values()):
        raise UserError(f"{adapter_dir} holds an untrained adapter (every lora_B is zero): train or resume the "
                        "run first")
    return ad


def _merged_weight(layer, am) -> torch.Tensor:
    """W0 + s B A in fp32 from the adapter file's A and B, in the base module's layout; for DoRA
    m · (W0 + s B A) / ‖W0 + s B A‖ per output row (the file's magnitude vector m)."""
    w = layer.base_layer.weight.detach().float()
    w0 = w.T if layer.conv1d else w  # (out, in)
    delta = (am.B.float() @ am.A.float()) * am.scaling
    if getattr(am, "magnitude", None) is not None:  # DoRA's formula, its one home, on the file's tensors
        from lora_studio.engine.variants import dora_weight

        merged = dora_weight(w0, delta, am.magnitude.float())
    else:
        merged = w0 + delta
    return merged.T if layer.conv1d else merged


def merge_and_export(run_dir, out_dir, model: str | None = None, dtype: str = "float32",
                     max_shard_size: str = "2GB", progress: Callable[[str, float], None] | None = None,
                     allow_pickle: bool = False, trust_remote_code: bool = False,
                     overwrite: bool = False) -> ExportResult:
    """Load base + adapter, merge, save a model folder at `out_dir`, verify it, return the figure."""
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.lora import adapters_disabled, lora_layers, merge, unload
    from lora_studio.engine.models import DTYPES, load_model, load_tokenizer

    say = progress or (lambda msg, frac: None)
    run_dir, out = Path(run_dir), Path(out_dir)
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} unknown: use float32, bfloat16 or float16")
    target = DTYPES[dtype]
    info = runfolder.run_info(run_dir)
    base_ref, task, labels = model or info.base_model, info.task, info.labels
    # the run's own trust flags: a run trained on custom code or .bin weights merges as it trained
    allow_pickle, trust_remote_code = allow_pickle or info.allow_pickle, trust_remote_code or info.trust_remote_code
    if not base_ref:
        raise UserError(f"{run_dir} does not say which base model it adapts: pass --model")
    out = runfolder.check_export_target(out, run_dir, overwrite, "merged model")
    adapter_dir = runfolder.adapter_of(run_dir)
    ad = check_trained(adapter_dir)
    from lora_studio.engine.quantize import quantized_logits, run_quantize

    quantize = run_quantize(run_dir)
    tok = load_tokenizer(base_ref, trust_remote_code)
    probe = tok(PROBE, return_tensors="pt", padding=True)
    id2label = dict(enumerate(labels)) if labels else None
    trained = None
    if quantize != "none":  # first, so the quantized and the full model are never both in memory
        say(f"running the {quantize} base + adapter that was trained", 0.02)
        trained = quantized_logits(base_ref, task, adapter_dir, quantize, probe, id2label, allow_pickle,
                                   trust_remote_code)
    say("loading base model in full precision" if trained is not None else "loading base model", 0.05)
    base = load_model(base_ref, task, dtype=torch.float32, id2label=id2label,
                      allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    say(f"loading adapter ({adapter_dir})", 0.2)
    load_adapter(base, adapter_dir)
    base.eval()  # after the adapter is in: LoRA dropout must be off for the reference logits
    with torch.no_grad():
        expected = base(**probe).logits.float()  # base + adapter, unmerged, fp32
        with adapters_disabled(base):
            plain = base(**probe).logits.float()
        # the merged weights, computed independently from the adapter file: W0 + s B A
        layers = lora_layers(base)
        want = {name: _merged_weight(layers[name], am).to(target) for name, am in ad.modules.items()}
    say("merging", 0.35)
    merge(base)
    merged = unload(base, merge_first=False).to(target)
    tmp = runfolder.export_temp(out)
    try:
        say("writing safetensors", 0.5)
        merged.config.dtype = target
        merged.save_pretrained(tmp, max_shard_size=max_shard_size)
        tok.save_pretrained(tmp)
        say("verifying the written model", 0.8)
        from lora_studio.engine.models import auto_class

        with torch.no_grad():
            reloaded = auto_class(task).from_pretrained(tmp, dtype=torch.float32).eval()
            got = reloaded(**probe).logits.float()
            # every merged weight as written equals W0 + s B A rounded to the export dtype (<= 1 ulp)
            weight_err = 0.0
            for name, w in want.items():
                saved = reloaded.get_submodule(name).weight.float()
                ulp = torch.finfo(target).eps * w.float().abs().clamp_min(1e-20)
                weight_err = max(weight_err, ((saved - w.float()).abs() / ulp).max().item())
        diff = (got - expected).abs().max().item()
        tol = TOLERANCE[target] * max(1.0, expected.abs().max().item())
        changed = (expected - plain).abs().max().item()
        ok = diff <= tol and weight_err <= 1.0
        gap = None if trained is None else (got - trained).abs().max().item()
        files = sorted(p.name for p in tmp.iterdir())
        if weight_err > 1.0:
            raise UserError(f"the written weights differ from W0 + s·B·A by {weight_err:.3g} units in the last place; "
                            "not exported (a bug: please report it)")
        if not ok:
            raise UserError(f"merged model differs from base + adapter by {diff:.3g} (tolerance {tol:.3g}); "
                            "not exported. Try --dtype float32")
        from lora_studio.engine.modelcard import write_model_card

        write_model_card(tmp, run_dir, "transformers", base_ref, task, files=files, adapter_dir=adapter_dir,
                         base_params=sum(p.numel() for p in merged.parameters()),
                         verification={"max abs logit diff, merged vs base + adapter": diff})
        runfolder.write_export_manifest(tmp, "merged model", base_model=base_ref, adapter=str(run_dir.resolve()),
                                        dtype=dtype, max_abs_diff=diff, tolerance=tol, adapter_effect=changed,
                                        quantize=quantize, quantized_gap=gap)
        runfolder.replace_export(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say("done", 1.0)
    return ExportResult(str(out), diff, tol, ok, dtype, sorted(p.name for p in out.iterdir()), gap, quantize)


def export_adapter(run_dir, out_dir, overwrite: bool = False) -> list[str]:
    """Copy the newest PEFT adapter of a run (what PeftModel.from_pretrained reads) to a folder of
    its own, with the run's labels; refused for an untrained or damaged adapter."""
    run_dir = Path(run_dir)
    adapter = runfolder.adapter_of(run_dir)
    check_trained(adapter)
    out = runfolder.check_export_target(out_dir, run_dir, overwrite, "adapter")
    tmp = runfolder.export_temp(out)
    tmp.mkdir(parents=True)
    try:
        names = [runfolder.ADAPTER_CONFIG, runfolder.ADAPTER_WEIGHTS, "lora_studio.json"]
        files = [n for n in names if (adapter / n).is_file()]
        for n in files:
            shutil.copy2(adapter / n, tmp / n)
        labels = runfolder.read_labels(runfolder.run_of(adapter))
        if labels:
            (tmp / runfolder.LABELS_FILE).write_text(json.dumps(labels, indent=2))
            files.append(runfolder.LABELS_FILE)
        from lora_studio.engine.modelcard import write_model_card

        info = runfolder.run_info(run_dir)
        write_model_card(tmp, run_dir, "peft", info.base_model, info.task, files=list(files), adapter_dir=adapter)
        files += ["README.md"] + (["loss.png"] if (tmp / "loss.png").is_file() else [])
        runfolder.write_export_manifest(tmp, "adapter", adapter=str(adapter.resolve()))
        runfolder.replace_export(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files
