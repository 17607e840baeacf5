"""Issue 22, resume and settings: a bad line in metrics.jsonl does not cut the history; the first
step after `--resume --max-steps` extends a run trains at the new schedule's rate (not 0); a run
another live process trains is refused at once; `rank = true` and `--config DIR` say what is wrong."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tiny
from lora_studio.cli import main
from lora_studio.engine.runfolder import read_metrics
from clihelp import cli, one_error

DATA = Path(__file__).parents[2] / "resources" / "data"
CAUSAL = DATA / "demo_causal.jsonl"
FAST = ["--batch-size", "4", "--max-length", "32", "--eval-every", "0", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """6 steps, linear schedule, a checkpoint at step 3 and the final one at 6."""
    root = tmp_path_factory.mktemp("resume")
    base = tiny.model_folder(root / "base", "llama")
    assert main(["train", "--model", str(base), "--data", str(CAUSAL), *FAST, "--max-steps", "6",
                 "--save-every", "3", "--out", str(root / "run")]) == 0
    return root / "run"


def test_bad_metrics_line_then_resume_keeps_the_history(run, tmp_path, capsys):
    r = tmp_path / "r"
    shutil.copytree(run, r)
    lines = (r / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 7  # 6 steps and the final evaluation
    lines[1] = '{"step": 2, "loss": oops'
    (r / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = cli(["train", "--resume", r, "--max-steps", "8"], capsys)
    assert code == 0, err
    assert "1 unreadable line(s) (line 2)" in err
    steps = [m["step"] for m in read_metrics(r) if "loss" in m]
    assert steps == [1, 3, 4, 5, 6, 7, 8]
    assert (r / "metrics.unreadable.txt").read_text() == '{"step": 2, "loss": oops\n'


def test_first_step_after_max_steps_extension_has_a_learning_rate(run, tmp_path, capsys):
    r = tmp_path / "r"
    shutil.copytree(run, r)
    code, _, err = cli(["train", "--resume", r, "--max-steps", "10"], capsys)
    assert code == 0, err
    lr = {m["step"]: m["lr"] for m in read_metrics(r) if "lr" in m}
    # the linear schedule over 10 steps, no warm-up: lr(step s) = 1e-3 * (1 - (s - 1) / 10)
    for s in (7, 8, 9, 10):
        assert lr[s] == pytest.approx(1e-3 * (1 - (s - 1) / 10), rel=1e-9), (s, lr)


def test_resume_of_a_run_a_live_process_trains_is_refused(run, tmp_path, capsys):
    r = tmp_path / "r"
    shutil.copytree(run, r)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        state = {"state": "running", "step": 4, "total_steps": 6, "pid": other.pid, "host": socket.gethostname(),
                 "updated": time.time(), "message": ""}
        (r / "run_state.json").write_text(json.dumps(state))
        before = {p: (r / p).read_bytes() for p in ("run.toml", "run_state.json", "metrics.jsonl")}
        code, _, err = cli(["train", "--resume", r, "--max-steps", "8"], capsys)
        assert code == 2 and str(other.pid) in one_error(err) and "being trained" in err
        assert {p: (r / p).read_bytes() for p in before} == before
        # --overwrite of it too
        code, _, err = cli(["train", "--model", run.parent / "base", "--data", CAUSAL, *FAST, "--max-steps", "1",
                            "--out", r, "--overwrite"], capsys)
        assert code == 2 and str(other.pid) in one_error(err)
        assert (r / "checkpoints" / "step-6").is_dir()
    finally:
        other.kill()
        other.wait()
    code, _, err = cli(["train", "--resume", r, "--max-steps", "7"], capsys)  # its process is gone: resumable
    assert code == 0, err


def test_toml_bool_for_a_number_is_refused(run, tmp_path, capsys):
    (tmp_path / "c.toml").write_text("[lora]\nrank = true\n")
    code, _, err = cli(["train", "--config", tmp_path / "c.toml", "--model", run.parent / "base", "--data", CAUSAL,
                        "--max-steps", "1", "--quiet", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "rank = True is not a valid int" in one_error(err)
    assert not (tmp_path / "o").exists()


def test_config_given_a_folder_says_so(run, capsys):
    code, _, err = cli(["train", "--config", run, "--out", run.parent / "o"], capsys)
    assert code == 2 and f"give --config {run / 'run.toml'}" in one_error(err)


def test_inspect_on_a_folder_without_an_adapter(tmp_path, capsys):
    code, _, err = cli(["inspect", tmp_path], capsys)
    line = one_error(err)
    assert code == 2 and "neither a run folder nor a PEFT adapter folder" in line and "train first" not in line
