"""The fused chunked LM loss equals Hugging Face's loss, in value and in gradients."""

import pytest
import torch

import tiny
from lora_studio import LoraSpec, inject
from lora_studio.engine.loss import causal_lm_loss, supports_fused_loss


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "opt", "phi3", "qwen2"])
@pytest.mark.parametrize("chunk", [3, 1024])
def test_fused_loss_matches_reference(arch, chunk):
    model = tiny.build(arch).eval()  # no dropout: both passes must see the same network
    inject(model, LoraSpec(targets=["q", "v", "o"], rank=4))
    tiny.randomize_adapters(model)
    assert supports_fused_loss(model)
    x = tiny.inputs(batch=3, seq=9)
    labels = x["input_ids"].clone()
    labels[0, :4] = -100  # a prompt: no loss there
    labels[2, 6:] = -100  # padding
    x["attention_mask"][2, 6:] = 0
    batch = {**x, "labels": labels}
    params = [p for p in model.parameters() if p.requires_grad]

    ref = model(**batch).loss
    ref_grads = torch.autograd.grad(ref, params)
    got = causal_lm_loss(model, batch, chunk=chunk)
    got_grads = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_not_used_where_logits_are_not_plain():
    model = tiny.build("bert")
    assert not supports_fused_loss(model)
