"""Issue 22: a sweep with relative paths continues when run again (code review 3); messages that
say the real reason (llama.cpp's converter) and figures on one basis (`budget --quantize`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tiny
from lora_studio.cli import main
from clihelp import cli

DATA = Path(__file__).parents[2] / "resources" / "data"
CAUSAL = DATA / "demo_causal.jsonl"


def test_sweep_with_relative_paths_continues_when_run_again(tmp_path, capsys, monkeypatch):
    tiny.model_folder(tmp_path / "base", "llama")
    shutil.copy(CAUSAL, tmp_path / "d.jsonl")
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "--model", "./base", "--data", "d.jsonl", "--ranks", "1,2", "--max-steps", "1", "--batch-size",
            "4", "--max-length", "32", "--eval-every", "0", "--quiet", "--out", "sw"]
    code, _, err = cli(argv, capsys)
    assert code == 0, err
    code, _, err = cli(argv, capsys)  # what "run the same command again to continue" means
    assert code == 0, err
    assert err.count("finished before, reused") == 2
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert Path(doc["base_config"]["model"]["path"]).is_absolute()


FAKE_CONVERTER = '''import sys
print("INFO:hf-to-gguf:Loading model: merged")
print("ERROR:hf-to-gguf:cannot find tokenizer merges in model file", file=sys.stderr)
print("Traceback (most recent call last):", file=sys.stderr)
print('  File "convert_hf_to_gguf.py", line 1, in <module>', file=sys.stderr)
print("KeyError: 'merges'", file=sys.stderr)
sys.exit(1)
'''


def test_converter_failure_names_llama_cpps_own_reason(tmp_path):
    from lora_studio.engine.errors import UserError
    from lora_studio.engine.gguf import convert

    conv = tmp_path / "convert_hf_to_gguf.py"
    conv.write_text(FAKE_CONVERTER)
    (tmp_path / "merged").mkdir()
    with pytest.raises(UserError) as e:
        convert(tmp_path / "merged", tmp_path / "x.gguf", "f16", conv)
    assert "cannot find tokenizer merges in model file" in str(e.value) and "KeyError: 'merges'" in str(e.value)
    assert "\n" not in str(e.value)


def test_budget_with_a_quantized_base_uses_one_precision(tmp_path, capsys):
    base = tiny.model_folder(tmp_path / "base", "llama")
    code, out, err = cli(["budget", "--model", base, "--quantize", "nf4", "--gpu-memory", "8"], capsys)
    assert code == 0, err
    first = next(line for line in out.splitlines() if line.startswith("training memory at"))
    assert first.startswith("training memory at bf16"), out
    code, out, _ = cli(["budget", "--model", base, "--quantize", "nf4", "--precision", "fp32"], capsys)
    assert "training memory at fp32" in out  # asked for: kept
    code, out, _ = cli(["budget", "--model", base], capsys)
    assert "training memory at fp32" in out  # a plain CPU estimate stays fp32


@pytest.mark.parametrize("rows", ["numbers", "names"])
def test_swapped_text_and_label_columns_are_named(tmp_path, capsys, rows):
    base = tiny.model_folder(tmp_path / "bert", "bert")
    if rows == "numbers":  # integer labels read as the text: every row was dropped, "raise --max-length"
        data = [{"text": f"review number {i} was {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(30)]
    else:  # the texts read as class names: one class per row
        data = [{"text": f"a long customer message number {i} about the app", "label": "bug"} for i in range(30)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    code, _, err = cli(["train", "--model", base, "--task", "classification", "--data", tmp_path / "d.jsonl",
                        "--text-column", "label", "--label-column", "text", "--max-steps", "1", "--quiet",
                        "--out", tmp_path / "o"], capsys)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert "--text-column text --label-column label" in lines[0] and "max-length" not in lines[0]
