"""Prompt/completion data on a model with a chat template is a chat run: each row is the one-turn
conversation (user = prompt, assistant = completion), with exactly the ids and labels of the
equivalent `messages` row (the answer and its end-of-turn token trained); the run folder records
it, `try` renders through the template (`--raw` does not); the data check shows what is trained.
Without a template, or with `chat_template` off, prompt + completion stays plain text."""

import json
import shutil
from pathlib import Path

import pytest

import tiny
from lora_studio.cli import main
from lora_studio.config import DataConfig, RunConfig
from lora_studio.engine import datacheck
from lora_studio.engine import train as T
from lora_studio.engine.data import IGNORE, prepare
from lora_studio.engine.data_pref import prepare_preference
from lora_studio.engine.models import load_tokenizer
from lora_studio.engine.runfolder import is_chat_run

PAIRS = [(f"what does the fox {i} do", f"it jumps over the lazy dog {i}") for i in range(12)]


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory):
    """A tiny Llama whose chat template closes each turn with </s>."""
    return tiny.llama_gguf_folder(tmp_path_factory.mktemp("chatllama"))


@pytest.fixture(scope="module")
def plain_folder(chat_folder, tmp_path_factory):
    """The same tiny Llama without a chat template (a base model)."""
    folder = tmp_path_factory.mktemp("plainllama") / "model"
    shutil.copytree(chat_folder, folder)
    (folder / "chat_template.jinja").unlink()
    assert not load_tokenizer(str(folder)).chat_template
    return folder


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def pc_file(tmp_path, pairs=PAIRS, sep: str = "") -> str:
    return write_jsonl(tmp_path / "pc.jsonl", [{"prompt": p, "completion": sep + c} for p, c in pairs])


def messages_file(tmp_path, pairs=PAIRS) -> str:
    return write_jsonl(tmp_path / "msgs.jsonl", [{"messages": [{"role": "user", "content": p},
                                                               {"role": "assistant", "content": c}]}
                                                 for p, c in pairs])


def trained(example) -> list[int]:
    return [y for y in example["labels"] if y != IGNORE]


@pytest.mark.parametrize("which", ["tiny", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_rows_are_the_equivalent_messages_rows(tmp_path, chat_folder, which, request):
    folder = chat_folder if which == "tiny" else request.getfixturevalue("smollm2_dir")
    tok = load_tokenizer(str(folder))
    eot = "</s>" if which == "tiny" else "<|im_end|>"  # the template's end of turn
    cfg = dict(validation_split=0.25, max_length=64)
    pc = prepare(DataConfig(path=pc_file(tmp_path), **cfg), tok, "causal-lm")
    msgs = prepare(DataConfig(path=messages_file(tmp_path), **cfg), tok, "causal-lm")
    assert pc.format == "prompt-completion" and pc.chat and msgs.chat
    assert pc.train == msgs.train and pc.validation == msgs.validation  # ids, attention and labels
    assert len(pc.sample_prompts) == 3 and set(pc.sample_prompts) <= {p for p, _ in PAIRS}  # held out, as text
    whole = prepare(DataConfig(path=pc_file(tmp_path), validation_split=0.0, max_length=64), tok, "causal-lm")
    for (p, c), e in zip(PAIRS, whole.train):
        # the whole conversation as the template renders it; the loss on the answer and its end of turn
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                                       tokenize=False)
        assert e["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(trained(e)).strip() == c + eot
        # the last trained token but whitespace (ChatML trains the newline after <|im_end|> too)
        assert [t for t in trained(e) if tok.decode([t]).strip()][-1] == tok.convert_tokens_to_ids(eot)


def test_without_a_template_or_with_it_off_prompt_completion_stays_text(tmp_path, chat_folder, plain_folder):
    path = pc_file(tmp_path, sep=" ")
    for folder, cfg in ((plain_folder, DataConfig(path=path, validation_split=0.0)),
                        (chat_folder, DataConfig(path=path, validation_split=0.0, chat_template=False))):
        tok = load_tokenizer(str(folder))
        got = prepare(cfg, tok, "causal-lm")
        assert not got.chat
        for (p, c), e in zip(PAIRS, got.train):  # prompt + " " + completion as one text, eos appended
            ids = tok(p + " " + c)["input_ids"] + [tok.eos_token_id]
            n_prompt = len(tok(p)["input_ids"])
            assert ids[:n_prompt] == tok(p)["input_ids"]
            assert e["input_ids"] == ids and e["labels"] == [IGNORE] * n_prompt + ids[n_prompt:]


def test_preference_strings_are_the_equivalent_message_lists(tmp_path, chat_folder):
    tok = load_tokenizer(str(chat_folder))
    rows = [{"prompt": p, "chosen": c, "rejected": "no idea"} for p, c in PAIRS]
    as_lists = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                 "chosen": [{"role": "assistant", "content": r["chosen"]}],
                 "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    strings = prepare_preference(DataConfig(path=write_jsonl(tmp_path / "s.jsonl", rows), validation_split=0.0), tok)
    lists = prepare_preference(DataConfig(path=write_jsonl(tmp_path / "l.jsonl", as_lists), validation_split=0.0), tok)
    assert strings.format == "preference-chat" and strings.chat
    assert strings.train == lists.train
    assert tok.decode(trained(strings.train[0]["rejected"])).strip() == "no idea</s>"
    off = prepare_preference(DataConfig(path=write_jsonl(tmp_path / "s.jsonl", rows), validation_split=0.0,
                                        chat_template=False), tok)
    assert off.format == "preference" and not off.chat
    assert off.train[0]["input_ids"] == tok(PAIRS[0][0] + PAIRS[0][1])["input_ids"] + [tok.eos_token_id]


def test_data_check_shows_the_tokens_training_trains(tmp_path, chat_folder, capsys):
    tok = load_tokenizer(str(chat_folder))
    path = pc_file(tmp_path)
    c = datacheck.check(path, tok, DataConfig(max_length=64))
    assert c.format == "prompt-completion" and c.chat
    examples = prepare(DataConfig(path=messages_file(tmp_path), validation_split=0.0, max_length=64), tok,
                       "causal-lm").train
    assert [r.ids for r in c.detail] == [e["input_ids"] for e in examples]
    assert [[y != IGNORE for y in e["labels"]] for e in examples] == [r.trained for r in c.detail]
    assert c.warnings == []  # the end of turn is trained
    assert main(["data", path, "--model", str(chat_folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chat"] and report["trained_per_row"] == [r.trained_tokens for r in c.detail]
    assert main(["data", path, "--model", str(chat_folder), "--json", "--no-chat-template"]) == 0
    plain = json.loads(capsys.readouterr().out)
    as_text = prepare(DataConfig(path=path, validation_split=0.0, chat_template=False), tok, "causal-lm").train
    assert not plain["chat"] and plain["trained_per_row"] == [len(trained(e)) for e in as_text]
    assert plain["trained_per_row"] != report["trained_per_row"]


def _run(tmp_path, folder, name: str, **data) -> RunConfig:
    return RunConfig().replace(model={"path": str(folder), "task": "causal-lm"},
                               lora={"targets": ["q", "v"], "rank": 4, "alpha": 8},
                               data={"path": pc_file(tmp_path), "validation_split": 0.25, "max_length": 64, **data},
                               train={"max_steps": 2, "batch_size": 4, "lr": 1e-2, "eval_every": 2, "save_every": 1,
                                      "save_minutes": 0, "seed": 3, "warmup_ratio": 0.0},
                               out=str(tmp_path / name))


def _try_renders(capsys, monkeypatch, run, *flags) -> tuple[dict, list]:
    """`lora-studio try RUN … --json` and the token ids each answer (adapted, base) started from."""
    from lora_studio.engine import generate

    seen, real = [], generate.render
    monkeypatch.setattr(generate, "render", lambda tok, p, chat: seen.append(real(tok, p, chat)) or seen[-1])
    assert main(["try", str(run), "--text", "what does the fox do", "--max-new-tokens", "3", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out), seen


def test_a_prompt_completion_run_is_a_chat_run_and_try_uses_the_template(tmp_path, chat_folder, plain_folder,
                                                                          capsys, monkeypatch):
    tok = load_tokenizer(str(chat_folder))
    in_chat = tok(tok.apply_chat_template([{"role": "user", "content": "what does the fox do"}], tokenize=False,
                                          add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    as_text = tok("what does the fox do")["input_ids"]
    cfg = _run(tmp_path, chat_folder, "chat")
    assert isinstance(T.train(cfg), T.Finished)
    assert is_chat_run(cfg.out)
    assert json.loads((Path(cfg.out) / "chat.json").read_text())["stop_tokens"] == ["</s>"]
    samples = [json.loads(line) for line in (Path(cfg.out) / "samples.jsonl").read_text().splitlines()]
    assert {s["prompt"] for s in samples} <= {p for p, _ in PAIRS} and samples
    out, seen = _try_renders(capsys, monkeypatch, cfg.out)
    assert out["chat"] and seen == [in_chat] * 2
    out, seen = _try_renders(capsys, monkeypatch, cfg.out, "--raw")
    assert not out["chat"] and seen == [as_text] * 2
    for name, folder, data in (("plain", plain_folder, {}), ("off", chat_folder, {"chat_template": False})):
        cfg = _run(tmp_path, folder, name, **data)
        assert isinstance(T.train(cfg), T.Finished)
        assert not is_chat_run(cfg.out)
        out, seen = _try_renders(capsys, monkeypatch, cfg.out)
        assert not out["chat"] and seen == [as_text] * 2


def test_no_chat_template_flag_and_a_run_from_before_keeps_plain_text(tmp_path, chat_folder, capsys):
    out = tmp_path / "flag"
    assert main(["train", "--model", str(chat_folder), "--task", "causal-lm", "--data", pc_file(tmp_path),
                 "--max-steps", "1", "--batch-size", "4", "--targets", "q,v", "--rank", "2", "--quiet",
                 "--no-chat-template", "--out", str(out)]) == 0
    assert RunConfig.load(out / "run.toml").data.chat_template is False and not is_chat_run(out)
    assert main(["train", "--resume", str(out), "--no-chat-template"]) == 2
    assert "--no-chat-template" in capsys.readouterr().err
    # a run trained as plain text before prompt/completion went through the template (no
    # chat_template key in its run.toml, no chat.json) resumes as plain text
    cfg = _run(tmp_path, chat_folder, "old", chat_template=False)
    control = T.Control()
    T.train(cfg, lambda e: control.stop() if isinstance(e, T.Step) and e.step == 1 else None, control)
    run_toml = Path(cfg.out) / "run.toml"
    run_toml.write_text("\n".join(ln for ln in run_toml.read_text().splitlines() if "chat_template" not in ln))
    assert RunConfig.load(run_toml).data.chat_template is True
    assert isinstance(T.train(RunConfig.load(run_toml), resume=cfg.out), T.Finished)
    assert not is_chat_run(cfg.out) and RunConfig.load(run_toml).data.chat_template is False
