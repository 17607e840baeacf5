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


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_linear_cross_entropy_matches_torch(bias, chunk):
    """The kernel alone, against F.cross_entropy on full logits: loss and dL/dh, with and
    without a head bias, for chunk sizes that do and do not divide the rows."""
    from lora_studio.engine.loss import LinearCrossEntropy

    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 24, generator=g, requires_grad=True)
    w = torch.randn(101, 24, generator=g)
    b = torch.randn(101, generator=g) if bias else None
    y = torch.randint(0, 101, (37,), generator=g)
    ref = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w, b), y)
    (ref_grad,) = torch.autograd.grad(ref * 3.0, h)
    got = LinearCrossEntropy.apply(h, w, b, y, 37, chunk)
    (got_grad,) = torch.autograd.grad(got * 3.0, h)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_linear_cross_entropy_extreme_logits():
    """Logits in the thousands: the max is subtracted before exp, so nothing overflows."""
    from lora_studio.engine.loss import LinearCrossEntropy

    g = torch.Generator().manual_seed(1)
    h = (torch.randn(8, 16, generator=g) * 300).requires_grad_()
    w = torch.randn(50, 16, generator=g)
    y = torch.randint(0, 50, (8,), generator=g)
    ref = torch.nn.functional.cross_entropy(h @ w.t(), y)
    got = LinearCrossEntropy.apply(h, w, None, y, 8, 3)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(torch.autograd.grad(got, h)[0], torch.autograd.grad(ref, h)[0], rtol=1e-4, atol=1e-6)


def test_cpu_chunks_share_one_logits_buffer(monkeypatch):
    """On a CPU every chunk's logits go into one buffer: a fresh 32 MB tensor per chunk paid its
    page faults each time (the step measured 0.99x with the buffer, benchmarks in docs)."""
    import lora_studio.engine.loss as L

    seen = []
    real = L._chunk_logits

    def spy(hc, weight, bias, space=None):
        out = real(hc, weight, bias, space)
        seen.append(out.untyped_storage().data_ptr())
        return out

    monkeypatch.setattr(L, "_chunk_logits", spy)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 24, generator=g, requires_grad=True)
    w, y = torch.randn(101, 24, generator=g), torch.randint(0, 101, (37,), generator=g)
    got = L.LinearCrossEntropy.apply(h, w, None, y, 37, 8)
    ref = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w), y)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    assert len(seen) == 5 and len(set(seen)) == 1  # 8 + 8 + 8 + 8 + 5 rows, one buffer
