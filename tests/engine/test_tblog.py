"""TensorBoard event files: every scalar equals metrics.jsonl (as float32), resume adds no step twice."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import train as T

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _read(run_dir) -> tuple[dict[str, list[tuple[int, float]]], str]:
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = [t for t in acc.Tags()["tensors"] if t.startswith("config")]
    text = acc.Tensors(texts[0])[0].tensor_proto.string_val[0].decode() if texts else ""
    return scalars, text


def _expected(run_dir) -> dict[str, list[tuple[int, float]]]:
    keys = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm", "padding": "train/padding",
            "tokens_per_s": "train/tokens_per_s", "eval_loss": "eval/loss", "accuracy": "eval/accuracy"}
    out: dict[str, list] = {}
    for m in T.read_metrics(run_dir):
        for k, tag in keys.items():
            if k in m:
                out.setdefault(tag, []).append((m["step"], float(np.float32(m[k]))))
    return out


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("bert"), "bert")


def _config(out, model, data):
    rows = [{"text": f"the film was {w} indeed", "label": w} for w in ["good", "bad"] * 24]
    Path(data).write_text("\n".join(json.dumps(r) for r in rows))
    return RunConfig().replace(model={"path": str(model), "task": "classification"},
                               lora={"targets": ["q", "v"], "rank": 2, "alpha": 4},
                               data={"path": str(data), "max_length": 16},
                               train={"max_steps": 6, "batch_size": 8, "lr": 1e-2, "eval_every": 3,
                                      "save_every": 3, "seed": 0},
                               out=str(out))


def test_event_files_equal_metrics_and_resume_adds_no_step_twice(tmp_path, bert_folder):
    cfg = _config(tmp_path / "run", bert_folder, tmp_path / "d.jsonl")
    assert isinstance(T.train(cfg), T.Finished)
    run = Path(cfg.out)
    assert list(run.glob("events.out.tfevents.*"))
    got, text = _read(run)
    want = _expected(run)
    assert set(want) == {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/padding", "eval/loss",
                         "eval/accuracy"}
    assert got == want  # every value, bit for bit at float32
    assert [s for s, _ in got["train/loss"]] == list(range(1, 7))
    assert "max_steps = 6" in text and "[lora]" in text

    # a kill after step 6 with its newest checkpoint at step 3: steps 4..6 are replayed
    shutil.rmtree(run / "checkpoints" / "step-6")
    first_losses = dict(got["train/loss"])
    assert isinstance(T.train(cfg, resume=run), T.Finished)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    got2, _ = _read(run)
    assert got2 == _expected(run)
    assert [s for s, _ in got2["train/loss"]] == list(range(1, 7))  # each step once
    assert [s for s, _ in got2["eval/loss"]] == [0, 3, 6]
    assert dict(got2["train/loss"])[2] == first_losses[2]  # before the checkpoint: the first process's
