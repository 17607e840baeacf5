"""Budget counts come from the config alone and equal what inject() creates."""

import pytest
import transformers as T

import tiny
from lora_studio import LoraSpec, inject
from lora_studio.engine.budget import estimate
from lora_studio.engine.models import skeleton_from_config


@pytest.mark.parametrize("arch", list(tiny.configs()))
@pytest.mark.parametrize("targets", [["q", "v"], ["q", "k", "v", "o"], ["k", "up", "down"]])
def test_counts_equal_injected_parameters(arch, targets):
    task = "causal-lm" if arch in tiny.CAUSAL else "classification"
    heads = ["classifier", "score"] if task == "classification" else []
    spec = LoraSpec(targets=targets, rank=3, layers=[1] if arch == "gpt2" else None, modules_to_save=heads)
    meta = skeleton_from_config(tiny.configs()[arch], task)
    assert next(meta.parameters()).device.type == "meta"
    b = estimate(meta, spec)
    model = tiny.build(arch, task=task)
    base_total = sum(p.numel() for p in model.parameters())
    inject(model, spec)
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert b.adapter_params == lora
    assert b.trainable_params == trainable
    assert b.base_params == base_total
    assert b.total_params == base_total + lora
    assert sum(m.params for m in b.modules) == lora
    assert b.trainable_percent == pytest.approx(100 * trainable / (base_total + lora))


def test_formula_r_times_in_plus_out():
    meta = skeleton_from_config(tiny.configs()["llama"], "causal-lm")
    b = estimate(meta, LoraSpec(targets=["q", "k"], rank=4))
    # q: 32x32, k: 16x32 (GQA), 2 layers
    assert [m.params for m in b.modules] == [4 * 64, 4 * 48] * 2
    assert b.by_target == {"q": 2 * 256, "k": 2 * 192}
    assert b.memory_lora.total < b.memory_full.total


def test_seventy_billion_config_needs_no_weights():
    cfg = T.LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=128256)
    meta = skeleton_from_config(cfg, "causal-lm")
    b = estimate(meta, LoraSpec(targets=["q", "k", "v", "o"], rank=16), precision="bf16")
    assert b.base_params == 70_553_706_496
    # per layer: q 16*(8192+8192), k and v 16*(8192+1024), o 16*(8192+8192)
    assert b.adapter_params == 80 * 16 * (2 * 16384 + 2 * 9216)
    assert b.memory_full.weights > 2 * 70e9  # bf16 + fp32 master
