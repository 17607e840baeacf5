"""PEFT-format files: our folders load in PEFT with the same logits, PEFT's load in ours."""

import json

import peft
import pytest
import torch
from safetensors.torch import load_file

import tiny
from lora_studio import LoraSpec, inject, load_adapter, save_adapter
from lora_studio.engine import UserError
from lora_studio.engine.adapters import read_adapter

CASES = [(arch, t) for arch in tiny.configs() for t in (["q", "v"], ["q", "k", "v", "o", "up", "down"])]


def _adapted(arch, targets, rslora=False):
    model = tiny.build(arch)
    heads = ["classifier", "score"] if arch in tiny.ENCODERS else []
    inject(model, LoraSpec(targets=targets, rank=4, alpha=8, rslora=rslora, modules_to_save=heads))
    tiny.randomize_adapters(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "classifier" in n:
                p.add_(0.3)  # a trained head, as classification runs produce
    return model


@pytest.mark.parametrize("arch,targets", CASES)
def test_peft_loads_our_adapter_with_same_logits(arch, targets, tmp_path):
    model = _adapted(arch, targets, rslora=arch == "qwen2")
    x = tiny.inputs()
    with torch.no_grad():
        ours = model(**x).logits
    save_adapter(model, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(tiny.build(arch), tmp_path).eval()
    with torch.no_grad():
        theirs = peft_model(**x).logits
        base = tiny.build(arch)(**x).logits
    assert (ours - base).abs().max() > 1e-4  # the adapter does something
    assert (theirs - ours).abs().max().item() <= 1e-5
    # and our own loader restores the same model
    again = tiny.build(arch)
    load_adapter(again, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(**x).logits, ours, rtol=0, atol=1e-6)


def test_file_layout_matches_design(tmp_path):
    model = _adapted("gpt2", ["q", "v"])
    save_adapter(model, tmp_path, "my/base")
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert cfg["fan_in_fan_out"] is True and cfg["base_model_name_or_path"] == "my/base"
    # q and v inside c_attn: one LoRA of rank 2r on the fused module, alpha scaled by 2
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16
    sd = load_file(tmp_path / "adapter_model.safetensors")
    a = sd["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
    b = sd["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
    assert a.shape == (8, 32) and b.shape == (96, 8)
    assert torch.count_nonzero(b[32:64]) == 0  # k rows: not adapted
    assert torch.count_nonzero(b[:32, 4:]) == 0 and torch.count_nonzero(b[64:, :4]) == 0  # block structure


def test_heads_saved_as_modules_to_save(tmp_path):
    model = _adapted("bert", ["q", "v"])
    save_adapter(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and cfg["modules_to_save"] == ["classifier"]
    sd = load_file(tmp_path / "adapter_model.safetensors")
    torch.testing.assert_close(sd["base_model.model.classifier.weight"], model.classifier.weight)


@pytest.mark.parametrize("arch,target_modules", [("llama", ["q_proj", "v_proj", "down_proj"]),
                                                  ("gpt2", ["c_attn", "mlp.c_proj"]),
                                                  ("bert", ["query", "value"])])
def test_peft_made_adapter_loads_in_ours(arch, target_modules, tmp_path):
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=12, target_modules=target_modules, init_lora_weights=False,
                          rank_pattern={"down_proj": 2}, alpha_pattern={"value": 3.0},
                          fan_in_fan_out=arch == "gpt2")
    peft_model = peft.get_peft_model(tiny.build(arch), cfg).eval()
    x = tiny.inputs()
    with torch.no_grad():
        theirs = peft_model(**x).logits
    peft_model.save_pretrained(tmp_path)
    ours = tiny.build(arch).eval()
    load_adapter(ours, tmp_path)
    with torch.no_grad():
        assert (ours(**x).logits - theirs).abs().max().item() <= 1e-5


def test_bad_adapter_folders(tmp_path):
    with pytest.raises(UserError, match="no adapter_config.json"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(UserError, match="only LoRA"):
        read_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_adapter(tmp_path)


def test_adapter_for_another_model_is_refused(tmp_path):
    save_adapter(_adapted("llama", ["q", "v"]), tmp_path)
    with pytest.raises(UserError, match="does not fit this model|another base model"):
        load_adapter(tiny.build("gpt2"), tmp_path)
