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


@pytest.mark.parametrize("cls", ["NewGELUActivation", "FastGELUActivation"])
def test_fused_gelu_is_the_same_function(cls):
    import transformers.activations as acts

    from lora_studio.engine.fast import TanhGELU

    x = (torch.randn(4096, dtype=torch.float64) * 4).requires_grad_()
    ref = getattr(acts, cls)()(x)
    got = TanhGELU()(x)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)  # float64: the formula itself agrees
    g = torch.randn_like(x)
    torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=1e-9, atol=1e-9)
    x32 = x.detach().float()  # float32: within rounding
    torch.testing.assert_close(TanhGELU()(x32), getattr(acts, cls)()(x32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "phi3", "llama"])
def test_speed_up_keeps_outputs_and_gradients(arch):
    """speed_up (as training applies it) on a model without dropout: logits and every LoRA
    gradient equal the untouched model's."""
    from lora_studio.engine.fast import TanhGELU, speed_up

    ref, fast = tiny.build(arch), tiny.build(arch)
    for m in (ref, fast):
        inject(m, LoraSpec(targets=["q", "v"], rank=2))
    tiny.randomize_adapters(ref)
    fast.load_state_dict(ref.state_dict())
    done = speed_up(fast, "cpu")
    swapped = sum(isinstance(m, TanhGELU) for m in fast.modules())
    assert done["activations"] == swapped and (swapped > 0) == (arch == "gpt2")  # gpt2: gelu_new
    ref.eval(), fast.eval()
    x = tiny.inputs(batch=2, seq=7)
    outs = []
    for m in (ref, fast):
        logits = m(**x).logits
        params = [p for p in m.parameters() if p.requires_grad]
        outs.append((logits, torch.autograd.grad(logits.square().mean(), params)))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-6)
    for g, r in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_dropout_attention_equals_formula(monkeypatch, causal, padding):
    """The CPU attention with dropout equals softmax(q k^T s + mask) * keep / (1 - p) @ v for the
    very mask it drew (keep_mask is intercepted), forward and backward."""
    import lora_studio.engine.fast as fast

    drawn = {}

    def spy(x, p):
        keep, p_eff = real(x, p)
        drawn["keep"], drawn["p"] = keep, p_eff
        return keep, p_eff

    real = fast.keep_mask
    monkeypatch.setattr(fast, "keep_mask", spy)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, requires_grad=True) for _ in range(3))
    mask = None
    if padding:  # bool mask, True = attend; the second sequence has 2 padded keys
        mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
        mask[1, :, :, 3:] = False
    module = type("M", (), {"is_causal": causal})()
    out, _ = fast._attention(module, q, k, v, mask, dropout=0.3, scaling=0.5, is_causal=causal if mask is None else None)
    scores = (q @ k.transpose(2, 3)) * 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    elif causal:
        scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), torch.finfo(scores.dtype).min)
    ref = ((scores.softmax(-1) * drawn["keep"] / (1 - drawn["p"])) @ v).transpose(1, 2)
    assert 0 < drawn["keep"].float().mean() < 1  # something was dropped, something kept
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), w), torch.autograd.grad(ref, (q, k, v), w)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "phi3"])
def test_fast_rmsnorm_equals_the_models_own(arch):
    """Each Llama-form RMSNorm, swapped by speed_up: the same output, input gradient and (when
    trained) weight gradient as transformers' module, fp32 and bf16; gemma's (1 + w) form is left."""
    import copy

    from lora_studio.engine.fast import FastRMSNorm, fuse_norms

    model = tiny.build(arch)
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    refs = [copy.deepcopy(m) for m in norms]
    assert fuse_norms(model) == len(norms) == 2 * model.config.num_hidden_layers + 1
    g = torch.Generator().manual_seed(0)
    for fast, ref in zip(norms, refs):
        assert isinstance(fast, FastRMSNorm) and isinstance(fast, type(ref))
        with torch.no_grad():
            ref.weight.add_(torch.randn(ref.weight.shape, generator=g))
            fast.weight.copy_(ref.weight)
        x = torch.randn(3, 5, ref.weight.shape[0], generator=g) * 3
        up = torch.randn(x.shape, generator=g)
        results = []
        for m in (ref, fast):
            xi = x.clone().requires_grad_(True)
            m.weight.requires_grad_(True)
            out = m(xi)
            gx, gw = torch.autograd.grad((out * up).sum(), (xi, m.weight))
            results.append((out, gx, gw))
        for a, b in zip(*results):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        for m in (ref, fast):
            m.to(torch.bfloat16)
        torch.testing.assert_close(fast(x.bfloat16()), ref(x.bfloat16()), rtol=1e-2, atol=1e-2)
    assert fuse_norms(tiny.build("gemma")) == 0
