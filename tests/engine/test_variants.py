"""DoRA, PiSSA/OLoRA/Gaussian init and LoRA+: the math against independent formulas, files
against PEFT 0.21 in both directions, merge exact."""

import json

import peft
import pytest
import torch
from safetensors.torch import load_file

import tiny
from lora_studio import LoraSpec, inject, load_adapter, merge, save_adapter, unmerge
from lora_studio.engine import UserError
from lora_studio.engine.lora import lora_layers
from lora_studio.engine.optim import optimizer_groups

DORA = [("llama", ["q", "v"], ["q_proj", "v_proj"]), ("gpt2", ["c_attn"], ["c_attn"])]


def _logits(model, x):
    with torch.no_grad():
        return model(**x).logits


def _dora_model(arch, targets, seed=2):
    model = tiny.build(arch)
    inject(model, LoraSpec(targets=targets, rank=4, alpha=8, dora=True))
    tiny.randomize_adapters(model, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained magnitude, away from its initial ‖W0 + sBA‖
        for m in lora_layers(model).values():
            m.lora_magnitude_vector.mul_(1 + 0.2 * torch.randn(m.lora_magnitude_vector.shape, generator=g))
    return model


def test_dora_layer_matches_the_formula():
    model = _dora_model("llama", ["q"])
    m = next(iter(lora_layers(model).values()))
    x = torch.randn(3, m.in_features)
    W0 = m.base_layer.weight.detach().double()
    V = W0 + m.scaling * (m.lora_B.double() @ m.lora_A.double())
    W = m.lora_magnitude_vector.double()[:, None] * V / V.norm(dim=1, keepdim=True)  # m·V/‖V‖_c
    expect = x.double() @ W.T + (m.base_layer.bias.double() if m.base_layer.bias is not None else 0)
    torch.testing.assert_close(m(x).double(), expect, atol=1e-5, rtol=1e-5)


def test_dora_norm_is_detached():
    model = _dora_model("llama", ["q"])
    m = next(iter(lora_layers(model).values()))
    x = torch.randn(3, m.in_features)
    m(x).sum().backward()
    # with the norm a constant c, ∂/∂m of Σ (m/c)·(V x) is (V x)/c summed over the batch
    V = m.base_layer.weight.detach() + m.scaling * (m.lora_B @ m.lora_A).detach()
    c = V.norm(dim=1)
    torch.testing.assert_close(m.lora_magnitude_vector.grad, (x @ V.T).sum(0) / c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,targets,peft_targets", DORA)
def test_dora_merge_is_exact(arch, targets, peft_targets):
    model = _dora_model(arch, targets)
    x = tiny.inputs()
    before = _logits(model, x)
    merge(model)
    torch.testing.assert_close(_logits(model, x), before, atol=1e-5, rtol=0)
    unmerge(model)
    torch.testing.assert_close(_logits(model, x), before, atol=1e-5, rtol=0)
    base = _logits(tiny.build(arch), x)
    assert (before - base).abs().max() > 1e-3  # the adapter does change the output


@pytest.mark.parametrize("arch,targets,peft_targets", DORA)
def test_peft_loads_our_dora(arch, targets, peft_targets, tmp_path):
    model = _dora_model(arch, targets)
    x = tiny.inputs()
    save_adapter(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["use_dora"] is True
    keys = load_file(str(tmp_path / "adapter_model.safetensors"))
    mags = [k for k in keys if k.endswith(".lora_magnitude_vector")]
    assert len(mags) == len(lora_layers(model))
    theirs = peft.PeftModel.from_pretrained(tiny.build(arch), tmp_path).eval()
    torch.testing.assert_close(_logits(theirs, x), _logits(model, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,targets,peft_targets", DORA)
def test_we_load_peft_dora(arch, targets, peft_targets, tmp_path):
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=peft_targets, use_dora=True,
                          init_lora_weights=False, fan_in_fan_out=arch == "gpt2")
    theirs = peft.get_peft_model(tiny.build(arch), cfg)
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if "lora_magnitude_vector" in n:
                p.mul_(1.3)
    theirs.save_pretrained(tmp_path)
    x = tiny.inputs()
    ours = tiny.build(arch)
    load_adapter(ours, tmp_path)
    assert all(m.use_dora for m in lora_layers(ours).values())
    torch.testing.assert_close(_logits(ours, x), _logits(theirs.eval(), x), atol=1e-5, rtol=0)


def test_dora_refuses_fused_slices():
    with pytest.raises(UserError, match="fused"):
        inject(tiny.build("gpt2"), LoraSpec(targets=["q", "v"], rank=2, dora=True))


def test_budget_counts_magnitudes():
    from lora_studio.engine.budget import estimate

    plain = estimate(tiny.build("llama"), LoraSpec(targets=["q", "v"], rank=4))
    dora = estimate(tiny.build("llama"), LoraSpec(targets=["q", "v"], rank=4, dora=True))
    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, dora=True))
    real = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert dora.trainable_params == real
    assert dora.trainable_params - plain.trainable_params == sum(m.out_features for m in lora_layers(model).values())


def test_dora_spectra_use_effective_delta():
    from lora_studio.engine import spectra

    model = _dora_model("llama", ["q"])
    m = next(iter(lora_layers(model).values()))
    W0 = m.base_layer.weight.detach().clone()
    merge(model)
    dW = (m.base_layer.weight.detach() - W0).double()  # merged minus base
    unmerge(model)
    s = spectra.analyse(model, base_weights=model)[0]
    assert s.note and "DoRA" in s.note
    torch.testing.assert_close(torch.tensor(s.singular_values[:4], dtype=torch.float64),
                               torch.linalg.svdvals(dW)[:4], atol=1e-5, rtol=1e-4)


def test_a_merged_dora_model_gives_back_its_base_weights_and_spectra():
    """The variant seam: the layer holds a Dora variant (no class-level flag), and its merged
    weight gives back W0 through the variant (spectra of a merged model equal the unmerged's)."""
    from lora_studio.engine import spectra
    from lora_studio.engine.variants import Dora

    model = _dora_model("llama", ["q"])
    m = next(iter(lora_layers(model).values()))
    assert isinstance(m.variant, Dora) and m.use_dora and "dora" in m.extra_repr()
    W0 = {k: v.clone() for k, v in spectra.weights_of(model).items()}  # (a view of the live weight)
    before = spectra.analyse(model, base_weights=model)
    merge(model)
    after_w0 = spectra.weights_of(model)
    after = spectra.analyse(model, base_weights=model)
    for name, w in W0.items():
        torch.testing.assert_close(after_w0[name], w, atol=1e-5, rtol=0)
    for a, b in zip(before, after):
        torch.testing.assert_close(torch.tensor(a.singular_values), torch.tensor(b.singular_values),
                                   atol=1e-4, rtol=1e-4)


# -- PiSSA / OLoRA / Gaussian -------------------------------------------------------------
@pytest.mark.parametrize("init", ["pissa", "olora"])
@pytest.mark.parametrize("arch,targets", [("llama", ["q", "v"]), ("gpt2", ["c_attn"])])
def test_principal_init_starts_at_base_and_saves_against_original(init, arch, targets, tmp_path):
    x = tiny.inputs()
    base = _logits(tiny.build(arch), x)
    model = tiny.build(arch)
    torch.manual_seed(0)
    inject(model, LoraSpec(targets=targets, rank=4, alpha=8, init=init))
    torch.testing.assert_close(_logits(model, x), base, atol=1e-5, rtol=0)  # residual + sBA = W0
    m = next(iter(lora_layers(model).values()))
    if init == "pissa":  # s·B A is the best rank-r approximation of W0: its σ are W0's top r
        W0 = (m.base_layer.weight.detach().T if m.conv1d else m.base_layer.weight.detach()) + m.delta_weight().detach()
        torch.testing.assert_close(torch.linalg.svdvals(m.delta_weight().detach())[:4], torch.linalg.svdvals(W0)[:4],
                                   atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # training moves A and B
        for mm in lora_layers(model).values():
            mm.lora_A.add_(0.05 * torch.randn_like(mm.lora_A))
            mm.lora_B.add_(0.05 * torch.randn_like(mm.lora_B))
    trained = _logits(model, x)
    save_adapter(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["init_lora_weights"] is True
    theirs = peft.PeftModel.from_pretrained(tiny.build(arch), tmp_path).eval()  # the ORIGINAL base
    torch.testing.assert_close(_logits(theirs, x), trained, atol=1e-5, rtol=0)
    ours = tiny.build(arch)
    load_adapter(ours, tmp_path)
    torch.testing.assert_close(_logits(ours, x), trained, atol=1e-5, rtol=0)
    merge(model)
    torch.testing.assert_close(_logits(model, x), trained, atol=1e-5, rtol=0)


def test_randomised_pissa_finds_the_top_singular_values(monkeypatch):
    import lora_studio.engine.inits as V  # PiSSA is an init (engine/inits.py)

    monkeypatch.setattr(V, "EXACT_SVD_BELOW", 0)
    model = tiny.build("llama")
    with torch.no_grad():  # a decaying spectrum, as trained weights have
        for p in model.parameters():
            if p.dim() == 2 and p.shape == (32, 32):
                u, _, vh = torch.linalg.svd(torch.randn(32, 32))
                p.copy_(u @ torch.diag(0.7 ** torch.arange(32.0)) @ vh)
    torch.manual_seed(0)
    inject(model, LoraSpec(targets=["q"], rank=4, alpha=8, init="pissa"))
    m = next(iter(lora_layers(model).values()))
    top = torch.linalg.svdvals(m.delta_weight().detach())[:4]
    torch.testing.assert_close(top, 0.7 ** torch.arange(4.0), atol=1e-4, rtol=1e-4)


def test_principal_init_refuses_fused_slices():
    with pytest.raises(UserError, match="fused"):
        inject(tiny.build("gpt2"), LoraSpec(targets=["q", "v"], rank=2, init="pissa"))


def test_unknown_init_is_refused():
    with pytest.raises(UserError, match="init"):
        LoraSpec(init="svd")


def test_gaussian_init_as_peft():
    model = tiny.build("llama")
    torch.manual_seed(0)
    inject(model, LoraSpec(targets=["q"], rank=4, init="gaussian"))
    A = torch.cat([m.lora_A.detach().flatten() for m in lora_layers(model).values()])
    assert abs(A.std().item() - 1 / 4) < 0.03  # N(0, 1/r), as PEFT's "gaussian"
    assert all((m.lora_B == 0).all() for m in lora_layers(model).values())


# -- LoRA+ --------------------------------------------------------------------------------
def test_loraplus_groups_and_ratio():
    model = tiny.build("bert")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, modules_to_save=["classifier"]))
    groups = optimizer_groups(model, 1e-3, 16.0)
    assert [g["lr"] for g in groups] == [1e-3, 16e-3]
    names = {id(p): n for n, p in model.named_parameters()}
    slow = {names[id(p)] for p in groups[0]["params"]}
    fast = {names[id(p)] for p in groups[1]["params"]}
    assert fast and all(n.endswith("lora_B") for n in fast)
    assert any(n.endswith("lora_A") for n in slow) and any("classifier" in n for n in slow)
    assert not any(n.endswith("lora_B") for n in slow)
    assert len(slow) + len(fast) == sum(p.requires_grad for p in model.parameters())
    assert len(optimizer_groups(model, 1e-3, 1.0)) == 1
