"""MFU's FLOP count (engine/flops.py), by hand on a tiny Llama and GPT-2, and its place in the loop."""

import pytest
import torch

import tiny
from lora_studio import LoraSpec, inject
from lora_studio.engine import flops, packing
from lora_studio.engine.data import collate


def test_count_by_hand_llama():
    model = tiny.build("llama", task="causal-lm")  # hidden 32, inter 64, 4 heads of 8, 2 kv heads, 2 layers
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    per_layer = 32 * 32 + 32 * 16 + 32 * 16 + 32 * 32 + 3 * 32 * 64  # q k v o, gate up down
    assert flops.count(model) == {"frozen": 2 * per_layer + tiny.VOCAB * 32,  # + the head
                                  "trainable": 2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4)),  # A, B of q and v
                                  "layers": 2, "attn_dim": 32}


def test_count_by_hand_gpt2_fused_and_tied():
    model = tiny.build("gpt2", task="causal-lm")  # n_embd 32, 2 layers; the head is tied to the embedding
    inject(model, LoraSpec(targets=["c_attn"], rank=2, alpha=4))
    per_layer = 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32  # c_attn, c_proj, c_fc, mlp c_proj
    c = flops.count(model)
    assert c["frozen"] == 2 * per_layer + tiny.VOCAB * 32 and c["trainable"] == 2 * (2 * 32 + 96 * 2)


def test_step_flops_and_length_squares():
    c = {"frozen": 1000, "trainable": 10, "layers": 2, "attn_dim": 8}
    assert flops.step_flops(c, tokens=7, squares=25) == 4060 * 7 + 6 * 2 * 8 * 25
    ex = [{"input_ids": [5] * n, "attention_mask": [1] * n, "labels": [5] * n} for n in (3, 5)]
    assert flops.length_squares(collate(ex, 0)) == 9 + 25 == flops.length_squares(packing.pack(ex))


def test_no_mfu_off_a_listed_gpu():
    assert flops.peak_flops(torch.device("cpu"), "bf16") is None


def test_mfu_reaches_the_metrics(tmp_path, monkeypatch):
    """With a peak (faked here: the CPU has none), each logged step carries mfu = the counted FLOPs
    per second over the peak, i.e. mfu x peak / tokens_per_s is the per-token count."""
    import json

    from lora_studio.config import RunConfig
    from lora_studio.engine import train as T

    monkeypatch.setattr(flops, "peak_flops", lambda device, precision: 1e9)
    model = tiny.model_folder(tmp_path / "m", "llama")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": "word " * (3 + i % 5)}) + "\n" for i in range(8)))
    cfg = RunConfig().replace(model={"path": str(model), "task": "causal-lm"},
                              lora={"targets": ["q", "v"], "rank": 2, "alpha": 4},
                              data={"path": str(data), "max_length": 16, "validation_split": 0.0},
                              train={"max_steps": 2, "batch_size": 4, "eval_every": 0, "save_every": 0,
                                     "packing": True}, out=str(tmp_path / "run"))
    assert isinstance(T.train(cfg), T.Finished)
    rows = [m for m in T.read_metrics(tmp_path / "run") if "loss" in m]
    assert len(rows) == 2 and all(m["mfu"] > 0 for m in rows)
    from lora_studio.engine.models import load_model

    m = load_model(str(model), "causal-lm", dtype=torch.float32, device=torch.device("cpu"))
    inject(m, LoraSpec(targets=["q", "v"], rank=2, alpha=4))
    c = flops.count(m)
    for r in rows:
        per_token = r["mfu"] * 1e9 / r["tokens_per_s"]
        linear = 4 * c["frozen"] + 6 * c["trainable"]
        assert linear < per_token < linear * 1.05  # + attention's share, small at these lengths
