"""Falcon, the family registry's first new entry (engine/families.py): `query_key_value` splits into
q, k, v by its config flags (new_decoder_architecture, multi_query, the original per-head layout);
a tiny Falcon trains, and PEFT loads the run folder with the same logits."""

import json
import shutil
from pathlib import Path

import peft
import pytest
import torch
import transformers as T

from lora_studio.config import RunConfig
from lora_studio.engine import train as TR
from lora_studio.engine.families import family_of
from lora_studio.engine.lora import LoraSpec, inject
from lora_studio.engine.models import demo_model_path
from lora_studio.engine.targets import resolve

FLAVOURS = {
    "new_decoder_architecture": dict(new_decoder_architecture=True, num_kv_heads=2),
    "multi_query": dict(new_decoder_architecture=False, multi_query=True),
    "per_head": dict(new_decoder_architecture=False, multi_query=False),
}


def _config(flavour: str, alibi: bool = False):
    return T.FalconConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          pad_token_id=0, bos_token_id=101, eos_token_id=102, alibi=alibi, bias=True,
                          attention_dropout=0.0, hidden_dropout=0.0, **FLAVOURS[flavour])


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_query_key_value_rows_are_the_ones_falcon_reads_as_q_k_v(flavour, monkeypatch):
    """Independent oracle: with a zero weight and bias = row index, the attention sees each row's
    index as its value; the rows our table assigns to q (k, v) are exactly those in the queries."""
    import transformers.models.falcon.modeling_falcon as MF

    cfg = _config(flavour, alibi=True)  # no rotary: the attention sees the raw q, k, v
    cfg._attn_implementation = "eager"
    model = T.FalconForCausalLM(cfg).eval()
    qkv = model.transformer.h[0].self_attention.query_key_value
    with torch.no_grad():
        qkv.weight.zero_()
        qkv.bias.copy_(torch.arange(qkv.out_features, dtype=torch.float32))
    seen = {}
    real = MF.eager_attention_forward

    def capture(module, q, k, v, *args, **kw):
        if "q" not in seen:
            seen.update(q=q, k=k, v=v)
        return real(module, q, k, v, *args, **kw)

    monkeypatch.setattr(MF, "eager_attention_forward", capture)
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))
    sites = {s.name: s for s in resolve(model, ["q", "k", "v"])}
    site = sites["transformer.h.0.self_attention.query_key_value"]
    ours = dict(site.slices)
    for name in ("q", "k", "v"):
        falcon = sorted({int(x) for x in seen[name][0, :, 0, :].round().flatten().tolist()})
        assert sorted(ours[name]) == falcon, name


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_a_tiny_falcon_trains_and_loads_in_peft_with_the_same_logits(flavour, tmp_path):
    assert family_of(_config(flavour)).plain_head
    torch.manual_seed(0)
    base = tmp_path / "falcon"
    T.FalconForCausalLM(_config(flavour)).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (Path(demo_model_path()) / name).exists():
            shutil.copy(Path(demo_model_path()) / name, base / name)
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"after {i} comes", "completion": " seven"}) for i in range(16)))
    cfg = RunConfig().replace(model={"path": str(base), "task": "causal-lm"},
                              lora={"targets": ["q", "k", "v", "o"], "rank": 2, "alpha": 4},
                              data={"path": str(data), "max_length": 16, "validation_split": 0.0},
                              train={"max_steps": 3, "batch_size": 4, "lr": 5e-2, "eval_every": 0, "seed": 0},
                              out=str(tmp_path / "run"))
    assert isinstance(TR.train(cfg), TR.Finished)
    x = {"input_ids": torch.tensor([[101, 2044, 1017, 3310, 2698, 102]])}
    with torch.no_grad():
        plain = T.AutoModelForCausalLM.from_pretrained(base).eval()(**x).logits
        theirs = peft.PeftModel.from_pretrained(T.AutoModelForCausalLM.from_pretrained(base),
                                                cfg.out).eval()(**x).logits
        ours_model = T.AutoModelForCausalLM.from_pretrained(base).eval()
        from lora_studio.engine.adapters import load_adapter

        load_adapter(ours_model, cfg.out)
        ours = ours_model(**x).logits
    assert (ours - plain).abs().max() > 1e-4  # it trained
    assert (theirs - ours).abs().max().item() <= 1e-5


def test_falcon_offers_its_fused_projections():
    from lora_studio.engine.targets import available_targets

    model = T.FalconForCausalLM(_config("new_decoder_architecture"))
    assert available_targets(model) == ["q", "k", "v", "o", "up", "down"]
    names = inject(model, LoraSpec(targets=["k"], rank=2))
    assert names == [f"transformer.h.{i}.self_attention.query_key_value" for i in range(2)]
