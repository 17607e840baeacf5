"""Code review (issue 22), smaller items: an evaluation cut short by Stop is not recorded as a full
one; elapsed time counts training, not a pause; a new run over an old one (--overwrite) that fails
leaves no old memory.json behind."""

from __future__ import annotations

import time
from pathlib import Path

from lora_studio.engine import events as E
from lora_studio.engine import runfolder
from lora_studio.engine import train as T
from test_train import _classification_data, _config, bert_folder  # noqa: F401 - fixture


def test_evaluation_cut_short_by_stop_is_not_recorded(tmp_path, bert_folder):
    # 160 rows, 10% held out: 16 validation examples, 2 batches of 8; Stop arrives as the step-3 one starts
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=6, eval_every=3,
                  save_every=0)
    control = E.Control()
    seen = []

    def on_event(e):
        seen.append(e)
        if isinstance(e, E.Evaluating) and e.step == 3 and e.done == 0:
            control.stop()

    end = T.train(cfg, on_event, control)
    assert isinstance(end, E.Finished) and end.stopped and end.step == 3
    evals = [m for m in runfolder.read_metrics(cfg.out) if "eval_loss" in m]
    assert [m["step"] for m in evals] == [0]  # the baseline only: no partial one at step 3
    assert not [e for e in seen if isinstance(e, E.Eval) and e.step == 3]
    assert end.eval_loss == evals[0]["eval_loss"]
    assert any(isinstance(e, E.Status) and "not recorded" in e.message for e in seen)


def test_elapsed_time_leaves_out_a_pause(tmp_path, bert_folder, monkeypatch):
    """A pause of 1000 s (a clock moved forward while paused) adds nothing to `elapsed`."""
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=4, eval_every=0,
                  save_every=0)
    control = E.Control()
    skew = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + skew[0])
    steps = {}

    def on_event(e):
        if isinstance(e, E.Step):
            steps[e.step] = e.elapsed
            if e.step == 2:
                control.pause()
        elif isinstance(e, E.Paused):
            skew[0] += 1000.0  # the user went for lunch
            control.resume()

    end = T.train(cfg, on_event, control)
    assert isinstance(end, E.Finished) and not end.stopped
    assert steps[3] - steps[2] < 500, steps


def test_failed_overwrite_leaves_no_old_memory_json(tmp_path, bert_folder):
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=1, eval_every=0)
    assert isinstance(T.train(cfg), E.Finished)
    out = Path(cfg.out)
    assert (out / "memory.json").is_file()
    (out / "notes.txt").write_text("mine")
    bad = cfg.replace(data={"path": str(tmp_path / "missing.jsonl")})
    failed = T.train(bad, overwrite=True)
    assert isinstance(failed, E.Failed) and failed.kind == "user"
    assert not (out / "memory.json").exists()  # the Fit panel must not show the old peak
    assert (out / "notes.txt").read_text() == "mine"


def test_tokens_per_s_spans_the_steps_since_the_last_sync(tmp_path, bert_folder, monkeypatch):
    """GPU review N18: with log_every 3 the host waits for the device only every third step, so the
    logged step's own time would hold the unsynced steps' backlog (or, as here, miss their time).
    The rate is now taken from sync to sync: 30 s that pass during unlogged step 2 show up as
    >= 10 s per step at step 3."""
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=3, eval_every=0,
                  save_every=0, log_every=3)
    skew = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + skew[0])
    step_of = T.Loop.optimizer_step

    def optimizer_step(self):
        out = step_of(self)
        if self.step == 2:
            skew[0] += 30.0  # step 2 "took" 30 s more: time the host did not wait for
        return out

    monkeypatch.setattr(T.Loop, "optimizer_step", optimizer_step)
    steps = []
    end = T.train(cfg, lambda e: steps.append(e) if isinstance(e, E.Step) else None)
    assert isinstance(end, E.Finished) and [e.step for e in steps] == [3]
    row = [m for m in runfolder.read_metrics(cfg.out) if "loss" in m][0]
    tokens = row["tokens_per_s"]
    assert 0 < tokens * 10.0 <= 8 * 32 * 1.001, row  # at most 8 examples x 32 tokens in >= 10 s
