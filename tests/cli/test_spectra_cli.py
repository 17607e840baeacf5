"""`lora-studio inspect` and `resize` on any PEFT LoRA folder."""

import json

import torch

import tiny
from lora_studio import LoraSpec, inject, save_adapter
from lora_studio.cli import main


def _adapter(path, seed=2, rank=4):
    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q", "v"], rank=rank))
    tiny.randomize_adapters(model, seed=seed)
    save_adapter(model, path)
    return model


def test_inspect_json_contract_and_compare(tmp_path, capsys):
    model = _adapter(tmp_path / "a")
    _adapter(tmp_path / "b", seed=5)
    assert main(["inspect", str(tmp_path / "a"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    mods = out["modules"]
    assert len(mods) == 4 and {"name", "rank", "singular_values", "effective_rank"} <= set(mods[0])
    layer = model.get_submodule(mods[0]["name"])
    dense = torch.linalg.svdvals(layer.delta_weight().double())[:4]
    torch.testing.assert_close(torch.tensor(mods[0]["singular_values"], dtype=torch.float64), dense, rtol=1e-4, atol=1e-9)
    assert all(s1 >= s2 for s1, s2 in zip(mods[0]["singular_values"], mods[0]["singular_values"][1:]))
    assert main(["inspect", str(tmp_path / "a"), "--compare", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "subspace similarity" in text and "q_proj" in text


def test_resize_by_rank_prints_and_writes(tmp_path, capsys):
    _adapter(tmp_path / "a")
    assert main(["resize", str(tmp_path / "a"), "--rank", "2", "--out", str(tmp_path / "small")]) == 0
    text = capsys.readouterr().out
    assert "4->2" in text and "parameters" in text
    cfg = json.loads((tmp_path / "small" / "adapter_config.json").read_text())
    assert cfg["r"] == 2
    assert main(["resize", str(tmp_path / "a"), "--energy", "1.5", "--out", str(tmp_path / "x")]) == 2
    assert "--energy must be in (0, 1]" in capsys.readouterr().err
