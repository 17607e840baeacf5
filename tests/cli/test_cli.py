"""The command line contract of DESIGN.md: output, JSON keys, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

import tiny
from lora_studio.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_budget_json_on_packaged_minilm(capsys):
    code, out, err = run(capsys, "budget", "--targets", "q,v", "--rank", "8", "--json")
    assert code == 0
    b = json.loads(out)
    assert {"trainable_params", "total_params", "trainable_percent", "modules"} <= set(b)
    # MiniLM: 6 layers, q and v are 384x384: 6 * 2 * 8 * (384 + 384), plus the demo's 4-class head
    # (384x4 + 4), as training and the GUI count it (75,268)
    assert b["trainable_params"] == 6 * 2 * 8 * 768 + 384 * 4 + 4 == 75_268
    m = b["modules"][0]
    assert {"name", "shape", "rank", "params"} <= set(m) and m["shape"] == [384, 384] and m["params"] == 8 * 768


def test_budget_text_and_layers(capsys, tmp_path):
    folder = tiny.model_folder(tmp_path / "m", "llama")
    code, out, _ = run(capsys, "budget", "--model", str(folder), "--targets", "q,k,v,o", "--rank", "4",
                       "--layers", "1", "--json")
    assert code == 0
    b = json.loads(out)
    assert [m["name"].split(".")[2] for m in b["modules"]] == ["1"] * 4
    code, out, _ = run(capsys, "budget", "--model", str(folder), "--targets", "q", "--rank", "4")
    assert code == 0 and "trainable" in out and "LoRA" in out


@pytest.mark.parametrize("argv,needle", [
    (["budget", "--rank", "0"], "rank must be a positive integer"),
    (["budget", "--rank", "999"], "choose a rank of at most 384"),
    (["budget", "--targets", "q,zz"], "matches no module"),
    (["budget", "--model", "/no/such/folder"], "does not exist"),
    (["budget", "--rank", "notanumber"], "invalid int value"),
    (["merge", "/no/run", "--out", "/tmp/x"], "neither a run folder"),
    (["inspect", "/no/run"], "not a folder"),
    (["train", "--rank", "-1", "--out", "/tmp/never"], "rank must be a positive integer"),
    (["train", "--resume", "/no/run"], "not a run folder"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv) if argv[1:2] != ["--rank"] or argv[2] != "notanumber" else (None, "", "")
    if code is None:  # argparse errors exit through SystemExit
        with pytest.raises(SystemExit) as e:
            main(argv)
        code, err = e.value.code, capsys.readouterr().err
    assert code == 2
    assert needle in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "lora_studio", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("lora-studio ")
