"""`lora-studio train` end to end: the demo, a causal LM on the demo prompt/completion data,
Ctrl-C = stop and save, then merge and budget on the result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import peft
import torch
import transformers as T

import tiny
from lora_studio.engine.train import read_metrics

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "lora_studio", *args], capture_output=True, text=True, env=ENV, **kw)


@pytest.mark.slow
def test_demo_defaults_train_then_merge(tmp_path):
    run = tmp_path / "demo"
    out = cli("train", "--max-steps", "4", "--eval-every", "2", "--batch-size", "8", "--out", str(run), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "eval at step 0" in out.stderr and "done at step 4" in out.stderr
    cfg = json.loads((run / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and cfg["r"] == 8 and sorted(cfg["target_modules"])[0].endswith("query")
    assert json.loads((run / "labels.json").read_text()) == ["account", "billing", "shipping", "technical"]
    merged = cli("merge", str(run), "--out", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    assert "verified" in merged.stdout
    m = T.AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert m.config.id2label[1] == "billing"


@pytest.mark.slow
def test_causal_lm_on_demo_prompt_completion_loads_in_peft(tmp_path):
    base = tiny.model_folder(tmp_path / "base", "gpt2")
    data = Path(__file__).parents[2] / "resources" / "data" / "demo_causal.jsonl"
    run = tmp_path / "run"
    out = cli("train", "--model", str(base), "--data", str(data), "--targets", "q,v", "--rank", "2",
              "--max-steps", "3", "--batch-size", "4", "--max-length", "48", "--out", str(run), "--quiet")
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    model = peft.PeftModel.from_pretrained(T.AutoModelForCausalLM.from_pretrained(base), run)
    ids = torch.tensor([[101, 2000, 2001, 102]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


@pytest.mark.slow
def test_ctrl_c_stops_saves_and_resumes(tmp_path):
    base = tiny.model_folder(tmp_path / "base", "llama")
    data = Path(__file__).parents[2] / "resources" / "data" / "demo_causal.jsonl"
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lora_studio", "train", "--model", str(base), "--data", str(data),
                             "--max-steps", "100000", "--batch-size", "2", "--max-length", "32", "--eval-every", "0",
                             "--out", str(run), "--quiet"], env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any("loss" in m for m in read_metrics(run)):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # stopped by the user: resumable, not finished
    assert "stopped" in err and "--resume" in err
    ckpts = list((run / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1
    stopped_at = int(ckpts[0].name.split("-")[1])
    assert max(m["step"] for m in read_metrics(run) if "loss" in m) == stopped_at
