"""A run's life as a user sees it: the folder it refuses, the state it records, Try it while paused
on the live weights, a diverging loss, a damaged checkpoint, a resume without checkpoint."""

import json
import threading
from pathlib import Path

import pytest

from lora_studio.engine import events as E
from lora_studio.engine import runfolder
from lora_studio.engine import train as T
from lora_studio.engine.errors import UserError
from test_train import _classification_data, _config, _losses, bert_folder  # noqa: F401 - fixture


def test_refuses_a_folder_with_files_unless_overwrite(tmp_path, bert_folder):
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=2, eval_every=0)
    mine = Path(cfg.out) / "checkpoints" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")
    refused = T.train(cfg)
    assert isinstance(refused, E.Failed) and refused.kind == "user" and "--overwrite" in refused.message
    assert mine.read_text() == "keep me"
    # --overwrite replaces only a run: a folder that is not one is refused, nothing deleted (issue 22)
    refused = T.train(cfg, overwrite=True)
    assert isinstance(refused, E.Failed) and refused.kind == "user" and "not a run folder" in refused.message
    assert mine.read_text() == "keep me"
    (Path(cfg.out) / "checkpoints").rename(Path(cfg.out) / "mine")
    (Path(cfg.out) / "run.toml").write_text(cfg.to_toml())  # now a run (killed before its first step)
    done = T.train(cfg, overwrite=True)
    assert isinstance(done, E.Finished) and not done.stopped
    assert (Path(cfg.out) / "mine" / "notes.txt").read_text() == "keep me"  # not the run's: kept
    assert runfolder.run_state(cfg.out)["state"] == "finished"
    assert not runfolder.run_state(cfg.out)["resumable"]


def test_paths_are_stored_absolute(tmp_path, bert_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _classification_data(tmp_path / "d.jsonl")
    cfg = _config(tmp_path, bert_folder, data, max_steps=1, eval_every=0).replace(
        out="runs/r", data={"path": "d.jsonl"})
    assert isinstance(T.train(cfg), E.Finished)
    from lora_studio.config import RunConfig

    saved = RunConfig.load(tmp_path / "runs" / "r" / runfolder.RUN_FILE)
    assert saved.out == str(tmp_path / "runs" / "r") and saved.data.path == str(data)
    assert Path(saved.model.path).is_absolute()


def test_try_it_while_paused_uses_the_live_weights(tmp_path, bert_folder):
    from lora_studio.engine.tryit import compare_live

    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=40,
                  eval_every=0, save_every=0, save_minutes=0)
    control = E.Control()
    answers, steps = {}, []

    def on_event(e):
        if isinstance(e, E.Step):
            steps.append(e.step)
            if e.step == 10:
                control.pause()
        if isinstance(e, E.Paused):
            fut = control.call_paused(lambda s: compare_live(s, "the film was great and the cast too"))
            threading.Thread(target=lambda: (answers.setdefault("c", fut.result(60)), control.resume())).start()

    result = T.train(cfg, on_event, control)
    assert isinstance(result, E.Finished) and result.step == 40
    c = answers["c"]
    assert "live weights" in c.source
    # no checkpoint was saved before the end (save_every 0, save_minutes 0): the answer came from memory
    assert [p.name for p in runfolder.checkpoints(cfg.out)] == ["step-40"]
    base = dict(c.base.probabilities)
    adapted = dict(c.adapted.probabilities)
    assert abs(sum(adapted.values()) - 1) < 1e-5 and base != adapted  # trained for 10 steps: it differs
    assert steps == list(range(1, 41))  # pausing lost no step


def test_a_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(tmp_path, bert_folder, monkeypatch):
    import lora_studio.engine.objective as O

    real = O.Classification.loss
    calls = []

    def loss(self, model, batch):
        calls.append(1)
        out, stats = real(self, model, batch)
        return (out * float("nan") if len(calls) == 7 else out), stats

    monkeypatch.setattr(O.Classification, "loss", loss)  # the loss the setup hands the loop
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), eval_every=0, save_every=4)
    result = T.train(cfg)
    assert isinstance(result, E.Failed) and result.kind == "nonfinite" and result.step == 7
    assert "step 7" in result.message and "learning rate" in result.message and "step-4" in result.message
    text = (Path(cfg.out) / runfolder.METRICS_FILE).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert [s for s, _ in _losses(cfg.out)] == list(range(1, 7))
    assert runfolder.latest_checkpoint(cfg.out).name == "step-4"
    assert not (Path(cfg.out) / runfolder.ADAPTER_WEIGHTS).exists()  # nothing exportable from the NaN state
    assert runfolder.run_state(cfg.out)["state"] == "failed"


def test_resume_skips_a_damaged_checkpoint_and_says_so(tmp_path, bert_folder):
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=8, eval_every=0,
                  save_every=4, keep_checkpoints=3)
    control = E.Control()
    T.train(cfg, lambda e: control.stop() if isinstance(e, E.Step) and e.step == 6 else None, control)
    newest = runfolder.latest_checkpoint(cfg.out)
    assert newest.name == "step-6"
    state = newest / runfolder.STATE_FILE
    state.write_bytes(state.read_bytes()[:100])  # cut short, as a kill or a full disk would
    seen = []
    result = T.train(cfg, seen.append, resume=cfg.out)
    started = next(e for e in seen if isinstance(e, E.Started))
    assert isinstance(result, E.Finished) and result.step == 8
    assert started.start_step == 4 and any("step-6 is damaged" in n for n in started.notes)


def test_resume_without_a_checkpoint_starts_again(tmp_path, bert_folder):
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=3, eval_every=0)
    run = runfolder.prepare_new_run(cfg.out)
    cfg.save(run / runfolder.RUN_FILE)  # as a run killed while loading leaves it
    seen = []
    result = T.train(cfg, seen.append, resume=cfg.out)
    started = next(e for e in seen if isinstance(e, E.Started))
    assert isinstance(result, E.Finished) and result.step == 3 and started.start_step == 0
    assert any("starts again from step 0" in n for n in started.notes)


def test_evaluation_reports_progress_and_the_eta_counts_it(tmp_path, bert_folder, monkeypatch):
    from lora_studio.engine import setup

    monkeypatch.setattr(setup, "EVAL_PROGRESS_S", 0.0)  # every batch (the GUI gets it twice a second)
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl", n=400), max_steps=6,
                  eval_every=3, batch_size=4)
    seen = []
    T.train(cfg, seen.append)
    ev = [e for e in seen if isinstance(e, E.Evaluating)]
    assert ev[0].step == 0 and ev[0].done == 0 and ev[0].total == 40
    assert [e.done for e in ev if e.step == 0] == list(range(0, 41, 4))  # progress within a pass, batch by batch
    steps = [e for e in seen if isinstance(e, E.Step)]
    # the last step's own evaluation runs after its Step event: the ETA still counts it
    assert all(s.eta >= 0 for s in steps) and steps[-1].eta > 0


def test_killed_run_state(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    runfolder.write_run_state(run, "running", 3, 10)
    st = json.loads((run / runfolder.RUN_STATE_FILE).read_text())
    st["pid"] = 2**22 + 12345  # no such process
    (run / runfolder.RUN_STATE_FILE).write_text(json.dumps(st))
    assert runfolder.run_state(run)["state"] == "killed"


def test_export_targets_never_a_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / runfolder.RUN_FILE).write_text("")
    other = tmp_path / "other"
    other.mkdir()
    (other / runfolder.RUN_FILE).write_text("")
    for target in (run, run / "checkpoints" / "x", other, other / "merged"):
        with pytest.raises(UserError, match="inside the run folder"):
            runfolder.check_export_target(target, run)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(UserError, match="--overwrite"):
        runfolder.check_export_target(tmp_path / "full", run)
    # --overwrite replaces only an earlier export (issue 22): a folder of the user's is refused
    with pytest.raises(UserError, match="nothing was deleted"):
        runfolder.check_export_target(tmp_path / "full", run, overwrite=True)
    (tmp_path / "full" / runfolder.EXPORT_FILE).write_text('{"files": ["f"]}')
    assert runfolder.check_export_target(tmp_path / "full", run, overwrite=True) == tmp_path / "full"


def test_metrics_are_strict_json():
    line = runfolder.metrics_line({"step": 1, "loss": float("nan"), "x": [float("inf"), 1.0]})
    assert json.loads(line) == {"step": 1, "loss": None, "x": [None, 1.0]}


def test_gguf_never_writes_into_a_run_folder(tmp_path):
    from lora_studio.engine.gguf import check_out

    run = tmp_path / "run"
    run.mkdir()
    (run / runfolder.RUN_FILE).write_text("")
    with pytest.raises(UserError, match="inside the run folder"):
        check_out(run / "model.gguf", overwrite=True, run_dir=run)
    assert check_out(tmp_path / "out" / "model.gguf", overwrite=False, run_dir=run) == tmp_path / "out" / "model.gguf"


def test_disk_full_before_the_first_checkpoint_says_start_again_and_leaves_no_temp(tmp_path, bert_folder,
                                                                                     monkeypatch):
    """Issue 12 item 11: nothing can be resumed yet, so the message must not say "resume"; the
    half-written checkpoint folder is removed."""
    import errno

    import lora_studio.engine.adapters as A

    real = A.save_adapter

    def full(model, out_dir, *args, **kwargs):
        if ".tmp-step-" in str(out_dir):
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "half").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir))
        return real(model, out_dir, *args, **kwargs)

    monkeypatch.setattr(A, "save_adapter", full)
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=6, eval_every=0,
                  save_every=2)
    result = T.train(cfg)
    assert isinstance(result, E.Failed) and result.kind == "disk" and result.step == 2
    assert "nothing was saved yet" in result.message and "resume" not in result.message
    assert not list((Path(cfg.out) / "checkpoints").glob(".tmp-step-*"))


def test_a_stopped_run_sends_the_spectra_of_the_step_it_stopped_at(tmp_path, bert_folder):
    """Walkthrough: after Continue then Stop, the Spectra tab still showed the step the run was
    opened at; the engine sent final spectra only for a run that finished."""
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=20,
                  eval_every=2, save_every=0, save_minutes=0)  # evaluation on, as a user has it
    control, spectra = E.Control(), []

    def on_event(e):
        if isinstance(e, E.Step) and e.step == 3:
            control.stop()
        if isinstance(e, E.Spectra):
            spectra.append(e.step)

    result = T.train(cfg, on_event, control, spectra_every=10)
    assert isinstance(result, E.Finished) and result.stopped and result.step == 3
    assert spectra == [3]
