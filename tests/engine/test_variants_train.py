"""Variants through the real training loop: exact resume for each, LoRA+ recorded, and a PiSSA/
OLoRA run folder that PEFT loads on the ORIGINAL base with the trained model's logits."""

from pathlib import Path

import peft
import pytest
import torch
import transformers

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import train as T
from lora_studio.engine.adapters import load_adapter
from test_train import _classification_data, _losses

VARIANTS = {"dora": ({"dora": True}, {}), "pissa": ({"init": "pissa"}, {}), "olora": ({"init": "olora"}, {}),
            "loraplus": ({}, {"loraplus_ratio": 16.0})}


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("bert"), "bert")


def _config(out, model, data, lora, train):
    t = {"max_steps": 8, "batch_size": 8, "lr": 1e-2, "eval_every": 0, "save_every": 4, "seed": 3,
         "warmup_ratio": 0.0, **train}
    return RunConfig().replace(model={"path": str(model), "task": "classification"},
                               lora={"targets": ["q", "v"], "rank": 4, "alpha": 8, "dropout": 0.1, **lora},
                               data={"path": str(data), "max_length": 32, "validation_split": 0.0},
                               train=t, out=str(out))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_resumes_exactly(variant, tmp_path, bert_folder):
    data = _classification_data(tmp_path / "d.jsonl", 64)
    lora, train = VARIANTS[variant]
    full = _config(tmp_path / "full", bert_folder, data, lora, train)
    assert isinstance(T.train(full), T.Finished)
    part = _config(tmp_path / "part", bert_folder, data, lora, train)
    control = T.Control()
    stopped = T.train(part, lambda e: isinstance(e, T.Step) and e.step == 3 and control.stop(), control)
    assert stopped.stopped and stopped.step == 3
    assert isinstance(T.train(part, resume=part.out), T.Finished)
    assert _losses(part.out) == _losses(full.out)  # bit-identical on a CPU
    assert RunConfig.load(Path(full.out) / "run.toml").to_dict() == full.to_dict()


def test_pissa_resumed_on_another_random_stream_trains_on_the_same_residual(tmp_path, bert_folder, monkeypatch):
    """GPU review N19: PiSSA's randomised SVD draws from the device's random stream, so a run resumed
    on another device (CUDA vs CPU) rebuilt another residual base. Checkpoints keep A0, B0; the
    resumed run, and a load of the checkpoint, build the residual from them. Another device is
    simulated by one extra random draw before each SVD in the resumed process."""
    from lora_studio.engine import inits
    from lora_studio.engine.runfolder import read_metrics

    monkeypatch.setattr(inits, "EXACT_SVD_BELOW", 1)  # the randomised SVD, as for a real model's matrices
    data = _classification_data(tmp_path / "d.jsonl", 64)
    # as a user runs it: evaluation on, a validation split (the shared _config turns both off)
    user = lambda out: _config(out, bert_folder, data, {"init": "pissa"}, {"eval_every": 4}).replace(
        data={"validation_split": 0.25})
    full = user(tmp_path / "full")
    assert isinstance(T.train(full), T.Finished)
    part = user(tmp_path / "part")
    control = T.Control()
    T.train(part, lambda e: isinstance(e, T.Step) and e.step == 3 and control.stop(), control)
    ckpt = Path(part.out) / "checkpoints" / "step-3"
    assert (ckpt / inits.PRINCIPAL_FILE).is_file()
    real = torch.svd_lowrank

    def other_stream(*a, **k):
        torch.rand(7)
        return real(*a, **k)

    monkeypatch.setattr(torch, "svd_lowrank", other_stream)
    assert isinstance(T.train(part, resume=part.out), T.Finished)
    assert _losses(part.out) == _losses(full.out)
    evals = lambda run: [r["eval_loss"] for r in read_metrics(run) if "eval_loss" in r]
    assert len(evals(full.out)) >= 2 and evals(part.out)[-1] == evals(full.out)[-1]
    # a checkpoint loaded on a fresh base (try, export, spectra) builds the same residual too
    x = tiny.inputs()
    x["input_ids"] = x["input_ids"] + 1000
    models = []
    for run in (full, part):
        m = transformers.AutoModelForSequenceClassification.from_pretrained(bert_folder)
        load_adapter(m, Path(run.out) / "checkpoints" / "step-8")
        models.append(m.eval())
    with torch.no_grad():
        torch.testing.assert_close(models[1](**x).logits, models[0](**x).logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_principal_run_folder_loads_in_peft_on_the_original_base(init, tmp_path, bert_folder):
    data = _classification_data(tmp_path / "d.jsonl", 64)
    cfg = _config(tmp_path / "run", bert_folder, data, {"init": init}, {"max_steps": 4})
    events = []
    assert isinstance(T.train(cfg, events.append), T.Finished)
    assert any(isinstance(e, T.Status) and f"{init} init" in e.message for e in events)
    x = tiny.inputs()
    x["input_ids"] = x["input_ids"] + 1000  # the tiny folder has the MiniLM vocabulary
    load = lambda: transformers.AutoModelForSequenceClassification.from_pretrained(bert_folder).eval()
    trained = load()  # the residual base + the checkpoint's A, B: the model as it trained
    load_adapter(trained, Path(cfg.out) / "checkpoints" / "step-4")
    trained.eval()  # the adapter's new dropout modules start in training mode
    theirs = peft.PeftModel.from_pretrained(load(), cfg.out).eval()  # the ORIGINAL base + run folder
    with torch.no_grad():
        a, b, base = trained(**x).logits, theirs(**x).logits, load()(**x).logits
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert (a - base).abs().max() > 1e-4  # training changed something


def test_a_dora_run_merges_verified_and_refuses_an_adapter_gguf(tmp_path, bert_folder):
    """The export's weight check knows DoRA's formula (m · (W0 + sBA) / row norm); llama.cpp's LoRA
    GGUF has no magnitude vector, so adapter-only GGUF is refused with the merged file offered."""
    from lora_studio.engine.errors import UserError
    from lora_studio.engine.export import merge_and_export

    data = _classification_data(tmp_path / "d.jsonl", 64)
    cfg = _config(tmp_path / "dora", bert_folder, data, {"dora": True, "dropout": 0.0}, {"max_steps": 4})
    assert isinstance(T.train(cfg), T.Finished)
    for dtype in ("float32", "bfloat16"):
        r = merge_and_export(cfg.out, tmp_path / f"merged-{dtype}", dtype=dtype)
        assert r.ok and r.max_abs_diff <= r.tolerance
    pytest.importorskip("gguf")
    from lora_studio.engine.gguf import write_adapter_gguf

    with pytest.raises(UserError, match="DoRA adapter cannot be written"):
        write_adapter_gguf(cfg.out, tmp_path / "a.gguf")
