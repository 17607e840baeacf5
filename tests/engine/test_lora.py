"""The LoRA layer: exact start, merge/unmerge, fused slices, dtypes, errors."""

import pytest
import torch
import torch.nn.functional as F

import tiny
from lora_studio import LoraSpec, inject, merge, unmerge
from lora_studio.engine import UserError
from lora_studio.engine.lora import LoraLayer, adapters_disabled, lora_layers, unload

ALL = ["q", "k", "v", "o", "gate", "up", "down"]


@pytest.mark.parametrize("arch", list(tiny.configs()))
def test_inject_starts_at_base_and_merge_is_exact(arch):
    model = tiny.build(arch)
    x = tiny.inputs()
    with torch.no_grad():
        base = model(**x).logits
    targets = [t for t in ALL if t not in ("gate",) or arch in ("llama", "mistral", "qwen2", "gemma", "phi3")]
    names = inject(model, LoraSpec(targets=targets, rank=4, alpha=8))
    assert names and all(isinstance(model.get_submodule(n), LoraLayer) for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)  # base frozen, adapters only
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, base, rtol=0, atol=0)  # B = 0: exactly the base
        tiny.randomize_adapters(model)
        adapted = model(**x).logits
        assert (adapted - base).abs().max() > 1e-3
        merge(model)
        torch.testing.assert_close(model(**x).logits, adapted, rtol=1e-5, atol=1e-5)
        unmerge(model)
        torch.testing.assert_close(model(**x).logits, adapted, rtol=1e-5, atol=1e-5)
        with adapters_disabled(model):
            torch.testing.assert_close(model(**x).logits, base, rtol=1e-5, atol=1e-5)


def _dense_reference(layer: LoraLayer, x):
    """h = W0 x + s * B A x computed from the dense matrices, independently of the layer code."""
    w = layer.base_layer.weight
    w0 = w.T if layer.conv1d else w
    bias = layer.base_layer.bias
    return x @ w0.T + (bias if bias is not None else 0) + (x @ layer.delta_weight().T)


@pytest.mark.parametrize("arch,targets", [("gpt2", ["q", "v"]), ("gpt_neox", ["q", "v"]), ("phi3", ["k", "v"]),
                                          ("phi3", ["up"]), ("llama", ["q"])])
def test_layer_matches_dense_formula_and_untouched_slices(arch, targets):
    model = tiny.build(arch)
    inject(model, LoraSpec(targets=targets, rank=3, alpha=5))
    tiny.randomize_adapters(model)
    layer = next(iter(lora_layers(model).values()))
    x = torch.randn(4, layer.in_features)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _dense_reference(layer, x), rtol=1e-5, atol=1e-5)
    if layer.slices:
        adapted = set(layer.row_index.tolist())
        untouched = [r for r in range(layer.out_features) if r not in adapted]
        assert untouched  # some rows of the fused matrix are not ticked
        delta = layer.delta_weight()
        assert torch.count_nonzero(delta[untouched]) == 0
        # slice parameters only: r * (in + rows) per ticked slice, nothing for the others
        assert layer.lora_B.shape[0] == len(adapted)
        w = layer.base_layer.weight.detach().clone()
        merge(model)
        w2 = layer.base_layer.weight
        cols = (w2[:, untouched], w[:, untouched]) if layer.conv1d else (w2[untouched], w[untouched])
        assert torch.equal(*cols)  # bit-identical after merge


def test_gpt_neox_slices_are_interleaved_per_head():
    model = tiny.build("gpt_neox")
    inject(model, LoraSpec(targets=["v"], rank=2))
    layer = next(iter(lora_layers(model).values()))
    hs = 32 // 4
    expect = [h * 3 * hs + 2 * hs + i for h in range(4) for i in range(hs)]
    assert layer.row_index.tolist() == expect


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_merge_in_half_precision_computes_delta_in_fp32(dtype):
    model = tiny.build("llama").to(dtype)
    inject(model, LoraSpec(targets=["q", "v"], rank=4))
    tiny.randomize_adapters(model)
    layer = next(iter(lora_layers(model).values()))
    assert layer.lora_A.dtype == torch.float32  # fp32 adapters over a half base
    w0 = layer.base_layer.weight.detach().clone()
    expected = (w0.float() + layer.delta_weight(torch.float32)).to(dtype)
    merge(model)
    assert torch.equal(layer.base_layer.weight, expected)
    unmerge(model)
    tol = {torch.float32: 1e-6, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(layer.base_layer.weight.float(), w0.float(), rtol=0, atol=tol)


def test_scaling_and_rslora():
    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q"], rank=4, alpha=8, rslora=True))
    assert next(iter(lora_layers(model).values())).scaling == pytest.approx(8 / 2)
    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q"], rank=4, alpha=8))
    assert next(iter(lora_layers(model).values())).scaling == pytest.approx(2.0)


def test_layers_selection_and_dropout():
    model = tiny.build("llama")
    names = inject(model, LoraSpec(targets=["q", "v"], rank=2, layers=[1], dropout=0.5))
    assert names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    layer = model.get_submodule(names[0])
    assert layer.dropout is not None and layer.dropout.p == 0.5
    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q"], rank=2))
    assert all(m.dropout is None for m in lora_layers(model).values())  # p = 0: no dropout op at all


def test_gradients_only_reach_adapters():
    model = tiny.build("gpt2")
    inject(model, LoraSpec(targets=["q", "v", "o"], rank=2))
    tiny.randomize_adapters(model)
    x = tiny.inputs()
    out = model(**x, labels=x["input_ids"])
    out.loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (".lora_" in n), n


def test_unload_gives_plain_model_with_merged_weights():
    model = tiny.build("llama")
    x = tiny.inputs()
    inject(model, LoraSpec(targets=["q", "k", "v", "o"], rank=4))
    tiny.randomize_adapters(model)
    with torch.no_grad():
        adapted = model(**x).logits
        unload(model)
        assert not lora_layers(model)
        assert all(type(m).__name__ == "Linear" for n, m in model.named_modules() if n.endswith("q_proj"))
        torch.testing.assert_close(model(**x).logits, adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(rank=0), "rank must be a positive"),
    (dict(rank=-3), "rank must be a positive"),
    (dict(alpha=0), "alpha must be a number > 0"),
    (dict(dropout=1.5), "dropout"),
    (dict(targets=[]), "no targets"),
    (dict(rank=True), "rank must be a positive"),  # a bool is not a rank
    (dict(rank=2.0), "rank must be a positive"),
    (dict(alpha="16"), "alpha must be a number"),  # a UserError, not a TypeError
    (dict(alpha=float("inf")), "alpha must be a number"),
    (dict(dropout="0.1"), "dropout must be a number"),
])
def test_spec_validation(kwargs, needle):
    """LoraSpec and the config's LoraConfig share one validation: the same input, the same message."""
    from lora_studio.config import LoraConfig

    with pytest.raises(UserError, match=needle):
        LoraSpec(**kwargs)
    with pytest.raises(UserError, match=needle):
        LoraConfig(**kwargs).validate()


def test_rank_larger_than_matrix_and_unknown_target():
    with pytest.raises(UserError, match="at most 16"):  # k_proj is 16 x 32 (2 kv heads x 8)
        inject(tiny.build("llama"), LoraSpec(targets=["k"], rank=17))
    with pytest.raises(UserError, match=r"matches no module.*it has q, k, v, o, gate, up, down"):
        inject(tiny.build("llama"), LoraSpec(targets=["qq"]))
    with pytest.raises(UserError, match="select nothing"):
        inject(tiny.build("llama"), LoraSpec(targets=["q"], layers=[7]))


def test_regex_targets_and_unknown_architecture_fallback():
    model = tiny.build("gpt2")
    names = inject(model, LoraSpec(targets=["c_fc"], rank=2))
    assert names == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    model = tiny.build("llama")
    model.config.model_type = "my-new-arch"  # not in the table: names are discovered
    names = inject(model, LoraSpec(targets=["q", "o"], rank=2))
    assert [n.rsplit(".", 1)[-1] for n in names] == ["q_proj", "o_proj"] * 2


def test_manual_forward_equals_peft_style_formula():
    """The two-GEMM forward equals W0 x + s B (A x) for a batch of sequences."""
    lin = torch.nn.Linear(6, 5)
    from lora_studio.engine.targets import Site

    site = Site("x", lin, None, ("q",), 6, 5, False)
    layer = LoraLayer(lin, site, r=2, alpha=4, scaling=2.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 7, 6)
    ref = lin(x) + 2.0 * F.linear(F.linear(x, layer.lora_A), layer.lora_B)
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
