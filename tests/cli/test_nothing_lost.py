"""Issue 22, the CLI's data loss: `--overwrite` removes only what a run or an export wrote; a model
card of ours is known by its marker line, never by mentioning lora-studio; exports are refused
only inside real run folders (code review 2); `--out .` works."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import tiny
from lora_studio.cli import main
from lora_studio.engine.runfolder import CARD_MARKER, is_our_card
from clihelp import cli, one_error

DATA = Path(__file__).parents[2] / "resources" / "data"
CAUSAL = DATA / "demo_causal.jsonl"
FAST = ["--max-steps", "2", "--batch-size", "4", "--max-length", "32", "--eval-every", "0", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lost")
    base = tiny.model_folder(root / "base", "llama")
    assert main(["train", "--model", str(base), "--data", str(CAUSAL), *FAST, "--out", str(root / "run")]) == 0
    return root / "run"


def test_train_overwrite_onto_a_folder_that_is_not_a_run_deletes_nothing(run, tmp_path, capsys):
    user = tmp_path / "u"
    (user / "checkpoints").mkdir(parents=True)
    (user / "README.md").write_text("mine")
    (user / "checkpoints" / "mine.txt").write_text("mine")
    base = run.parent / "base"
    code, _, err = cli(["train", "--model", base, "--data", CAUSAL, *FAST, "--out", user, "--overwrite"], capsys)
    assert code == 2 and "not a run folder" in one_error(err)
    assert (user / "README.md").read_text() == "mine"
    assert (user / "checkpoints" / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in user.iterdir()) == ["README.md", "checkpoints"]


def test_train_overwrite_of_a_run_keeps_the_users_files_and_drops_memory_json(run, tmp_path, capsys):
    import shutil

    r = tmp_path / "r"
    shutil.copytree(run, r)
    assert (r / "memory.json").is_file()
    (r / "README.md").write_text("my notes on this run, trained with lora-studio")
    (r / "checkpoints" / "mine.txt").write_text("mine")
    (r / "memory.json").write_text('{"stale": true}')
    code, _, err = cli(["train", "--model", run.parent / "base", "--data", CAUSAL, "--max-steps", "1",
                        "--batch-size", "4", "--max-length", "32", "--eval-every", "0", "--quiet", "--out", r,
                        "--overwrite"], capsys)
    assert code == 0, err
    assert (r / "README.md").read_text().startswith("my notes")
    assert (r / "checkpoints" / "mine.txt").read_text() == "mine"
    assert "stale" not in (r / "memory.json").read_text()  # the new run's, not the old one's
    assert not (r / "checkpoints" / "step-2").exists()


def test_gguf_adapter_only_keeps_a_readme_that_mentions_lora_studio(run, tmp_path, capsys):
    pytest.importorskip("gguf")
    readme = "# My project\n\nTrain with lora-studio, then `lora-studio gguf runs/x --out x.gguf --adapter-only`.\n"
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "Modelfile").write_text("FROM mine\n")
    code, out, err = cli(["gguf", run, "--out", tmp_path / "a.gguf", "--adapter-only"], capsys)
    assert code == 0, err
    assert (tmp_path / "README.md").read_text() == readme
    assert (tmp_path / "Modelfile").read_text() == "FROM mine\n"
    assert is_our_card(tmp_path / "a.README.md") and is_our_card(tmp_path / "a.Modelfile")
    # --overwrite too replaces only what we wrote; a card of ours beside the file is replaced
    code, _, err = cli(["gguf", run, "--out", tmp_path / "a.gguf", "--adapter-only", "--overwrite"], capsys)
    assert code == 0, err
    assert (tmp_path / "README.md").read_text() == readme
    other = tmp_path / "o"
    other.mkdir()
    assert cli(["gguf", run, "--out", other / "a.gguf", "--adapter-only"], capsys)[0] == 0
    card = (other / "README.md").read_text()
    assert CARD_MARKER in card.splitlines()
    (other / "README.md").write_text(card.replace("## Loss", "## Loss (old)"))
    assert cli(["gguf", run, "--out", other / "b.gguf", "--adapter-only"], capsys)[0] == 0
    assert "(old)" not in (other / "README.md").read_text() and not (other / "b.README.md").exists()


@pytest.mark.parametrize("adapter_only", [True, False], ids=["adapter-only", "merged"])
def test_merge_overwrite_replaces_only_the_earlier_export(run, tmp_path, capsys, adapter_only):
    flag = ["--adapter-only"] if adapter_only else []
    user = tmp_path / "u"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    code, _, err = cli(["merge", run, "--out", user, "--overwrite", *flag], capsys)
    assert code == 2 and "nothing was deleted" in one_error(err)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    out = tmp_path / "m"
    assert cli(["merge", run, "--out", out, *flag], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")  # the user adds a file beside the export
    (out / "adapter_config.json" if adapter_only else out / "config.json").write_text("{}")  # and spoils ours
    code, _, err = cli(["merge", run, "--out", out, "--overwrite", *flag], capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    spoiled = out / ("adapter_config.json" if adapter_only else "config.json")
    assert json.loads(spoiled.read_text()) != {}
    assert not [p for p in out.iterdir() if "partial" in p.name]


def test_merge_to_the_current_folder(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["merge", run, "--out", ".", "--adapter-only"], capsys)
    assert code == 0, err
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_exports_allowed_under_a_users_checkpoints_folder(run, tmp_path, capsys):
    """Code review 2: a folder holding a `checkpoints/` subfolder is not a run folder."""
    (tmp_path / "checkpoints").mkdir()
    code, _, err = cli(["merge", run, "--out", tmp_path / "exports" / "m", "--adapter-only"], capsys)
    assert code == 0, err
    code, _, err = cli(["resize", run, "--rank", "1", "--out", tmp_path / "exports" / "s"], capsys)
    assert code == 0, err
    # a real run folder stays protected
    code, _, err = cli(["merge", run, "--out", run / "sub", "--adapter-only"], capsys)
    assert code == 2 and "inside the run folder" in one_error(err)


def test_resize_overwrite_replaces_its_own_export_only(run, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(["resize", run, "--rank", "1", "--out", out], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(["resize", run, "--rank", "2", "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    os.remove(out / "lora_studio_export.json")  # not an export any more: refused
    code, _, err = cli(["resize", run, "--rank", "1", "--out", out, "--overwrite"], capsys)
    assert code == 2 and "nothing was deleted" in one_error(err)
