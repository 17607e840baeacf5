"""`lora-studio train --demo chat`: its configuration (fast), and the whole demo on the real
SmolLM2-135M-Instruct, short (slow): a chat run with samples, the held-out metric, try through the
template; the end-of-turn token is trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_studio.cli import build_parser, main
from lora_studio.cli_train import config_from_args


def _args(*argv):
    a = build_parser().parse_args(["train", *argv])
    a.argv = ["train", *argv]
    return a


def test_demo_chat_config_uses_the_demo_model_data_and_settings(monkeypatch, tmp_path):
    from lora_studio.engine import demo_chat

    monkeypatch.setattr(demo_chat, "chat_model_path", lambda say=None: str(tmp_path / "smollm2"))
    cfg = config_from_args(_args("--demo", "chat", "--out", str(tmp_path / "run"), "--rank", "4"))
    train, validation = demo_chat.data_paths()
    assert (cfg.model.path, cfg.model.task) == (str(tmp_path / "smollm2"), "causal-lm")
    assert (cfg.data.path, cfg.data.validation_path, cfg.data.format) == (train, validation, "messages")
    assert cfg.lora.rank == 4  # a flag wins over the demo's setting
    assert cfg.lora.targets == ["q", "k", "v", "o"] and cfg.train.max_steps == demo_chat.SETTINGS["train"]["max_steps"]
    plain = config_from_args(_args("--demo", "--out", str(tmp_path / "run2")))
    assert plain.model.path == "" and plain.model.task == "classification"  # --demo alone: the MiniLM demo


def test_demo_chat_refuses_a_model_or_data(capsys, tmp_path):
    assert main(["train", "--demo", "chat", "--data", "x.jsonl", "--out", str(tmp_path / "r")]) == 2
    assert "error: --demo chat brings its own model and data: drop --data" in capsys.readouterr().err


def test_chat_demo_data_is_held_out_and_in_style():
    from lora_studio.engine import demo_chat

    train, validation = demo_chat.data_paths()
    rows = {name: [json.loads(x) for x in Path(p).read_text().splitlines()] for name, p in
            (("train", train), ("validation", validation))}
    assert (len(rows["train"]), len(rows["validation"])) == (320, 80)
    asked = {name: {r["messages"][0]["content"] for r in rs} for name, rs in rows.items()}
    assert not asked["train"] & asked["validation"]
    answers = [r["messages"][1]["content"] for rs in rows.values() for r in rs]
    assert all(demo_chat.in_style(a) for a in answers)
    assert demo_chat.score([("In short: yes.", True), ("Well,\nIn short: no", False)]) == \
        {"style": 0.5, "stopped": 0.5, "n": 2}


@pytest.mark.slow
def test_smollm2_template_trains_the_end_of_turn_token(smollm2_dir):
    from transformers import AutoTokenizer

    from lora_studio.engine.data import _chat_rows
    from lora_studio.engine.generate import stop_ids

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    (ids, mask), = _chat_rows([[{"role": "user", "content": "What is 2 plus 2?"},
                                {"role": "assistant", "content": "In short: 4."}]], tok)
    trained = [tok.convert_ids_to_tokens(i) for i, m in zip(ids, mask) if m]
    assert tok.decode([i for i, m in zip(ids, mask) if m]).startswith("In short: 4.<|im_end|>")
    assert "<|im_end|>" in trained and "user" not in trained  # the answer and its end, nothing of the prompt
    assert stop_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")] == [tok.eos_token_id]


@pytest.mark.slow
def test_chat_demo_end_to_end_short(smollm2_dir, tmp_path, capsys, monkeypatch):
    from lora_studio.engine import demo_chat
    from lora_studio.engine.samples import read_samples

    monkeypatch.setattr(demo_chat, "METRIC_PROMPTS", 2)
    out = tmp_path / "run"
    rc = main(["train", "--demo", "chat", "--out", str(out), "--max-steps", "2", "--batch-size", "4",
               "--eval-every", "2", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "held-out (2 prompts" in captured.out and "stop on their own" in captured.out
    assert json.loads((out / "chat.json").read_text())["stop_tokens"] == ["<|im_end|>"]
    samples = read_samples(out)
    assert [r["step"] for r in samples] == [0] * 4 + [2] * 4
    assert [r["prompt"] for r in samples[:4]] == demo_chat.held_out(4)
    assert main(["try", str(out), "--text", "What is the capital of Peru?", "--base", "--max-new-tokens", "24",
                 "--json"]) == 0
    tried = json.loads(capsys.readouterr().out)
    assert tried["chat"] is True and isinstance(tried["adapted"]["stopped"], bool)
