"""The rank study on a tiny model: the runs and sweep.json, φ against itself, a fixed budget,
an interrupted sweep that continues."""

import json
from pathlib import Path

import pytest
import torch

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import UserError
from lora_studio.engine import sweep as S
from lora_studio.engine import train as T
from test_train import _classification_data


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("bert"), "bert")


def _config(model, data):
    return RunConfig().replace(model={"path": str(model), "task": "classification"},
                               lora={"targets": ["q", "v"], "rank": 4, "alpha": 8},
                               data={"path": str(data), "max_length": 32, "validation_split": 0.25},
                               train={"max_steps": 2, "batch_size": 8, "lr": 1e-2, "eval_every": 0,
                                      "save_every": 1, "seed": 3, "warmup_ratio": 0.0})


def test_sweep_runs_continues_and_summarises(tmp_path, bert_folder):
    cfg = _config(bert_folder, _classification_data(tmp_path / "d.jsonl", 48))
    out = tmp_path / "sweep"
    control = T.Control()
    started = []

    def stop_in_third_run(e):  # a Ctrl-C during the third run
        if isinstance(e, T.Started):
            started.append(e.out)
        if isinstance(e, T.Step) and len(started) == 3 and e.step == 1:
            control.stop()

    part = S.run_sweep(cfg, out, [1, 2, 4], seeds=2, on_event=stop_in_third_run, control=control)
    assert not part["complete"] and len(part["runs"]) == 2
    mtimes = {p.name: (p / "adapter_model.safetensors").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    events = []
    doc = S.run_sweep(cfg, out, [1, 2, 4], seeds=2, on_event=events.append)
    assert doc["complete"]
    names = [r["name"] for r in doc["runs"]]
    assert names == [f"q-v_r{r}_s{s}" for r in (1, 2, 4) for s in (3, 4)]
    reused = [e.message for e in events if isinstance(e, T.Status) and "reused" in e.message]
    assert len(reused) == 2  # the two finished runs are not trained again …
    for name in names[:2]:
        assert (out / name / "adapter_model.safetensors").stat().st_mtime_ns == mtimes[name]
    assert any("resuming" in e.message for e in events if isinstance(e, T.Status))  # … the stopped one resumes
    on_disk = json.loads((out / "sweep.json").read_text())
    assert on_disk["complete"] and [r["name"] for r in on_disk["runs"]] == names
    for r in on_disk["runs"]:
        assert {"rank", "run_dir", "trainable_params", "final_loss", "eval_loss", "accuracy"} <= set(r)
        assert Path(r["run_dir"]).is_dir() and r["final_loss"] is not None and r["eval_loss"] is not None
    # per rank: 2 layers x (q, v) x r·(32 + 32) adapter parameters, plus the classifier head
    head = on_disk["runs"][0]["trainable_params"] - 4 * 64
    assert [r["trainable_params"] - head for r in on_disk["runs"]] == [4 * 64 * r for r in (1, 1, 2, 2, 4, 4)]
    sims = on_disk["similarity"]
    assert {(s["rank_a"], s["rank_b"], s["seed"]) for s in sims} == {(1, 4, 3), (2, 4, 3), (1, 4, 4), (2, 4, 4)}
    phi = sims[0]["phi"]
    assert set(phi) == {"query", "value"} and len(phi["query"]) == sims[0]["rank_a"] and len(phi["query"][0]) == 4
    assert {(s["rank"], s["seed_a"], s["seed_b"]) for s in on_disk["seed_similarity"]} == {(1, 3, 4), (2, 3, 4), (4, 3, 4)}
    assert all(v > 0 for a in on_disk["amplification"] for v in a["amplification"].values())
    assert "Loss vs rank" in (out / "report.md").read_text()
    # φ of a run with itself: 1 on the diagonal (the top-i directions are the same)
    same = S.mean_phi(on_disk["runs"][-1]["run_dir"], on_disk["runs"][-1]["run_dir"])
    for m in same.values():
        torch.testing.assert_close(torch.tensor(m).diagonal(), torch.ones(4), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="other settings"):
        S.run_sweep(cfg.replace(train={"lr": 5e-3}), out, [1, 2, 4], seeds=2)


def test_fixed_budget_trains_equal_parameter_counts(bert_folder, tmp_path):
    cfg = _config(bert_folder, _classification_data(tmp_path / "d.jsonl", 16))
    sets = [["q"], ["q", "v"], ["q", "k", "v", "o"]]
    points = S.plan_points(cfg, [4, 8], seeds=1, targets_sets=sets, fixed_budget=True)
    assert [(p.targets, p.rank, p.budget_rank) for p in points] == [
        (["q"], 4, 4), (["q", "v"], 2, 4), (["q", "k", "v", "o"], 1, 4),
        (["q"], 8, 8), (["q", "v"], 4, 8), (["q", "k", "v", "o"], 2, 8)]
    for b in (4, 8):
        counts = {tuple(p.targets): S.trainable(cfg, p.targets, p.rank) for p in points if p.budget_rank == b}
        step = {ts: S.trainable(cfg, ts, 2) - S.trainable(cfg, ts, 1) for ts in counts}  # one rank step
        target = counts[("q",)]
        assert all(abs(n - target) <= step[ts] for ts, n in counts.items())


def test_refuses_a_folder_that_is_not_a_sweep(tmp_path, bert_folder):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="not a sweep folder"):
        S.run_sweep(_config(bert_folder, tmp_path / "d.jsonl"), tmp_path / "x", [1, 2])
    with pytest.raises(UserError, match="ranks"):
        S.parse_ranks("1,x")


def test_record_and_report_carry_the_last_eval_accuracy(tmp_path, bert_folder):
    cfg = _config(bert_folder, tmp_path / "d.jsonl")
    run = tmp_path / "q-v_r2_s3"
    run.mkdir()
    rows = [{"step": 0, "eval_loss": 1.4, "accuracy": 0.25}, {"step": 1, "loss": 1.2}, {"step": 2, "loss": 0.9},
            {"step": 2, "eval_loss": 0.8, "accuracy": 0.625}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec = S._record(cfg, S.Point(["q", "v"], 2, 3), run, None)
    assert (rec["final_loss"], rec["eval_loss"], rec["accuracy"]) == (0.9, 0.8, 0.625)
    doc = {"base_config": cfg.to_dict(), "ranks": [2], "seeds": 1, "targets_sets": [["q", "v"]],
           "fixed_budget": False, "runs": [rec]}
    assert "| 0.9000 | 0.8000 | 62.5% |" in S.report(doc)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")  # causal LM: no accuracy
    assert S._record(cfg, S.Point(["q", "v"], 2, 3), run, None)["accuracy"] is None
    # the head counted is the trained one, one row per label of labels.json (the demo has 4, not 2)
    h = json.loads((bert_folder / "config.json").read_text())["hidden_size"]
    lora = 2 * 2 * 2 * (h + h)  # 2 layers x (q, v) x r·(in + out)
    assert rec["trainable_params"] == lora + 2 * h + 2  # no labels.json: 2 labels
    (run / "labels.json").write_text(json.dumps(["a", "b", "c", "d"]))
    assert S._record(cfg, S.Point(["q", "v"], 2, 3), run, None)["trainable_params"] == lora + 4 * h + 4


def test_a_sweep_with_other_ranks_reuses_finished_runs(tmp_path, bert_folder):
    cfg = _config(bert_folder, _classification_data(tmp_path / "d.jsonl", 16))
    out = tmp_path / "sweep"
    S.run_sweep(cfg, out, [1])
    S.run_sweep(cfg, out, [2])  # sweep.json now lists r2 only
    mtimes = {p.name: (p / "adapter_model.safetensors").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    events = []
    doc = S.run_sweep(cfg, out, [1, 2], on_event=events.append)
    assert [e.message for e in events if isinstance(e, T.Status) and "reused" in e.message] == [
        "[1/2] q-v_r1_s3: finished before, reused", "[2/2] q-v_r2_s3: finished before, reused"]
    assert not any(isinstance(e, T.Started) for e in events)
    assert {p.name: (p / "adapter_model.safetensors").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()} == mtimes
    assert [r["rank"] for r in doc["runs"]] == [1, 2] and doc["complete"]
