"""`train --model HUB_ID` for a model that is not cached: it downloads with progress on stderr,
Ctrl-C stops the download keeping the partial file (exit 130), and the next run continues it with
a Range request and trains. A local Hub server (tests/hubserver.py) answers through HF_ENDPOINT."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import tiny
from hubserver import HubServer

REPO = "tiny-org/tiny-llama"


@pytest.mark.slow
def test_train_downloads_ctrl_c_keeps_the_part_and_the_rerun_continues(tmp_path):
    model_dir = tiny.llama_gguf_folder(tmp_path / "served")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"the fox {i}", "completion": " jumps"}) + "\n" for i in range(8)))
    cache = tmp_path / "hf" / "hub"
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": os.pathsep.join(sys.path)}
    for key in ("HF_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    argv = [sys.executable, "-m", "lora_studio", "train", "--model", REPO, "--data", str(data), "--max-steps", "1",
            "--batch-size", "4", "--max-length", "32", "--device", "cpu", "--out", str(tmp_path / "run")]
    with HubServer({REPO: model_dir}, throttle=0.5) as server:  # ~8 s for the weights: time to press Ctrl-C
        env["HF_ENDPOINT"] = server.url
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while not any(f.stat().st_size > 0 for f in cache.rglob("*.part")) and p.poll() is None:
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 130, err
        assert "stopped: what was fetched is kept" in err and "downloading tiny-org/tiny-llama" in err
        (part,) = list(cache.rglob("*.part"))
        kept = part.stat().st_size
        assert 0 < kept < (model_dir / "model.safetensors").stat().st_size

        server.throttle = 0.0
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    ranges = [rng for method, path, rng in server.requests if method == "GET" and path.endswith("model.safetensors")]
    assert ranges[-1] == f"bytes={kept}-" and "is in the Hugging Face cache" in done.stderr
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file() and not list(cache.rglob("*.part"))
