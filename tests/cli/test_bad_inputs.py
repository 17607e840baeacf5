"""Every bad input gets one `error:` line, the right exit status, no traceback, and nothing a user
made is lost (issue 12, items 1-14, and DESIGN.md "Rules every command keeps").

One row per case: (id, argv, exit status, a piece of the error line, files that must survive).
argv holds {placeholders} filled from the shared fixtures below; `prep` names a set-up step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from lora_studio.cli import main

DATA = Path(__file__).parents[2] / "resources" / "data"
CAUSAL = DATA / "demo_causal.jsonl"
CLS_TRAIN = DATA / "demo_classification_train.jsonl"
FAST = ["--max-steps", "2", "--batch-size", "4", "--max-length", "32", "--eval-every", "0", "--quiet"]


def run_cli(argv, capsys):
    """In-process `lora-studio argv`: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """Shared: tiny causal and classifier bases, one trained run of each, a scratch folder."""
    root = tmp_path_factory.mktemp("bad")
    base = tiny.model_folder(root / "base", "llama")
    gpt2 = tiny.model_folder(root / "gpt2", "gpt2")  # 64 positions
    cls_base = tiny.model_folder(root / "cls_base", "bert")
    for name, argv in (("run", ["--model", base, "--data", CAUSAL]),
                       ("cls_run", ["--model", cls_base, "--data", CLS_TRAIN, "--task", "classification"])):
        assert main(["train", *map(str, argv), *FAST, "--out", str(root / name)]) == 0
    return {"root": root, "base": base, "gpt2": gpt2, "cls_base": cls_base, "run": root / "run",
            "cls_run": root / "cls_run", "data": CAUSAL, "cls_data": CLS_TRAIN}


# -- set-up steps: each makes the thing a case must not destroy, in a fresh folder `t` ----------
def nonempty(w, t):
    (t / "d" / "checkpoints").mkdir(parents=True)
    (t / "d" / "checkpoints" / "p.txt").write_text("mine")


def plain(w, t):
    (t / "d").mkdir()
    (t / "d" / "notes.txt").write_text("mine")


def a_file(w, t):
    (t / "f.txt").write_text("mine")


def other_run(w, t):
    shutil.copytree(w["run"], t / "other")


def copy_run(w, t):
    shutil.copytree(w["run"], t / "r")


def edit_config(**changes):
    def prep(w, t):
        copy_run(w, t)
        cfg_path = t / "r" / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(changes)
        cfg_path.write_text(json.dumps(cfg))
        shutil.rmtree(t / "r" / "checkpoints")  # the top-level adapter is the newest then
    prep.__name__ = "edit_config_" + "_".join(changes)
    return prep


def edit_weights(fn):
    def prep(w, t):
        copy_run(w, t)
        shutil.rmtree(t / "r" / "checkpoints")
        path = t / "r" / "adapter_model.safetensors"
        tensors = load_file(path)
        save_file({k: fn(k, v) for k, v in tensors.items()}, str(path))
    return prep


def huge_line(w, t):
    """A 1 MB one-line text (item 8, scaled down): truncated with a counted warning, not read whole."""
    rows = [{"text": "word " * 200_000}] + [json.loads(line) for line in CAUSAL.read_text().splitlines()[:20]]
    (t / "huge.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def no_checkpoints(w, t):
    copy_run(w, t)
    shutil.rmtree(t / "r" / "checkpoints")


def truncated_state(w, t):
    """Two checkpoints, the newest's trainer_state.pt cut short."""
    root = w["root"] / "two_ckpts"
    if not root.exists():
        assert main(["train", "--model", str(w["base"]), "--data", str(CAUSAL), *FAST[2:], "--max-steps", "4",
                     "--save-every", "2", "--out", str(root)]) == 0
    shutil.copytree(root, t / "r")
    state = t / "r" / "checkpoints" / "step-4" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])


def bad_text_column(w, t):
    (t / "x.jsonl").write_text('{"body": "a b c", "tag": "x"}\n{"body": "d e", "tag": "y"}\n')


CASES = [
    # 1: --out onto a non-empty folder that is not this run: refused, its files survive
    ("1-out-nonempty", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--out", "{t}/d"], 2,
     "--overwrite", nonempty, ["d/checkpoints/p.txt"]),
    ("1-demo-twice", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--out", "{t}/other"], 2,
     "--overwrite", other_run, ["other/adapter_model.safetensors", "other/metrics.jsonl", "other/run.toml"]),
    # 3, 5: resize never writes into a run folder; merge refuses a non-empty --out
    ("5-resize-into-run", ["resize", "{run}", "--rank", "1", "--out", "{t}/other"], 2, "run", other_run,
     ["other/adapter_model.safetensors", "other/adapter_config.json"]),
    ("5-merge-into-run", ["merge", "{run}", "--out", "{t}/other"], 2, "", other_run,
     ["other/adapter_model.safetensors", "other/run.toml"]),
    ("1-merge-nonempty", ["merge", "{run}", "--out", "{t}/d"], 2, "--overwrite", plain, ["d/notes.txt"]),
    ("1-merge-into-checkpoints", ["merge", "{run}", "--out", "{t}/d"], 2, "new folder", nonempty,
     ["d/checkpoints/p.txt"]),
    ("1-resize-nonempty", ["resize", "{run}", "--rank", "1", "--out", "{t}/d"], 2, "--overwrite", plain,
     ["d/notes.txt"]),
    # 4: merge refuses an adapter inconsistent with its config, alpha <= 0, non-finite, untrained
    ("4-alpha-zero", ["merge", "{t}/r", "--out", "{t}/m"], 2, "alpha", edit_config(lora_alpha=0), []),
    ("4-alpha-negative", ["merge", "{t}/r", "--out", "{t}/m"], 2, "alpha", edit_config(lora_alpha=-4), []),
    ("4-rank-mismatch", ["merge", "{t}/r", "--out", "{t}/m"], 2, "rank", edit_config(r=3), []),
    ("7-nan-adapter", ["merge", "{t}/r", "--out", "{t}/m"], 2, "finite",
     edit_weights(lambda k, v: v * float("nan")), []),
    ("9-untrained", ["merge", "{t}/r", "--out", "{t}/m"], 2, "untrained",
     edit_weights(lambda k, v: torch.zeros_like(v) if "lora_B" in k else v), []),
    # 6: tracebacks that became one line
    ("6-out-is-file", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--out", "{t}/f.txt"], 2,
     "f.txt", a_file, ["f.txt"]),
    ("6-seed-negative", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--seed", "-1", "--out", "{t}/o"],
     2, "seed must be between 0 and", None, []),
    ("6-seed-huge", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--seed", str(2 ** 70),
                     "--out", "{t}/o"], 2, "seed must be between 0 and", None, []),
    ("6-max-length-over-positions", ["train", "--model", "{gpt2}", "--data", "{data}", "--max-steps", "1",
                                     "--max-length", "2048", "--quiet", "--out", "{t}/o"], 2, "64", None, []),
    # 7: a non-finite learning rate
    ("7-lr-inf", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--lr", "inf", "--out", "{t}/o"], 2,
     "learning rate must be a finite number", None, []),
    ("7-lr-nan", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--lr", "nan", "--out", "{t}/o"], 2,
     "learning rate must be a finite number", None, []),
    # 10: flags silently ignored or replaced
    ("10-resume-lr", ["train", "--resume", "{t}/r", "--lr", "0.1"], 2, "--lr", copy_run, ["r/adapter_model.safetensors"]),
    ("10-resume-rank", ["train", "--resume", "{t}/r", "--rank", "4", "--max-steps", "9"], 2, "--rank", copy_run,
     ["r/adapter_model.safetensors"]),
    ("10-targets-empty", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--targets", "", "--out", "{t}/o"],
     2, "target", None, []),
    ("10-max-steps-0", ["train", "--model", "{base}", "--data", "{data}", "--max-steps", "0", "--out", "{t}/o"], 2,
     "--max-steps", None, []),
    ("10-out-empty", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--out", ""], 2, "--out", None, []),
    ("10-validation-without-data", ["train", "--validation-data", "{t}/nope.jsonl", "--out", "{t}/o"], 2,
     "give --data too", None, []),
    ("10-budget-alpha-0", ["budget", "--model", "{base}", "--alpha", "0"], 2, "alpha", None, []),
    ("10-budget-batch-0", ["budget", "--model", "{base}", "--batch-size", "0"], 2, "--batch-size", None, []),
    ("10-budget-max-length-neg", ["budget", "--model", "{base}", "--max-length", "-1"], 2, "--max-length", None, []),
    ("10-warmup-negative", ["train", "--model", "{base}", "--data", "{data}", *FAST, "--warmup-steps", "-3",
                            "--out", "{t}/o"], 2, "warmup", None, []),
    # 12: a typo'd model name fails at once (tests run with HF_HUB_OFFLINE=1)
    ("12-model-typo", ["train", "--model", "my-model", "--data", "{data}", *FAST, "--out", "{t}/o"], 2,
     "neither a local folder", None, []),
    ("12-merge-model-typo", ["merge", "{run}", "--model", "my-model", "--out", "{t}/m"], 2, "neither a local folder",
     None, []),
    ("12-budget-missing-folder", ["budget", "--model", "./no/such/model"], 2, "does not exist", None, []),
    # 14: columns named by their flag
    ("14-text-column", ["train", "--model", "{base}", "--data", "{t}/x.jsonl", *FAST, "--out", "{t}/o"], 2,
     "--text-column", bad_text_column, []),
    ("14-label-column", ["train", "--model", "{cls_base}", "--data", "{t}/x.jsonl", "--task", "classification",
                         "--text-column", "body", *FAST, "--out", "{t}/o"], 2, "--label-column", bad_text_column, []),
    ("14-missing-column", ["train", "--model", "{base}", "--data", "{data}", "--text-column", "nope", *FAST,
                           "--out", "{t}/o"], 2, "--text-column", None, []),
    # other bad input
    ("resume-not-a-run", ["train", "--resume", "{t}/d"], 2, "not a run folder", nonempty, ["d/checkpoints/p.txt"]),
    ("data-missing", ["train", "--model", "{base}", "--data", "{t}/nope.jsonl", *FAST, "--out", "{t}/o"], 2,
     "does not exist", None, []),
    ("merge-not-a-run", ["merge", "{t}/d", "--out", "{t}/m"], 2, "", nonempty, ["d/checkpoints/p.txt"]),
    ("resize-energy-range", ["resize", "{run}", "--energy", "1.5", "--out", "{t}/s"], 2, "--energy", None, []),
    ("unknown-flag", ["train", "--rnak", "4"], 2, "unrecognized", None, []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, w, tmp_path, capsys):
    _, argv, code, message, prep, survive = case
    if prep:
        prep(w, tmp_path)
    before = {p: (tmp_path / p).read_bytes() for p in survive}
    names = {k: str(v) for k, v in w.items()} | {"t": str(tmp_path)}
    got, out, err = run_cli([a.format(**names) for a in argv], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert got == code, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err + out
    for p, data in before.items():
        assert (tmp_path / p).read_bytes() == data, f"{p} changed"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir()), "a refused run wrote its folder"


# -- what must work: the cases of the issue that end in a finished command ---------------------
def test_2_paths_absolute_merge_from_elsewhere(w, tmp_path, capsys, monkeypatch):
    """Item 2: a run trained with relative paths merges from another directory."""
    monkeypatch.chdir(w["root"])
    assert main(["train", "--model", "base", "--data", str(CAUSAL), *FAST, "--out", "rel/r"]) == 0
    run = w["root"] / "rel" / "r"
    cfg = json.loads((run / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]).is_absolute()
    assert f'"{w["base"]}"' in (run / "run.toml").read_text()
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["merge", str(run), "--out", "m"], capsys)
    assert code == 0 and "verified" in out, err


def test_3_resize_carries_labels_then_merges(w, tmp_path, capsys):
    code, _, err = run_cli(["resize", w["cls_run"], "--energy", "0.9", "--out", tmp_path / "small"], capsys)
    assert code == 0, err
    assert (tmp_path / "small" / "labels.json").read_text() == (w["cls_run"] / "labels.json").read_text()
    code, out, err = run_cli(["merge", tmp_path / "small", "--out", tmp_path / "m"], capsys)
    assert code == 0 and "verified" in out, err


def test_1_overwrite_replaces_own_files_only(w, tmp_path, capsys):
    other_run(w, tmp_path)
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = run_cli(["train", "--model", w["base"], "--data", CAUSAL, *FAST, "--out", tmp_path / "other",
                            "--overwrite"], capsys)
    assert code == 0, err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_6_truncated_trainer_state_falls_back(w, tmp_path, capsys):
    truncated_state(w, tmp_path)
    code, _, err = run_cli(["train", "--resume", tmp_path / "r", "--max-steps", "5"], capsys)
    assert code == 0, err
    assert "step-4" in err and "resumed at step 2" in err


def test_7_nonfinite_loss_stops_exit_2_strict_json(w, tmp_path, capsys):
    """A base whose output is non-finite: the run stops at its first step, exit 2, kind nonfinite,
    metrics.jsonl stays strict JSON and nothing can be merged from it."""
    base = tiny.model_folder(tmp_path / "nan_base", "llama")
    weights = load_file(base / "model.safetensors")
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], float("inf"))
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    code, _, err = run_cli(["train", "--model", base, "--data", CAUSAL, *FAST, "--out", tmp_path / "o"], capsys)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "step 1" in lines[0] and "Traceback" not in err, err
    for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    code, out, err = run_cli(["merge", tmp_path / "o", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "verified" not in out and "error:" in err, err


def test_8_huge_line_truncated_with_count(w, tmp_path, capsys):
    huge_line(w, tmp_path)
    code, _, err = run_cli(["train", "--model", w["base"], "--data", tmp_path / "huge.jsonl", *FAST,
                            "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "truncated" in err


def test_9_resume_without_checkpoint_restarts(w, tmp_path, capsys):
    no_checkpoints(w, tmp_path)
    code, _, err = run_cli(["train", "--resume", tmp_path / "r", "--max-steps", "3"], capsys)
    assert code == 0, err
    assert "done at step 3" in err


def test_14_files_mode_and_budget_classes_and_help(w, capsys):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("adapter_model.safetensors", "adapter_config.json", "run.toml"):
        assert (w["run"] / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    code, out, _ = run_cli(["budget"], capsys)
    assert code == 0 and "75,268" in out  # MiniLM, q,v r=8 and the demo's 4-class head
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and "default 16" in out and "default 256" in out


def test_14_cli_reports_truncated_counts(w, capsys):
    """The data summary names how many examples were cut at --max-length."""
    code, _, err = run_cli(["train", "--model", w["base"], "--data", CAUSAL, *FAST, "--max-length", "20",
                            "--out", w["root"] / "short"], capsys)
    assert code == 0 and "truncated at 20" in err, err


ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_13_ctrl_c_while_loading_stops_without_training(w, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "lora_studio", "train", "--model", str(w["base"]), "--data",
                             str(CAUSAL), *FAST, "--out", str(tmp_path / "o")], env=ENV,
                            stderr=subprocess.PIPE, text=True)
    err = ""
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        err += line
        if "loading" in line or not line:
            break
    proc.send_signal(signal.SIGINT)
    rest, = proc.communicate(timeout=60)[1:]
    err += rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "checkpoints").exists() or not list((tmp_path / "o" / "checkpoints").iterdir())
