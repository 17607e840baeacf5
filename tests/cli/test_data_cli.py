"""`lora-studio data`: the report, --show marks, --json keys, a run folder as --model, the errors,
and a hub id fetched (tokenizer only) from a local Hub server with progress on stderr."""

import json
import os
import subprocess
import sys

import pytest

import tiny
from lora_studio.cli import main
from lora_studio.config import RunConfig

ROWS = [{"prompt": f"the quick brown fox {i}", "completion": " jumps over the lazy dog" * (1 + 3 * (i == 2))}
        for i in range(4)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny.llama_gguf_folder(tmp_path_factory.mktemp("llama")))


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_and_show(capsys, model, data_file):
    code, out, err = run(capsys, "data", data_file, "--model", model, "--show", "2")
    assert code == 0, err
    assert "format prompt-completion" in out and "4 rows, 4 trained" in out and "no warnings" in out
    assert "tokens per row: min " in out and "trained tokens per row:" in out
    assert out.count("--- row ") == 2 and "[[" in out and "</s>]]" in out  # the answer and its eos are trained


def test_json_and_truncation(capsys, model, data_file):
    # through the tiny Llama's chat template: the prompt turn takes 22 tokens, rows 27 (row 3: 36)
    code, out, err = run(capsys, "data", data_file, "--model", model, "--max-length", "30", "--json", "--show", "1")
    assert code == 0, err
    report = json.loads(out)
    assert {"format", "rows", "warnings", "tokens", "trained_tokens"} <= set(report)
    assert report["format"] == "prompt-completion" and report["rows"] == 4
    (w,) = report["warnings"]
    assert w["code"] == "answer_truncated" and w["rows"] == [3] and "30" in w["message"]
    shown = report["shown"][0]
    assert shown["row"] == 1 and any(t["trained"] for t in shown["tokens"]) and not shown["tokens"][0]["trained"]


def test_run_folder_gives_model_and_max_length(capsys, model, data_file, tmp_path):
    cfg = RunConfig()
    cfg.model.path, cfg.model.task, cfg.data.max_length = model, "causal-lm", 30
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run" / "run.toml")
    code, out, err = run(capsys, "data", data_file, "--model", str(tmp_path / "run"), "--json")
    assert code == 0, err
    assert [w["code"] for w in json.loads(out)["warnings"]] == ["answer_truncated"]


def test_errors(capsys, model, data_file, tmp_path):
    code, _, err = run(capsys, "data", str(tmp_path / "missing.jsonl"), "--model", model)
    assert code == 2 and err.startswith("error: data file") and err.count("\n") == 1
    code, _, err = run(capsys, "data", data_file, "--model", model, "--show", "-1")
    assert code == 2 and "--show" in err


@pytest.mark.slow
def test_default_model_is_the_chat_demos(capsys, smollm2_dir):
    """No --model: SmolLM2's tokenizer (the chat demo's); its chat data trains each answer and <|im_end|>."""
    from lora_studio.engine.demo_chat import data_paths

    code, out, err = run(capsys, "data", data_paths()[1], "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == smollm2_dir and report["format"] == "messages" and report["rows"] == 80
    assert "<|im_end|>" in report["end_tokens"] and report["warnings"] == []


@pytest.mark.slow
def test_hub_id_downloads_the_tokenizer_with_progress(model, data_file, tmp_path):
    from hubserver import HubServer

    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    from pathlib import Path

    with HubServer({"tiny-org/tiny-llama": Path(model)}) as server:
        env["HF_ENDPOINT"] = server.url
        out = subprocess.run([sys.executable, "-m", "lora_studio", "data", data_file, "--model", "tiny-org/tiny-llama"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "downloading tiny-org/tiny-llama:" in out.stderr and "is in the Hugging Face cache" in out.stderr
        assert "format prompt-completion" in out.stdout and "no warnings" in out.stdout
        assert not any("safetensors" in path for _, path, _ in server.requests)  # the tokenizer, not the weights
        unknown = subprocess.run([sys.executable, "-m", "lora_studio", "data", data_file, "--model", "tiny-org/nope"],
                                 capture_output=True, text=True, env=env, timeout=300)
    assert unknown.returncode == 2 and "no model of that name" in unknown.stderr
