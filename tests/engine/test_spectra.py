"""Spectra of ΔW: σ against a dense SVD, rank measures, amplification, Eq. 4, resize round trips."""

import json
import math

import peft
import pytest
import torch

import tiny
from lora_studio import LoraSpec, inject, load_adapter, save_adapter
from lora_studio.engine import UserError
from lora_studio.engine import spectra
from lora_studio.engine.adapters import AdapterModule, read_adapter
from lora_studio.engine.lora import lora_layers

KINDS = [("llama", ["q", "v"]), ("gpt2", ["q", "v"]), ("gpt_neox", ["q", "v"]), ("phi3", ["q", "v", "up"]),
         ("bert", ["q", "v"])]


def _adapted(arch, targets, rank=4, alpha=8, rslora=False, seed=2):
    model = tiny.build(arch)
    heads = ["classifier"] if arch in tiny.ENCODERS else []
    inject(model, LoraSpec(targets=targets, rank=rank, alpha=alpha, rslora=rslora, modules_to_save=heads))
    tiny.randomize_adapters(model, seed=seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "classifier" in n:
                p.add_(0.3)  # a trained head
    return model


def _dense_parts(model):
    """{(name, target): (ΔW_i (rows_i x in) in float64, rows_i or None)} straight from the layers."""
    out = {}
    for name, m in lora_layers(model).items():
        dw = (m.b_full().double() @ m.lora_A.double()) * m.scaling  # (out, in)
        for label, rows in (m.slices or [(None, None)]):
            out[(name, label)] = (dw if rows is None else dw[rows], rows)
    return out


def _close(ours, dense):
    """σ within 1e-4 relative (to σ_max): the dense SVD's tail beyond r is ~0."""
    dense = torch.as_tensor(dense, dtype=torch.float64)
    ours = torch.as_tensor(ours, dtype=torch.float64)
    tol = 1e-4 * dense[0].item()
    torch.testing.assert_close(ours, dense[: len(ours)], rtol=1e-4, atol=tol)
    assert dense[len(ours):].abs().max().item() <= tol if len(dense) > len(ours) else True


@pytest.mark.parametrize("arch,targets", KINDS)
def test_singular_values_match_dense_svd(arch, targets, tmp_path):
    model = _adapted(arch, targets)
    dense = _dense_parts(model)
    live = spectra.analyse(model)
    save_adapter(model, tmp_path)
    disk = spectra.analyse(read_adapter(tmp_path))
    assert [(s.name, s.target) for s in live] == [(s.name, s.target) for s in disk]
    assert {(s.name, s.target) for s in live} == set(dense)
    if arch in ("gpt2", "gpt_neox", "phi3"):
        assert {s.target for s in live} >= {"q", "v"}  # fused: one spectrum per slice
    vec = spectra.analyse(model, top_vectors=True)  # the QR path
    for s_live, s_disk, s_vec in zip(live, disk, vec):
        dw = dense[(s_live.name, s_live.target)][0]
        sv = torch.linalg.svdvals(dw)
        for s in (s_live, s_disk, s_vec):
            _close(s.singular_values, sv)
        assert s_live.rank == 4 and len(s_live.singular_values) == 4
        assert s_live.frobenius == pytest.approx(torch.linalg.matrix_norm(dw).item(), rel=1e-6)


def test_random_large_adapter_and_top_vectors():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(16, 300, generator=g), torch.randn(200, 16, generator=g) * torch.logspace(0, -3, 16)
    mod = AdapterModule("x.0.q", A, B, 16, 32.0, 2.0)
    (s,) = spectra.analyse({"x.0.q": mod}, top_vectors=True)
    (s_fast,) = spectra.analyse({"x.0.q": mod})
    dw = 2.0 * B.double() @ A.double()
    _close(s.singular_values, torch.linalg.svdvals(dw))
    _close(s_fast.singular_values, torch.linalg.svdvals(dw))
    # σ spans 3 decades here: each one within 1e-4 of itself, not only of σ₁
    torch.testing.assert_close(torch.tensor(s_fast.singular_values, dtype=torch.float64), torch.linalg.svdvals(dw)[:16],
                               rtol=1e-4, atol=0)
    assert s.singular_values == sorted(s.singular_values, reverse=True)
    assert s.U.shape == (200, 16) and s.V.shape == (300, 16) and s.layer == 0
    recon = s.U.double() @ torch.diag(torch.tensor(s.singular_values, dtype=torch.float64)) @ s.V.double().T
    torch.testing.assert_close(recon, dw, rtol=0, atol=1e-5 * s.singular_values[0])
    torch.testing.assert_close(s.U.T @ s.U, torch.eye(16), rtol=0, atol=1e-5)


def test_rank_measures_on_a_known_spectrum():
    # ΔW = s·B A with B = [I; 0], A = diag(1.5, 1, .5, 0) padded, s = 2 -> σ = 3, 2, 1, 0
    A = torch.zeros(4, 6)
    A[:4, :4] = torch.diag(torch.tensor([1.5, 1.0, 0.5, 0.0]))
    B = torch.zeros(5, 4)
    B[:4] = torch.eye(4)
    (s,) = spectra.analyse({"m": AdapterModule("m", A, B, 4, 8.0, 2.0)})
    torch.testing.assert_close(torch.tensor(s.singular_values), torch.tensor([3.0, 2.0, 1.0, 0.0]),
                               rtol=0, atol=1e-12, check_dtype=False)
    # energies 9, 4, 1 of 14: 90% = 12.6 -> k = 2; 99% = 13.86 -> k = 3
    assert (s.rank90, s.rank99) == (2, 3)
    p = [3 / 6, 2 / 6, 1 / 6]
    assert s.effective_rank == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)), rel=1e-12)
    assert s.stable_rank == pytest.approx(14 / 9) and s.frobenius == pytest.approx(math.sqrt(14))
    assert spectra.energy_rank([3, 2, 1, 0], 1.0) == 3 and spectra.energy_rank([1, 1, 1, 1], 0.5) == 2
    assert spectra.effective_rank([1, 1, 1, 1]) == pytest.approx(4.0)
    assert spectra.suggest_rank([s], 0.9) == 2 and spectra.suggest_rank([s], 0.99) == 3


def test_zero_update_has_no_nan(tmp_path):
    model = tiny.build("gpt2")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))  # B = 0 at init
    result = spectra.analyse(model, base_weights=model)
    for s in result:
        assert s.singular_values == [0.0] * 4
        assert (s.effective_rank, s.rank90, s.rank99, s.stable_rank, s.frobenius) == (0, 0, 0, 0, 0)
        assert s.amplification == 0.0
    doc = json.dumps(spectra.to_json(result))  # valid JSON, no NaN
    assert "NaN" not in doc and "Infinity" not in doc
    assert spectra.suggest_rank(result) == 1
    assert "dW = 0" in spectra.format_table(result)


def test_amplification_factor_against_direct_computation():
    model = _adapted("gpt2", ["q", "v", "o"])  # c_proj (o) is a square Conv1D
    result = spectra.analyse(model, base_weights=model)
    dense = _dense_parts(model)
    layers = lora_layers(model)
    for s in result:
        dw, rows = dense[(s.name, s.target)]
        W0 = layers[s.name].base_layer.weight.double().T  # Conv1D stores (in, out)
        W0 = W0 if rows is None else W0[rows]
        U, _, Vh = torch.linalg.svd(dw)
        r = 4
        expect = torch.linalg.matrix_norm(dw) / torch.linalg.matrix_norm(U[:, :r].T @ W0 @ Vh[:r].T)
        assert s.amplification == pytest.approx(expect.item(), rel=1e-4)
    # the same numbers from a dict of W0 (out x in) and from the adapter on disk
    w0 = spectra.weights_of(model)
    again = spectra.analyse(model, base_weights=w0)
    assert [s.amplification for s in again] == pytest.approx([s.amplification for s in result], rel=1e-6)


def test_subspace_similarity_eq4():
    model = _adapted("gpt2", ["q", "v"])
    phi = spectra.similarity(model, model)
    assert set(phi) == {(n, t) for n in lora_layers(model) for t in ("q", "v")}
    for p in phi.values():
        assert p.shape == (4, 4)
        torch.testing.assert_close(torch.diagonal(p), torch.ones(4), rtol=0, atol=1e-6)
    # unrelated random subspaces of R^512: E φ(i, j) = max(i, j) / 512
    g = torch.Generator().manual_seed(0)
    mk = lambda: {"m": AdapterModule("m", torch.randn(8, 512, generator=g), torch.randn(64, 8, generator=g), 8, 8.0, 1.0)}
    p = spectra.similarity(mk(), mk())[("m", None)]
    assert p.shape == (8, 8) and p.max().item() < 0.1
    # pinned: A1 spans e1..e4, A2 spans e1, e2, e5, e6 (σ order fixed by distinct norms)
    d = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
    A1, A2 = torch.zeros(4, 10), torch.zeros(4, 10)
    A1[:, [0, 1, 2, 3]], A2[:, [0, 1, 4, 5]] = d, d
    B = torch.randn(6, 4, generator=g)
    p = spectra.similarity({"m": AdapterModule("m", A1, B, 4, 4.0, 1.0)},
                           {"m": AdapterModule("m", A2, B, 4, 4.0, 1.0)})[("m", None)]
    torch.testing.assert_close(torch.diagonal(p), torch.tensor([1.0, 1.0, 2 / 3, 2 / 4]), rtol=0, atol=1e-6)
    assert p[0, 3].item() == pytest.approx(1.0) and p[3, 0].item() == pytest.approx(1.0)
    assert p[2, 2].item() == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="share no adapted module"):
        spectra.similarity(model, _adapted("llama", ["q"]))


def _truncated_model(arch, model, report):
    """The base model with each slice's ΔW truncated to the report's rank merged into W0 (dense SVD)."""
    keep = {(r["name"], r["target"]): r["rank"] for r in report["modules"]}
    ref = tiny.build(arch)
    with torch.no_grad():
        for (name, label), (dw, rows) in _dense_parts(model).items():
            U, S, Vh = torch.linalg.svd(dw, full_matrices=False)
            k = keep[(name, label)]
            dk = (U[:, :k] * S[:k]) @ Vh[:k]
            w = ref.get_submodule(name).weight
            conv = type(ref.get_submodule(name)).__name__ == "Conv1D"
            full = torch.zeros(w.shape[::-1] if conv else w.shape, dtype=torch.float64)
            full[rows if rows is not None else slice(None)] = dk
            w.add_((full.T if conv else full).to(w.dtype))
        for n, p in model.named_parameters():  # trained heads
            if "classifier" in n:
                ref.get_parameter(n.replace(".base_layer", "")).copy_(p)
    return ref


def _check_round_trip(arch, model, out, report):
    x = tiny.inputs()
    with torch.no_grad():
        expect = _truncated_model(arch, model, report)(**x).logits
        ours = tiny.build(arch)
        load_adapter(ours, out)
        got = ours(**x).logits
        theirs = peft.PeftModel.from_pretrained(tiny.build(arch), out).eval()(**x).logits
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs, expect, rtol=0, atol=1e-5)
    return ours


@pytest.mark.parametrize("arch,targets", KINDS)
def test_resize_to_rank_round_trip(arch, targets, tmp_path):
    model = _adapted(arch, targets, rslora=arch == "phi3")
    save_adapter(model, tmp_path / "a")
    report = spectra.resize(tmp_path / "a", tmp_path / "b", rank=2)
    json.dumps(report)
    assert all(r["rank"] == 2 and r["rank_before"] == 4 for r in report["modules"])
    assert all(0 < r["retained_frobenius"] < 1 for r in report["modules"])
    assert report["params_after"] == report["params_before"] // 2
    ours = _check_round_trip(arch, model, tmp_path / "b", report)
    # what was kept is exactly the top-2 spectrum of each ΔW, with the scale s unchanged
    before = {(s.name, s.target): s for s in spectra.analyse(model)}
    for s in spectra.analyse(tmp_path / "b"):
        ref = before[(s.name, s.target)]
        assert s.rank == 2
        torch.testing.assert_close(torch.tensor(s.singular_values), torch.tensor(ref.singular_values[:2]),
                                   rtol=1e-5, atol=1e-7)
    for name, m in lora_layers(ours).items():
        assert m.scaling == pytest.approx(lora_layers(model)[name].scaling)
        assert m.r == 2 and (m.slices is None) == (lora_layers(model)[name].slices is None)
    # a rank above the adapter's is capped at it: nothing lost
    report = spectra.resize(tmp_path / "a", tmp_path / "c", rank=99)
    assert all(r["rank"] == 4 and r["retained_frobenius"] == pytest.approx(1.0) for r in report["modules"])


def test_resize_by_energy_with_uneven_slices(tmp_path):
    model = _adapted("gpt2", ["q", "v"])
    layers = lora_layers(model)
    with torch.no_grad():  # q slices rank 1 (one column of B); v too in layer 1, full rank in layer 0
        for name, m in layers.items():
            nq = len(m.slices[0][1])
            m.lora_B[: nq if name.startswith("transformer.h.0") else None, 1:] = 0
    save_adapter(model, tmp_path / "a")
    report = spectra.resize(tmp_path / "a", tmp_path / "b", energy=0.9)
    ranks = {(r["name"], r["target"]): r["rank"] for r in report["modules"]}
    uneven, even = "transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"
    assert ranks[(uneven, "q")] == 1 and ranks[(uneven, "v")] >= 3
    assert ranks[(even, "q")] == ranks[(even, "v")] == 1
    assert all(r["retained_energy"] >= 0.9 for r in report["modules"]) and "1 fused module" in report["note"]
    ad = read_adapter(tmp_path / "b")
    # uneven: one plain LoRA of rank k_q + k_v on c_attn; even: still read per slice
    assert ad.modules[uneven].A.shape[0] == ranks[(uneven, "q")] + ranks[(uneven, "v")] and not ad.modules[uneven].slices
    assert ad.modules[even].A.shape[0] == 2 and [t for t, _ in ad.modules[even].slices] == ["q", "v"]
    cfg = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
    assert cfg["fan_in_fan_out"] is True and cfg["peft_type"] == "LORA"
    _check_round_trip("gpt2", model, tmp_path / "b", report)


def test_resize_zero_update_and_energy_one(tmp_path):
    model = _adapted("llama", ["q", "v"])
    zero = "model.layers.1.self_attn.v_proj"
    with torch.no_grad():
        lora_layers(model)[zero].lora_B.zero_()
    save_adapter(model, tmp_path / "a")
    report = spectra.resize(tmp_path / "a", tmp_path / "b", energy=1.0)
    rows = {r["name"]: r for r in report["modules"]}
    assert rows[zero]["rank"] == 1 and "dW = 0" in rows[zero]["note"]
    assert all(r["rank"] == 4 for n, r in rows.items() if n != zero)
    _check_round_trip("llama", model, tmp_path / "b", report)
    ad = read_adapter(tmp_path / "b")
    assert ad.modules[zero].A.shape[0] == 1 and ad.modules[zero].B.abs().max() == 0


def test_resize_zero_slice_keeps_fused_layout(tmp_path):
    model = _adapted("gpt2", ["q", "v"])
    m = lora_layers(model)["transformer.h.0.attn.c_attn"]
    with torch.no_grad():
        m.lora_B[len(m.slices[0][1]):] = 0  # the v slice of layer 0 never trained
    save_adapter(model, tmp_path / "a")
    report = spectra.resize(tmp_path / "a", tmp_path / "b", rank=2)
    assert [r["rank"] for r in report["modules"]] == [2] * 4 and "note" not in report
    assert sum("dW = 0" in r.get("note", "") for r in report["modules"]) == 1
    ad = read_adapter(tmp_path / "b")  # slices stay uniform (zeros for v): still a per-slice adapter
    assert all(mod.slices and mod.r == 2 for mod in ad.modules.values())
    _check_round_trip("gpt2", model, tmp_path / "b", report)


def test_resize_peft_made_adapter(tmp_path):
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                          rank_pattern={"v_proj": 3})
    peft.get_peft_model(tiny.build("llama"), cfg).save_pretrained(tmp_path / "a")
    report = spectra.resize(tmp_path / "a", tmp_path / "b", rank=2)
    assert {r["rank_before"] for r in report["modules"]} == {3, 4}
    model = tiny.build("llama")
    load_adapter(model, tmp_path / "a")
    _check_round_trip("llama", model, tmp_path / "b", report)


def test_report_formats(tmp_path):
    model = _adapted("gpt2", ["q", "v"])
    threads = torch.get_num_threads()
    result = spectra.analyse(model)
    assert torch.get_num_threads() == threads  # analyse runs on one thread and gives the others back
    doc = spectra.to_json(result)
    m = doc["modules"][0]
    assert {"name", "rank", "singular_values", "effective_rank", "target", "rank90"} <= set(m)
    assert m["singular_values"] == sorted(m["singular_values"], reverse=True)
    json.dumps(doc)
    table = spectra.format_table(result)
    assert "transformer.h.0.attn.c_attn[q]" in table and "eff.rank" in table


def test_bad_inputs(tmp_path):
    peft.get_peft_model(tiny.build("llama"), peft.IA3Config(target_modules=["k_proj", "down_proj"],
                                                            feedforward_modules=["down_proj"])).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="only LoRA"):
        spectra.resize(tmp_path, tmp_path / "out", rank=2)
    with pytest.raises(UserError, match="only LoRA"):
        spectra.analyse(tmp_path)
    save_adapter(_adapted("llama", ["q"]), tmp_path / "a")
    for kw in ({}, {"rank": 2, "energy": 0.9}, {"rank": 0}, {"energy": 1.5}):
        with pytest.raises(UserError):
            spectra.resize(tmp_path / "a", tmp_path / "b", **kw)
    with pytest.raises(UserError, match="own folder"):
        spectra.resize(tmp_path / "a", tmp_path / "a", rank=2)
