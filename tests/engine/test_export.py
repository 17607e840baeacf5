"""Merge + export: a Hugging Face folder that loads and equals base + adapter."""

import json

import pytest
import torch
import transformers as T

import tiny
from lora_studio import LoraSpec, inject, save_adapter
from lora_studio.engine import UserError
from lora_studio.engine.export import merge_and_export
from lora_studio.engine.models import load_model, load_tokenizer


def _run(tmp_path, arch, targets):
    base = tiny.model_folder(tmp_path / "base", arch)
    task = "causal-lm" if arch in tiny.CAUSAL else "classification"
    model = load_model(str(base), task)
    inject(model, LoraSpec(targets=targets, rank=4, alpha=8,
                           modules_to_save=["classifier"] if task == "classification" else []))
    tiny.randomize_adapters(model, scale=0.2)
    save_adapter(model, tmp_path / "run", str(base))
    return base, model, task


@pytest.mark.parametrize("arch,targets,dtype", [("llama", ["q", "k", "v", "o"], "float32"),
                                                ("gpt2", ["q", "v"], "float32"),
                                                ("bert", ["q", "v"], "float32"),
                                                ("llama", ["q", "v"], "bfloat16")])
def test_export_loads_and_equals_base_plus_adapter(tmp_path, arch, targets, dtype):
    base, model, task = _run(tmp_path, arch, targets)
    result = merge_and_export(tmp_path / "run", tmp_path / "merged", dtype=dtype)
    assert result.ok and result.max_abs_diff <= result.tolerance
    out = tmp_path / "merged"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(".partial" in p.name for p in tmp_path.iterdir())
    cls = T.AutoModelForCausalLM if task == "causal-lm" else T.AutoModelForSequenceClassification
    merged = cls.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    tok = load_tokenizer(str(base))
    x = tok(["a small probe sentence"], return_tensors="pt")
    with torch.no_grad():
        expected = model.eval()(**x).logits
        got = merged(**x).logits.float()
    tol = 1e-5 if dtype == "float32" else 5e-2
    assert (got - expected).abs().max().item() <= tol
    report = json.loads((out / "lora_studio_export.json").read_text())
    assert report["max_abs_diff"] == pytest.approx(result.max_abs_diff)


def test_export_shards_large_models(tmp_path):
    _run(tmp_path, "llama", ["q", "v"])
    merge_and_export(tmp_path / "run", tmp_path / "merged", max_shard_size="500KB")
    names = {p.name for p in (tmp_path / "merged").iterdir()}
    assert "model.safetensors.index.json" in names and sum(n.endswith(".safetensors") for n in names) > 1


def test_export_refuses_non_empty_target_and_missing_base(tmp_path):
    _run(tmp_path, "llama", ["q"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        merge_and_export(tmp_path / "run", tmp_path / "busy")
    assert (tmp_path / "busy" / "x").read_text() == "mine"
    with pytest.raises(UserError, match="does not exist"):
        merge_and_export(tmp_path / "run", tmp_path / "m2", model=str(tmp_path / "nope"))


def test_pickle_only_model_is_refused(tmp_path):
    base = tiny.model_folder(tmp_path / "base", "llama")
    model = T.AutoModelForCausalLM.from_pretrained(base)
    model.save_pretrained(tmp_path / "pickled", safe_serialization=False) if "safe_serialization" in \
        model.save_pretrained.__code__.co_varnames else None
    pickled = tmp_path / "pickled"
    if not pickled.exists():  # transformers 5 writes safetensors only: make a .bin by hand
        pickled.mkdir()
        (pickled / "config.json").write_text((base / "config.json").read_text())
        torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    for f in pickled.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(UserError, match="pickled weights"):
        load_model(str(pickled), "causal-lm")
