"""The objective seam (engine/objective.py): a loss, its real-token count and its extra numbers
plug into the loop without touching it, and the numbers reach metrics.jsonl, the events and
TensorBoard by name."""

import json
from pathlib import Path

import pytest
import torch

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import events as E
from lora_studio.engine import objective as O
from lora_studio.engine import tasks
from lora_studio.engine import train as T


class Doubled(O.CausalLM):
    """The causal-LM loss, plus a stat that is twice it, and a token count of 0 (so tokens_per_s
    can only be 0 if the loop asks the objective rather than counting padding)."""

    calls = 0

    def tokens(self, batch):
        return 0

    def loss(self, model, batch):
        Doubled.calls += 1
        loss, _ = super().loss(model, batch)
        return loss, {"double_loss": 2 * loss.detach(), "batch_rows": torch.tensor(float(len(batch["input_ids"])))}

    eval_sums = O.Objective.eval_sums  # the generic one: loss x count, stats x count


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("llama"), "llama")


def test_an_objective_plugs_in_and_its_stats_are_logged_by_name(tmp_path, llama_folder, monkeypatch):
    monkeypatch.setitem(tasks.OBJECTIVES, "causal-lm", lambda config: Doubled())
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"what comes after {i} ?", "completion": " seven"})
                              for i in range(24)))
    cfg = RunConfig().replace(model={"path": str(llama_folder), "task": "causal-lm"},
                              lora={"targets": ["q", "v"], "rank": 2, "alpha": 4},
                              data={"path": str(data), "max_length": 24, "validation_split": 0.25},
                              train={"max_steps": 3, "batch_size": 4, "lr": 1e-2, "eval_every": 3, "seed": 0},
                              out=str(tmp_path / "run"))
    events = []
    assert isinstance(T.train(cfg, events.append), T.Finished)
    assert Doubled.calls >= 3  # the loop trained on this objective's loss
    steps = [e for e in events if isinstance(e, E.Step)]
    assert [e.step for e in steps] == [1, 2, 3]
    for e in steps:
        assert e.tokens_per_s == 0.0  # the objective's count of real tokens, not the padding mask
        assert e.stats["double_loss"] == pytest.approx(2 * e.loss, rel=1e-5)
        assert e.stats["batch_rows"] == pytest.approx(4.0)
    rows = T.read_metrics(cfg.out)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["double_loss"] for r in train_rows] == pytest.approx([2 * r["loss"] for r in train_rows], rel=1e-5)
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 3]
    assert [r["eval_double_loss"] for r in evals] == pytest.approx([2 * r["eval_loss"] for r in evals], rel=1e-5)
    ev = [e for e in events if isinstance(e, E.Eval)][-1]
    assert ev.stats["double_loss"] == pytest.approx(2 * ev.eval_loss, rel=1e-5) and ev.accuracy is None

    # a run followed through its folder (the GUI's multi-process runs) sees the same numbers
    again = [e for r in rows for e in E.events_of_row(r, 3)]
    assert [(e.step, e.loss, e.stats) for e in again if isinstance(e, E.Step)] == \
        [(e.step, e.loss, e.stats) for e in steps]
    assert [(e.step, e.eval_loss, e.stats) for e in again if isinstance(e, E.Eval)] == \
        [(e.step, e.eval_loss, e.stats) for e in events if isinstance(e, E.Eval)]

    acc = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    reader = acc.EventAccumulator(str(Path(cfg.out)), size_guidance={"scalars": 0})
    reader.Reload()
    tags = set(reader.Tags()["scalars"])
    assert {"train/double_loss", "train/batch_rows", "eval/double_loss"} <= tags
    assert [s.step for s in reader.Scalars("train/double_loss")] == [1, 2, 3]


def test_the_built_in_objectives_count_on_the_host():
    from lora_studio.engine.data import collate

    examples = [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]},
                {"input_ids": [5, 6], "labels": [-100, 6]}]
    batch = collate(examples, 0)
    causal = tasks.objective_for(RunConfig().replace(model={"task": "causal-lm"}))
    assert isinstance(causal, O.CausalLM)
    assert causal.count(batch) == 3  # positions that predict a target token
    assert causal.tokens(batch) == 6  # real tokens: padding excluded
    rows = collate([{"input_ids": [1, 2, 3], "labels": 1}, {"input_ids": [1], "labels": 0}], 0)
    cls = tasks.objective_for(RunConfig().replace(model={"task": "classification"}))
    assert isinstance(cls, O.Classification) and cls.count(rows) == 2 and cls.tokens(rows) == 4


def test_to_device_moves_tensors_and_passes_host_values_through():
    from lora_studio.engine.setup import to_device

    host = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[-100, 2, 3]]), "seq_bounds": (0, 3)}
    batch = to_device(host, torch.device("cpu"))
    assert batch["seq_bounds"] == (0, 3) and torch.equal(batch["input_ids"], host["input_ids"])
    assert [t.tolist() for t in batch.targets] == [[0, 1], [2, 3]]
