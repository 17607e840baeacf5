"""The CPU fast dropout: same law as torch's, and the attention path computes the same function."""

import pytest
import torch

import tiny
from lora_studio import LoraSpec, inject
from lora_studio.engine.fast import FastDropout, fast_dropout, speed_up_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.02])
def test_fast_dropout_law(p):
    torch.manual_seed(0)
    x = torch.ones(1001, 999)  # not a multiple of 4 elements: the last 64-bit draw is cut
    y = fast_dropout(x, p)
    p_eff = round(p * 65536) / 65536
    assert abs(p_eff - p) < 8e-6
    kept = y != 0
    sd = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 6 * sd
    # each of the four 16-bit lanes of a 64-bit draw is uniform (no lane loses its sign bit)
    lanes = kept.flatten()[: x.numel() // 4 * 4].view(-1, 4).float().mean(0)
    assert (lanes - (1 - p)).abs().max().item() < 6 * sd * 2
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p_eff)))
    n = 400_000  # unbiased: E[out] = x (output values are 0 or 1 / (1 - p_eff))
    assert abs(fast_dropout(torch.ones(n), p).mean().item() - 1) < 6 * (p / (1 - p) / n) ** 0.5
    d = FastDropout(p).eval()
    assert torch.equal(d(x), x)


def test_fast_dropout_is_seeded():
    torch.manual_seed(5)
    a = fast_dropout(torch.ones(64, 64), 0.3)
    torch.manual_seed(5)
    assert torch.equal(a, fast_dropout(torch.ones(64, 64), 0.3))


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
