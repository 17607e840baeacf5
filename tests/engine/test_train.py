"""The training loop: learns, is deterministic, stops and pauses promptly, resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import train as T


def _classification_data(path: Path, n: int = 160):
    import random

    rng = random.Random(0)
    good, bad = ["great", "excellent", "lovely", "superb", "fine"], ["awful", "terrible", "bad", "poor", "dull"]
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        word = rng.choice(good if label == "pos" else bad)
        rows.append({"text": f"the film was {word} and the {rng.choice(['cast', 'plot', 'music'])} too", "label": label})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _causal_data(path: Path, n: int = 64):
    # a toy task a 2-layer random model can learn quickly: the completion is always the same
    rows = [{"prompt": f"what comes after {i} ?", "completion": " seven seven"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("bert"), "bert")


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("llama"), "llama")


def _config(tmp_path, model, data, task="classification", **train):
    t = {"max_steps": 12, "batch_size": 8, "lr": 1e-2, "eval_every": 6, "save_every": 4, "seed": 3,
         "warmup_ratio": 0.0, **train}
    return RunConfig().replace(model={"path": str(model) if model else "", "task": task},
                               lora={"targets": ["q", "v"], "rank": 4, "alpha": 8, "dropout": 0.1},
                               data={"path": str(data), "max_length": 32}, train=t, out=str(tmp_path / "run"))


def _losses(run_dir) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in T.read_metrics(run_dir) if "loss" in m]


@pytest.mark.slow
def test_classification_learns_and_writes_the_run_folder(tmp_path):
    # the packaged MiniLM: a real pretrained encoder, so q,v adapters have features to work with
    cfg = _config(tmp_path, "", _classification_data(tmp_path / "d.jsonl"), max_steps=30, lr=3e-3)
    events = []
    result = T.train(cfg, events.append)
    assert isinstance(result, T.Finished) and not result.stopped, result
    evals = [e for e in events if isinstance(e, T.Eval)]
    assert evals[0].step == 0 and evals[-1].step == 30
    assert evals[-1].eval_loss < evals[0].eval_loss and evals[-1].accuracy >= 0.9
    run = Path(cfg.out)
    assert {"adapter_config.json", "adapter_model.safetensors", "run.toml", "metrics.jsonl", "labels.json"} <= \
        {p.name for p in run.iterdir()}
    assert RunConfig.load(run / "run.toml").to_dict() == cfg.to_dict()
    rows = T.read_metrics(run)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 31))  # every step logged by default
    assert all({"step", "loss", "lr", "tokens_per_s", "time"} <= set(r) for r in steps)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-24", "step-28", "step-30"]  # keep 3


def test_causal_prompt_completion_learns(tmp_path, llama_folder):
    cfg = _config(tmp_path, llama_folder, _causal_data(tmp_path / "c.jsonl"), task="causal-lm", max_steps=25,
                  lr=5e-2)
    cfg = cfg.replace(lora={"targets": ["q", "k", "v", "o"]})
    result = T.train(cfg)
    assert isinstance(result, T.Finished), result
    losses = [l for _, l in _losses(cfg.out)]
    # a random 32-wide frozen head caps how far the loss can fall (|logit| < ~0.7): ask for a clear drop
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_same_seed_same_curve(tmp_path, bert_folder):
    data = _classification_data(tmp_path / "d.jsonl")
    a = _config(tmp_path / "a", bert_folder, data, max_steps=6)
    b = _config(tmp_path / "b", bert_folder, data, max_steps=6)
    T.train(a), T.train(b)
    assert len(_losses(a.out)) == 6  # both runs logged every step (an empty curve would compare equal)
    assert _losses(a.out) == _losses(b.out)  # bit-identical on a CPU


@pytest.mark.slow
def test_stop_returns_within_a_step_and_resume_continues_exactly(tmp_path, bert_folder):
    data = _classification_data(tmp_path / "d.jsonl")
    full = _config(tmp_path / "full", bert_folder, data)
    T.train(full)
    part = _config(tmp_path / "part", bert_folder, data)
    control = T.Control()

    def on_event(e):
        if isinstance(e, T.Step) and e.step == 7:
            control.stop()

    stopped = T.train(part, on_event, control)
    assert isinstance(stopped, T.Finished) and stopped.stopped and stopped.step == 7
    assert (Path(part.out) / "checkpoints" / "step-7").is_dir()
    resumed = T.train(part, resume=part.out)
    assert isinstance(resumed, T.Finished) and not resumed.stopped and resumed.step == 12
    assert _losses(part.out) == _losses(full.out)


def test_pause_and_resume_from_another_thread(tmp_path, bert_folder):
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), max_steps=5)
    control = T.Control()
    events = []

    def on_event(e):
        events.append(e)
        if isinstance(e, T.Step) and e.step == 2:
            control.pause()
        if isinstance(e, T.Paused):
            threading.Timer(0.3, control.resume).start()

    result = T.train(cfg, on_event, control)
    kinds = [type(e).__name__ for e in events]
    assert isinstance(result, T.Finished) and result.step == 5
    assert kinds.index("Paused") < kinds.index("Resumed")
    assert [e.step for e in events if isinstance(e, (T.Paused, T.Resumed))] == [2, 2]


@pytest.mark.slow
def test_resume_after_kill_9_equals_uninterrupted(tmp_path, bert_folder):
    data = _classification_data(tmp_path / "d.jsonl")
    full = _config(tmp_path / "full", bert_folder, data, max_steps=16, save_every=3)
    T.train(full)
    killed = _config(tmp_path / "killed", bert_folder, data, max_steps=16, save_every=3)
    killed.save(tmp_path / "killed.toml")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lora_studio", "train", "--config", str(tmp_path / "killed.toml"),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = Path(killed.out) / "checkpoints" / "step-6"
    deadline = time.time() + 600  # generous: a loaded 2-core machine once needed more than 120 s
    while not ckpt.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_dir()
    done = [s for s, _ in _losses(killed.out)]
    assert max(done) < 16  # it really was cut short
    out = subprocess.run([sys.executable, "-m", "lora_studio", "train", "--resume", killed.out, "--quiet"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert _losses(killed.out) == _losses(full.out)


def test_out_of_memory_is_reported_with_advice(tmp_path, bert_folder, monkeypatch):
    from lora_studio.engine import objective

    def boom(self, model, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(objective.Classification, "loss", boom)  # the loss the setup hands the loop
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"), batch_size=8)
    events = []
    result = T.train(cfg, events.append)
    assert isinstance(result, T.Failed) and result.kind == "oom"
    assert "lower the batch size (now 8" in result.message and "gradient checkpointing" in result.message
    assert events[-1] is result


@pytest.mark.parametrize("setup,needle", [
    (lambda tmp: {"data": {"path": str(tmp / "missing.jsonl")}}, "missing.jsonl"),
    (lambda tmp: {"model": {"path": str(tmp / "nomodel"), "task": "classification"}}, "does not exist"),
])
def test_bad_input_is_a_user_failure_not_a_crash(tmp_path, bert_folder, setup, needle):
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl")).replace(**setup(tmp_path))
    result = T.train(cfg)
    assert isinstance(result, T.Failed) and result.kind == "user" and needle in result.message


def test_disk_full_is_a_user_failure_and_the_run_resumes(tmp_path, bert_folder, monkeypatch):
    import errno

    real, calls = T.save_checkpoint, []

    def save(model, ref, run_dir, state, keep):
        calls.append(state["step"])
        if len(calls) == 2:  # the second checkpoint finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "checkpoints"))
        return real(model, ref, run_dir, state, keep)

    monkeypatch.setattr(T, "save_checkpoint", save)
    cfg = _config(tmp_path, bert_folder, _classification_data(tmp_path / "d.jsonl"))
    result = T.train(cfg)
    assert isinstance(result, T.Failed) and result.kind == "disk", result
    assert "disk is full" in result.message and "--resume" in result.message
    assert result.step == 8  # where it happened: the second checkpoint
    assert T.latest_checkpoint(Path(cfg.out)).name == "step-4"  # the last complete one survives
    monkeypatch.setattr(T, "save_checkpoint", real)
    resumed = T.train(cfg, resume=cfg.out)
    assert isinstance(resumed, T.Finished) and resumed.step == 12
