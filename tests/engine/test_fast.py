"""The CPU fast dropout: same law as torch's, and the attention path computes the same function."""

import pytest
import torch

import tiny
from lora_studio import LoraSpec, inject
from lora_studio.engine.fast import FastDropout, fast_dropout, speed_up_dropout


def test_fast_dropout_law():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = fast_dropout(x, 0.1)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.003  # 1e6 draws: sd 0.0003
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    d = FastDropout(0.1).eval()
    assert torch.equal(d(x), x)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])  # bidirectional with padding mask; causal
def test_swapped_model_equals_reference(arch):
    ref = tiny.build(arch)
    fast = tiny.build(arch)
    inject(ref, LoraSpec(targets=["q", "v"], rank=2))
    inject(fast, LoraSpec(targets=["q", "v"], rank=2))
    fast.load_state_dict(ref.state_dict())
    assert speed_up_dropout(fast) > 0 and fast.config._attn_implementation == "lora_studio_sdpa"
    x = tiny.inputs(batch=3, seq=6)
    x["attention_mask"][1, 4:] = 0  # padding goes through the mask path
    ref.eval()
    for m in fast.modules():  # train mode, but a dropout that keeps everything: same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 1e-12
    fast.train()
    with torch.no_grad():
        torch.testing.assert_close(fast(**x).logits, ref(**x).logits, rtol=1e-5, atol=1e-6)
