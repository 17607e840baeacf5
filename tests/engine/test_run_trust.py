"""A run's own trust flags (trust_remote_code, allow_pickle) travel with it: merge, Try it and the
amplification factor load its base as training did, with no flag given again (runfolder.RunInfo);
and one rule says which adapter a folder stands for (runfolder.adapter_of)."""

import json
from pathlib import Path

import pytest
import torch

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import models, runfolder
from lora_studio.engine import train as T


@pytest.fixture(scope="module")
def pickled_run(tmp_path_factory):
    """A run trained on a base whose weights are a pickle (.bin only), with both trust flags on."""
    root = tmp_path_factory.mktemp("trust")
    base = tiny.model_folder(root / "base", "llama")
    model = models.load_model(str(base), "causal-lm")
    for f in base.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), base / "pytorch_model.bin")
    assert (base / "pytorch_model.bin").is_file() and not list(base.glob("*.safetensors"))
    data = root / "d.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"after {i} comes", "completion": " seven"}) for i in range(16)))
    cfg = RunConfig().replace(model={"path": str(base), "task": "causal-lm", "allow_pickle": True,
                                     "trust_remote_code": True},
                              lora={"targets": ["q", "v"], "rank": 2, "alpha": 4},
                              data={"path": str(data), "max_length": 16, "validation_split": 0.0},
                              train={"max_steps": 2, "batch_size": 4, "lr": 1e-2, "eval_every": 0, "seed": 0},
                              out=str(root / "run"))
    assert isinstance(T.train(cfg), T.Finished)
    return Path(cfg.out)


@pytest.fixture
def seen(monkeypatch):
    """Every trust flag the base's loaders are given (the real loaders still run)."""
    calls = []
    real_model, real_tok = models.load_model, models.load_tokenizer

    def load_model(ref, *args, **kw):
        calls.append(("model", kw.get("allow_pickle", False), kw.get("trust_remote_code", False)))
        return real_model(ref, *args, **kw)

    def load_tokenizer(ref, trust_remote_code=False):
        calls.append(("tokenizer", None, trust_remote_code))
        return real_tok(ref, trust_remote_code)

    monkeypatch.setattr(models, "load_model", load_model)
    monkeypatch.setattr(models, "load_tokenizer", load_tokenizer)
    return calls


def test_run_info_carries_both_trust_flags(pickled_run):
    info = runfolder.run_info(pickled_run)
    assert info.allow_pickle is True and info.trust_remote_code is True
    ckpt = runfolder.latest_checkpoint(pickled_run)
    assert runfolder.run_info(ckpt).allow_pickle is True  # a checkpoint speaks for its run


def test_merge_of_a_pickled_run_needs_no_flag_again(pickled_run, tmp_path, seen):
    from lora_studio.engine.export import merge_and_export

    res = merge_and_export(pickled_run, tmp_path / "merged")  # no allow_pickle/trust_remote_code given
    assert res.ok and (tmp_path / "merged" / "config.json").is_file()
    assert seen and all(trust for _, _, trust in seen)
    assert all(pickle for kind, pickle, _ in seen if kind == "model")


def test_try_it_and_amplification_load_the_base_as_training_did(pickled_run, seen):
    from lora_studio.engine import spectra, tryit

    tryit._CACHE.clear()
    c = tryit.compare(pickled_run, "after 3 comes", max_new_tokens=2)
    assert c.adapted.text is not None
    amp = spectra.with_amplification(pickled_run)
    assert amp and all(m.amplification is not None for m in amp)
    assert {kind for kind, _, _ in seen} == {"model", "tokenizer"}
    assert all(trust for _, _, trust in seen) and all(p for kind, p, _ in seen if kind == "model")


def test_adapter_of_is_the_newest_adapter_of_a_run_and_a_plain_folder_itself(pickled_run, tmp_path):
    newest = runfolder.adapter_of(pickled_run)
    assert newest == runfolder.newest_adapter(pickled_run)[0]
    ckpt = runfolder.latest_checkpoint(pickled_run)
    assert runfolder.adapter_of(ckpt) == ckpt
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / runfolder.ADAPTER_CONFIG).write_text("{}")  # a PEFT folder stands for itself (even a broken one)
    assert runfolder.adapter_of(plain) == plain
    with pytest.raises(Exception, match="neither a run folder nor a PEFT adapter folder"):
        runfolder.adapter_of(tmp_path)
