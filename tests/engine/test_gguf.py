"""GGUF export: the adapter file read back with gguf.GGUFReader equals our update, module by module;
merged and adapter GGUFs checked in llama.cpp itself when its converter and binding are here."""

import shutil

import numpy as np
import pytest
import torch

import tiny
from lora_studio import LoraSpec, inject, save_adapter
from lora_studio.engine import UserError
from lora_studio.engine.adapters import load_adapter
from lora_studio.engine.lora import lora_layers
from lora_studio.engine.models import load_model

gguf = pytest.importorskip("gguf", reason="pip install 'lora-studio[gguf]'")
from lora_studio.engine import gguf as G  # noqa: E402

ALL = ["q", "k", "v", "o", "gate", "up", "down"]
NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
         "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
         "c_attn": "attn_qkv", "c_proj": "attn_output", "c_fc": "ffn_up"}


def _run(tmp_path, arch, targets, rslora=False, alpha=8.0, seed=0):
    base = tiny.model_folder(tmp_path / "base", arch)
    model = load_model(str(base), "causal-lm")
    inject(model, LoraSpec(targets=targets, rank=4, alpha=alpha, rslora=rslora))
    tiny.randomize_adapters(model, seed=seed, scale=0.3)
    save_adapter(model, tmp_path / "run", str(base))
    return base, tmp_path / "run"


def _deltas(base, adapter_dir) -> dict[str, torch.Tensor]:
    """s·B·A (out x in) per module, from the adapter loaded on a fresh base: our own math."""
    model = load_model(str(base), "causal-lm")
    load_adapter(model, adapter_dir)
    return {n: m.delta_weight(torch.float64) for n, m in lora_layers(model).items()}


def _llama_cpp_permute(W, n_head):
    """llama.cpp's converter's q/k row order, as its source states it: per head, (2, d/2) -> (d/2, 2)."""
    return W.reshape(n_head, 2, W.shape[0] // n_head // 2, *W.shape[1:]).swapaxes(1, 2).reshape(W.shape)


def _read(path):
    r = gguf.GGUFReader(str(path))
    f = r.fields
    alpha = float(f["adapter.lora.alpha"].parts[-1][0])
    kind = bytes(f["general.type"].parts[-1]).decode()
    t = {x.name: torch.from_numpy(np.array(x.data, dtype=np.float64)) for x in r.tensors}
    return kind, bytes(f["adapter.type"].parts[-1]).decode(), alpha, t


def _check(path, deltas, arch_cfg, permute):
    kind, atype, alpha, t = _read(path)
    assert (kind, atype) == ("adapter", "lora")
    assert len(t) == 2 * len(deltas)
    for name, want in deltas.items():
        layer = int(name.split(".")[2]) if "layers" in name or ".h." in name else None
        gname = f"blk.{layer}.{NAMES[name.rsplit('.', 1)[-1]]}.weight"
        A, B = t[gname + ".lora_a"], t[gname + ".lora_b"]
        got = B @ A * (alpha / A.shape[0])  # llama.cpp's ΔW: alpha / r from the tensor's rank
        if permute and gname.endswith(("attn_q.weight", "attn_k.weight")):
            heads = arch_cfg.num_attention_heads if "attn_q" in gname else arch_cfg.num_key_value_heads
            want = _llama_cpp_permute(want, heads)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=gname)


@pytest.mark.parametrize("rslora,alpha", [(False, 8.0), (True, 8.0), (False, 3.0)])
def test_llama_adapter_gguf_equals_our_update(tmp_path, rslora, alpha):
    base, run = _run(tmp_path, "llama", ALL, rslora=rslora, alpha=alpha)
    res = G.write_adapter_gguf(run, tmp_path / "out" / "a.gguf")
    assert res.tensors == 2 * 7 * 2 and (tmp_path / "out" / "README.md").is_file()
    _check(res.path, _deltas(base, run), tiny.configs()["llama"], permute=True)


def test_resized_adapter_gguf_folds_per_module_ranks(tmp_path):
    from lora_studio.engine.spectra import resize

    from safetensors.torch import load_file, save_file

    base, run = _run(tmp_path, "llama", ["q", "k", "v"], rslora=True)
    w = load_file(run / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    w[key][:, 1:] *= 1e-3  # one module is nearly rank 1: resizing keeps fewer ranks there
    save_file(w, run / "adapter_model.safetensors")
    resize(run, tmp_path / "small", energy=0.9)
    res = G.write_adapter_gguf(tmp_path / "small", tmp_path / "s.gguf", type="f32")
    ranks = {A.shape[0] for n, A in _read(res.path)[3].items() if n.endswith("lora_a")}
    assert len(ranks) > 1  # alpha / r differs per module: one file alpha only works if folded into B
    _check(res.path, _deltas(base, tmp_path / "small"), tiny.configs()["llama"], permute=True)


def test_fused_gpt2_adapter_gguf_is_one_block_lora(tmp_path):
    base, run = _run(tmp_path, "gpt2", ["q", "v", "o", "up"])
    res = G.write_adapter_gguf(run, tmp_path / "g.gguf", type="f32")
    _, _, alpha, t = _read(res.path)
    assert t["blk.0.attn_qkv.weight.lora_a"].shape == (8, 32)  # q and v slices: rank 2 x 4
    _check(res.path, _deltas(base, run), None, permute=False)


def test_unpermuted_architecture_and_refusals(tmp_path):
    base, run = _run(tmp_path, "qwen2", ["q", "k"])
    _check(G.write_adapter_gguf(run, tmp_path / "q.gguf").path, _deltas(base, run), None, permute=False)
    with pytest.raises(UserError, match="exists"):
        G.write_adapter_gguf(run, tmp_path / "q.gguf")
    with pytest.raises(UserError, match="f32 or f16"):
        G.write_adapter_gguf(run, tmp_path / "x.gguf", type="q8_0")
    with pytest.raises(UserError, match="not found"):
        G.find_converter(str(tmp_path))


def test_rope_rows_is_llama_cpp_permutation():
    W = torch.arange(48.0).view(24, 2)
    torch.testing.assert_close(W[G.rope_rows(24, 3)], _llama_cpp_permute(W, 3))


# -- in llama.cpp itself ---------------------------------------------------------------------------
def _converter():
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp (llama.cpp's binding) is not installed: pip install 'lora-studio[gguf]'")
    if importlib.util.find_spec("sentencepiece") is None:
        pytest.skip("llama.cpp's converter needs sentencepiece for Llama models")
    try:
        return G.find_converter()
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    import json

    root = tmp_path_factory.mktemp("gguf")
    base = tiny.llama_gguf_folder(root / "base")
    model = load_model(str(base), "causal-lm")
    inject(model, LoraSpec(targets=ALL, rank=4, alpha=3.0, rslora=True))
    tiny.randomize_adapters(model, scale=0.3)
    save_adapter(model, root / "run", str(base))
    (root / "run" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    return base, root / "run", model.eval()


@pytest.mark.slow
def test_merged_gguf_is_verified_in_llama_cpp(tmp_path, llama_run):
    _converter()
    base, run, model = llama_run
    res = G.export_merged_gguf(run, tmp_path / "m.gguf", type="f32")
    assert res.verified and res.max_diff <= 1e-3, res
    meta = G.metadata(res.path)
    assert meta["tokenizer.ggml.eos_token_id"] == 2 and "assistant" in meta["tokenizer.chat_template"]
    from lora_studio.engine.runfolder import MODELFILE_MARKER

    lines = (tmp_path / "Modelfile").read_text().splitlines()
    assert lines[0] == MODELFILE_MARKER and lines[1] == "FROM ./m.gguf", lines[:2]
    assert {"m.gguf", "README.md", "Modelfile"} <= {p.name for p in tmp_path.iterdir()}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp left behind
    # the adapter changes the model: the figure would catch a GGUF of the base
    from lora_studio.engine.gguf_check import hf_logprobs, llama_logprobs, max_diff, probe_ids
    from lora_studio.engine.models import load_tokenizer

    tok = load_tokenizer(str(base))
    prompts = probe_ids(tok)
    base_model = load_model(str(base), "causal-lm").eval()
    assert max_diff(llama_logprobs(res.path, prompts), hf_logprobs(base_model, prompts)) > 100 * res.max_diff


@pytest.mark.slow
def test_base_gguf_plus_adapter_gguf_equals_hf_plus_adapter(tmp_path, llama_run):
    from lora_studio.engine.gguf_check import hf_logprobs, llama_logprobs, max_diff, probe_ids
    from lora_studio.engine.models import load_tokenizer

    converter = _converter()
    base, run, model = llama_run
    G.convert(base, tmp_path / "base.gguf", "f32", converter)
    adapter = G.write_adapter_gguf(run, tmp_path / "lora.gguf")
    prompts = probe_ids(load_tokenizer(str(base)))
    diff = max_diff(llama_logprobs(tmp_path / "base.gguf", prompts, lora=adapter.path), hf_logprobs(model, prompts))
    assert diff <= 1e-3


def test_chat_check_refuses_an_answer_that_runs_on_not_one_that_parted(monkeypatch):
    """A stop is broken when llama.cpp says HF's whole answer and goes on, or ends none of the answers
    HF ends; an answer a quantized base took elsewhere at a close choice may end elsewhere."""
    from lora_studio.engine import generate, gguf_check as C
    from lora_studio.engine.generate import Answer

    hf = [Answer("Lima.", True, 3), Answer("Red, blue and yellow.", True, 6), Answer("To turn it off", False, 48)]
    monkeypatch.setattr(generate, "generate", lambda model, tok, prompts, chat, n: hf)

    def check(llama):
        monkeypatch.setattr(C, "llama_chat", lambda *a, **k: llama)
        return C.chat_check("x.gguf", None, None, prompts=["a", "b", "c"])

    same = check([("Lima.", True), ("Red, blue and yellow.", True), ("To turn it off", False)])
    assert same["same"] and same["stops"] and "each gives the same greedy answer as HF" in C.chat_note(same)
    parted = check([("Lima.", True), ("Red (R), blue (B), yellow (Y) and", False), ("To switch it off", False)])
    assert not parted["same"] and parted["stops"]
    assert C.chat_note(parted, ": rounding").startswith("; 2 of 3 chat prompts' greedy answers differ (e.g. 'b'")
    runs_on = check([("Lima. And", False), ("Red, blue and yellow.", True), ("To turn it off", False)])
    assert not runs_on["stops"] and C.not_stopped(runs_on)["prompt"] == "a"
    none_ends = check([("Lima, city", False), ("Red and", False), ("To turn it off", False)])
    assert not none_ends["stops"] and C.not_stopped(none_ends)["prompt"] == "a"
