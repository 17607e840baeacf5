"""Data: every file type, every format end to end with the MiniLM tokenizer, exact loss masks,
label mapping, splits, the errors a user meets, and padding."""

import json
from pathlib import Path

import datasets
import pytest
import torch

from lora_studio.config import DataConfig
from lora_studio.engine import UserError
from lora_studio.engine.data import (IGNORE, collate, demo_path, detect_format, load_table, prepare,
                                     preview)
from lora_studio.engine.models import demo_model_path, load_tokenizer

CHAT = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
ROWS = [{"text": f"message number {i} about {'shipping' if i % 2 else 'billing'}",
         "label": "shipping" if i % 2 else "billing"} for i in range(50)]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(demo_model_path())


@pytest.fixture(scope="module")
def chat_tok():
    t = load_tokenizer(demo_model_path())
    t.chat_template = CHAT
    return t


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# -- files -----------------------------------------------------------------------------------
def test_every_file_type_reads_the_same_rows(tmp_path):
    rows = ROWS[:6]
    ds = datasets.Dataset.from_list(rows)
    files = {
        "a.jsonl": write_jsonl(tmp_path / "a.jsonl", rows),
        "a.json": str(tmp_path / "a.json"),
        "a.csv": str(tmp_path / "a.csv"),
        "a.parquet": str(tmp_path / "a.parquet"),
        "saved": str(tmp_path / "saved"),
        "saved_dict": str(tmp_path / "saved_dict"),
    }
    (tmp_path / "a.json").write_text(json.dumps(rows))
    ds.to_csv(files["a.csv"], index=False)
    ds.to_parquet(files["a.parquet"])
    ds.save_to_disk(files["saved"])
    datasets.DatasetDict(train=ds, validation=ds.select([0])).save_to_disk(files["saved_dict"])
    for name, path in files.items():
        table = load_table(path)
        assert table.column_names == ["text", "label"], name
        assert table[:] == ds[:], name
    assert len(load_table(files["saved_dict"], "validation")) == 1


def test_json_variants_and_txt(tmp_path):
    (tmp_path / "cols.json").write_text(json.dumps({"text": ["a", "b"], "label": ["x", "y"]}))
    (tmp_path / "field.json").write_text(json.dumps({"data": [{"text": "a"}, {"text": "b"}]}))
    (tmp_path / "lines.json").write_text('{"text": "a"}\n{"text": "b"}\n')  # what Dataset.to_json writes
    for name in ("cols.json", "field.json", "lines.json"):
        assert load_table(str(tmp_path / name))["text"][:] == ["a", "b"], name
    (tmp_path / "t.txt").write_text("\ufefffirst line\n\n  \nsecond line\n", encoding="utf-8")  # with a BOM
    table = load_table(str(tmp_path / "t.txt"))
    assert table.column_names == ["text"]
    assert table["text"][:] == ["first line", "second line"]


@pytest.mark.parametrize("name, content, expected", [
    ("empty.jsonl", b"", "empty"),
    ("blank.csv", b"  \n\n", "empty"),
    ("header.csv", b"text,label\n", "no rows"),
    ("data.xlsx", b"x", "unsupported file type .xlsx"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": "b"\n{"text": "c"}\n', "not valid JSON at line 2, column 13: expecting ',' delimiter$"),
    ("tab.jsonl", b'{"text": "a\tb"}\n', r"not valid JSON at line 1, column 12: a raw tab inside a string; write it as \\t$"),
    ("cut.jsonl", b'{"text": "a"}\n{"text": "a\n b"}\n', r"line 2, column 10: a string not closed on its line; write a line break inside a string as \\n$"),
    ("two.json", b'{"text": "a"}\n{"text": "a"} {"text": "b"}\n', "line 2, column 15: more than one JSON value on the line; write one object per line$"),
    ("list.jsonl", b'{"text": "a"}\n\n[1, 2]\n', "line 3 is not a JSON object"),
    ("bad.json", b'[{"text": "a"},\n {"text": }]', "not valid JSON at line 2, column 11: expecting value$"),
    ("nul.json", b'[{"text": "a\x01"}]', r"not valid JSON at line 1, column 13: a raw control character U\+0001 inside a string; write it as \\u0001$"),
    ("latin1.csv", "text,label\nok,x\ncaf\u00e9,y\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 at line 3"),
    ("latin1.txt", "fine\ncaf\u00e9\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 at line 2"),
])
def test_bad_files_are_user_errors_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match=expected) as e:
        load_table(str(path))
    assert name in str(e.value)
    assert "\n" not in str(e.value)


def test_mixed_types_in_a_column_are_read(tmp_path):
    # datasets' own reader fails on this one (a blank line + mixed types); the fallback reads it
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": 2}\n')
    assert load_table(str(path))["label"][:] == ["x", 2]


def test_missing_file_and_missing_split(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_table(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="does not exist"):
        load_table("./data/nope")
    with pytest.raises(UserError, match="from the Hugging Face hub"):  # offline in tests (conftest)
        load_table("someone/no-such-dataset")
    ds = datasets.Dataset.from_list(ROWS[:2])
    datasets.DatasetDict(test=ds, other=ds).save_to_disk(tmp_path / "dd")
    with pytest.raises(UserError, match="no 'train' split .*test, other"):
        load_table(str(tmp_path / "dd"))


def test_utf8_check_spans_read_blocks(tmp_path):
    from lora_studio.engine.data import _check_utf8

    path = tmp_path / "big.txt"
    # bytes 9-10: a valid 2-byte character that a 10-byte block cuts in half; byte 17: a bad one
    path.write_bytes(b"a" * 9 + "\u00e9".encode() + b"\nxx\n" + b"ok\xff\n")
    for chunk in (1 << 20, 10, 3):
        with pytest.raises(UserError, match=r"byte 0xff at line 3 \(byte 17\)"):
            _check_utf8(path, chunk=chunk)
    path.write_bytes(b"a" * 9 + "\u00e9".encode() + b"\nxx\n")
    _check_utf8(path, chunk=10)


# -- formats ---------------------------------------------------------------------------------
def test_detect_format_by_columns_and_overrides():
    assert detect_format(["text"], "causal-lm") == ("text", {"text": "text"})
    assert detect_format(["Prompt", "completion", "text"], "causal-lm") == \
        ("prompt-completion", {"prompt": "Prompt", "completion": "completion"})
    assert detect_format(["messages", "text"], "causal-lm")[0] == "messages"
    assert detect_format(["instruction", "output"], "causal-lm")[1] == {"prompt": "instruction", "completion": "output"}
    assert detect_format(["sentence", "label", "idx"], "classification") == \
        ("classification", {"text": "sentence", "label": "label"})
    assert detect_format(["body", "intent"], "classification")[1] == {"text": "body", "label": "intent"}
    # an override picks the format it belongs to, and the column it names
    assert detect_format(["messages", "body"], "causal-lm", DataConfig(text_column="body")) == \
        ("text", {"text": "body"})
    assert detect_format(["a", "b"], "classification", DataConfig(text_column="a", label_column="b"))[1] == \
        {"text": "a", "label": "b"}
    with pytest.raises(UserError, match="text column 'body' \(--text-column\) is not in the data .*columns: text"):
        detect_format(["text"], "causal-lm", DataConfig(text_column="body"))
    with pytest.raises(UserError, match="for causal-lm"):
        detect_format(["text", "label"], "classification", DataConfig(format="text"))


@pytest.mark.parametrize("task, columns", [("causal-lm", ["question_id", "body"]),
                                           ("classification", ["body", "notes", "score"])])
def test_no_usable_column_lists_columns_and_expected(tmp_path, tok, task, columns):
    with pytest.raises(UserError) as e:
        detect_format(columns, task)
    msg = str(e.value)
    assert all(c in msg for c in columns)
    expected = ["`text`", "`prompt` + `completion`", "`messages`"] if task == "causal-lm" else ["`text` + `label`"]
    assert all(x in msg for x in expected)
    path = write_jsonl(tmp_path / "d.jsonl", [dict.fromkeys(columns, "x")] * 3)
    with pytest.raises(UserError, match="d.jsonl: no usable columns"):
        prepare(DataConfig(path=path), tok, task)


def test_preview(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "hi"}], "n": 1}] * 30)
    p = preview(path, n=5)
    assert (p.columns, p.num_rows, len(p.rows), p.format, p.problem) == (["messages", "n"], 30, 5, "messages", "")
    assert p.rows[0] == {"messages": '[{"role": "user", "content": "hi"}]', "n": "1"}
    p = preview(write_jsonl(tmp_path / "c.jsonl", ROWS[:3]))
    assert (p.format, p.roles) == ("classification", {"text": "text", "label": "label"})
    p = preview(write_jsonl(tmp_path / "x.jsonl", [{"foo": "a" * 1000}]))
    assert p.format == "" and "no usable columns" in p.problem and len(p.rows[0]["foo"]) == 300


# -- causal formats: exact loss masks --------------------------------------------------------
def test_text_format_learns_every_token(tmp_path, tok):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "the cat sat on the mat"}, {"text": ""}, {"text": "hello"}])
    p = prepare(DataConfig(path=path, validation_split=0), tok, "causal-lm")
    assert (p.format, len(p.train), p.validation, p.label_names) == ("text", 2, [], [])
    ex = p.train[0]
    assert ex["input_ids"] == tok("the cat sat on the mat")["input_ids"]  # [CLS] … [SEP]; no eos token to add
    assert ex["labels"] == ex["input_ids"] and ex["attention_mask"] == [1] * len(ex["input_ids"])
    assert p.stats["train"].empty == 1 and p.stats["train"].examples == 2


def test_eos_is_appended_once(tmp_path):
    t = load_tokenizer(demo_model_path())
    t.eos_token = "[unused1]"
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "two plus two is", "completion": " four"}])
    ex = prepare(DataConfig(path=path, validation_split=0), t, "causal-lm").train[0]
    assert ex["input_ids"][-1] == t.eos_token_id and ex["input_ids"].count(t.eos_token_id) == 1
    assert ex["labels"][-1] == t.eos_token_id


def test_prompt_completion_masks_exactly_the_prompt(tmp_path, tok):
    rows = [{"prompt": "Question: What is the capital of France?\nAnswer:", "completion": " Paris."},
            {"prompt": "Convert 3 km to m.", "completion": " 3000 meters"}]
    p = prepare(DataConfig(path=write_jsonl(tmp_path / "pc.jsonl", rows), validation_split=0), tok, "causal-lm")
    assert p.format == "prompt-completion"
    for ex, row in zip(p.train, rows):
        prompt = [tok.cls_token_id] + ids(tok, row["prompt"])
        completion = ids(tok, row["completion"]) + [tok.sep_token_id]
        assert ex["input_ids"] == prompt + completion
        assert ex["labels"] == [IGNORE] * len(prompt) + completion


def test_truncation_and_too_long_prompts_are_counted(tmp_path, tok):
    rows = [{"prompt": "short prompt", "completion": " " + "word " * 20},  # truncated completion
            {"prompt": "word " * 30, "completion": " lost"},  # prompt alone over max_length
            {"prompt": "ok", "completion": " fine"},
            {"prompt": "nothing to learn", "completion": ""}]
    p = prepare(DataConfig(path=write_jsonl(tmp_path / "pc.jsonl", rows), validation_split=0, max_length=10),
                tok, "causal-lm")
    s = p.stats["train"]
    assert (s.examples, s.truncated, s.too_long_prompts, s.empty, s.dropped) == (2, 1, 1, 1, 2)
    assert len(p.train) == 2 and all(len(ex["input_ids"]) <= 10 for ex in p.train)
    cut = p.train[0]
    n_prompt = 1 + len(ids(tok, "short prompt"))
    assert cut["labels"][:n_prompt] == [IGNORE] * n_prompt and cut["labels"][n_prompt:] == cut["input_ids"][n_prompt:]
    assert s.max_tokens == 1 + 2 + 20 + 1  # lengths before truncation
    assert "1 dropped (prompt alone >= 10 tokens)" in s.summary()


def test_messages_loss_only_on_assistant_turns(tmp_path, chat_tok):
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of peru?"},
            {"role": "assistant", "content": "lima"}, {"role": "user", "content": "and chile?"},
            {"role": "assistant", "content": "santiago, of course"}]
    sharegpt = [{"from": "human", "value": "hi there"}, {"from": "gpt", "value": "hello"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conv}, {"messages": [conv[1]]}])
    p = prepare(DataConfig(path=path, validation_split=0), chat_tok, "causal-lm")
    assert p.format == "messages" and p.stats["train"].empty == 1  # no assistant turn: nothing to learn
    # expected, built piece by piece: the header of each turn, then its content and "</s>"
    expect_ids, expect_labels = [], []
    for m in conv:
        head, body = ids(chat_tok, f"<|{m['role']}|>\n"), ids(chat_tok, f"{m['content']}</s>\n")
        expect_ids += head + body
        expect_labels += [IGNORE] * len(head) + (body if m["role"] == "assistant" else [IGNORE] * len(body))
    assert p.train[0]["input_ids"] == expect_ids
    assert p.train[0]["labels"] == expect_labels
    learned = [t for t in p.train[0]["labels"] if t != IGNORE]
    assert chat_tok.decode(learned) == "lima < / s > santiago, of course < / s >"

    p = prepare(DataConfig(path=write_jsonl(tmp_path / "sg.jsonl", [{"conversations": sharegpt}]),
                           validation_split=0), chat_tok, "causal-lm")
    learned = [t for t in p.train[0]["labels"] if t != IGNORE]
    assert chat_tok.decode(learned) == "hello < / s >"


def test_messages_edge_cases(tmp_path, chat_tok):
    first = [{"role": "assistant", "content": "welcome"}, {"role": "user", "content": "thanks"}]
    path = write_jsonl(tmp_path / "a.jsonl", [{"messages": first}])
    ex = prepare(DataConfig(path=path, validation_split=0), chat_tok, "causal-lm").train[0]
    n_head = len(ids(chat_tok, "<|assistant|>\n"))
    assert ex["labels"][:n_head] == [IGNORE] * n_head
    assert chat_tok.decode([t for t in ex["labels"] if t != IGNORE]) == "welcome < / s >"
    strict = load_tokenizer(demo_model_path())
    strict.chat_template = "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}" + CHAT
    with pytest.raises(UserError, match="row 1: the chat template refused .*user first"):
        prepare(DataConfig(path=path, validation_split=0), strict, "causal-lm")


def test_messages_need_a_chat_template(tmp_path, tok):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(UserError, match="no chat template"):
        prepare(DataConfig(path=path, validation_split=0), tok, "causal-lm")


def test_messages_truncated_at_max_length(tmp_path, chat_tok):
    conv = [{"role": "user", "content": "word " * 20}, {"role": "assistant", "content": "yes"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conv}])
    s = prepare(DataConfig(path=path, validation_split=0, max_length=12), chat_tok, "causal-lm").stats["train"]
    assert (s.examples, s.too_long_prompts) == (0, 1)


# -- classification --------------------------------------------------------------------------
def test_classification_string_labels_sorted(tmp_path, tok):
    rows = [{"text": "a", "label": "zeta"}, {"text": "b", "label": "alpha"}, {"text": "c", "label": "mu"},
            {"text": "", "label": "mu"}, {"text": "d", "label": None}]
    p = prepare(DataConfig(path=write_jsonl(tmp_path / "c.jsonl", rows), validation_split=0), tok, "classification")
    assert p.label_names == ["alpha", "mu", "zeta"]
    assert [ex["labels"] for ex in p.train] == [2, 0, 1]
    assert p.train[0]["input_ids"] == tok("a")["input_ids"]
    assert p.stats["train"].empty == 2


def test_classification_numeric_and_fixed_labels(tmp_path, tok):
    rows = [{"text": "a", "label": 2}, {"text": "b", "label": 0}, {"text": "c", "label": 2}]
    path = write_jsonl(tmp_path / "n.jsonl", rows)
    p = prepare(DataConfig(path=path, validation_split=0), tok, "classification")
    assert p.label_names == ["0", "1", "2"] and [ex["labels"] for ex in p.train] == [2, 0, 2]
    # a resumed run keeps its own mapping
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "a", "label": "neg"}, {"text": "b", "label": "pos"}])
    p = prepare(DataConfig(path=path, validation_split=0), tok, "classification", label_names=["pos", "neg"])
    assert [ex["labels"] for ex in p.train] == [1, 0]
    with pytest.raises(UserError, match="not among the run's classes"):
        prepare(DataConfig(path=path, validation_split=0), tok, "classification", label_names=["pos", "other"])


def test_classification_class_label_names_from_a_saved_dataset(tmp_path, tok):
    ds = datasets.Dataset.from_dict({"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]})
    ds = ds.cast_column("label", datasets.ClassLabel(names=["negative", "positive"]))
    datasets.DatasetDict(train=ds, validation=ds.select([1])).save_to_disk(tmp_path / "sst")
    p = prepare(DataConfig(path=str(tmp_path / "sst")), tok, "classification")
    assert p.label_names == ["negative", "positive"]
    assert [ex["labels"] for ex in p.train] == [1, 0, 1]
    assert [ex["labels"] for ex in p.validation] == [0]  # the folder's own validation split


def test_classification_errors(tmp_path, tok):
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    with pytest.raises(UserError, match="'label' has 1 class \\(x\\)"):
        prepare(DataConfig(path=one, validation_split=0), tok, "classification")
    real = write_jsonl(tmp_path / "r.jsonl", [{"text": "a", "label": 0.5}, {"text": "b", "label": 1.0}])
    with pytest.raises(UserError, match="regression is not supported"):
        prepare(DataConfig(path=real, validation_split=0), tok, "classification")


def test_classification_truncation_keeps_the_closing_token(tmp_path, tok):
    rows = [{"text": "word " * 50, "label": "a"}, {"text": "short", "label": "b"}]
    p = prepare(DataConfig(path=write_jsonl(tmp_path / "c.jsonl", rows), validation_split=0, max_length=16),
                tok, "classification")
    long = p.train[0]["input_ids"]
    assert len(long) == 16 and long[0] == tok.cls_token_id and long[-1] == tok.sep_token_id
    s = p.stats["train"]
    assert (s.truncated, s.max_tokens, s.median_tokens, s.too_long_prompts) == (1, 52, 27.5, 0)


# -- splits ----------------------------------------------------------------------------------
def test_seeded_validation_split(tmp_path, tok):
    path = write_jsonl(tmp_path / "c.jsonl", ROWS)
    a = prepare(DataConfig(path=path, validation_split=0.2), tok, "classification", seed=1)
    b = prepare(DataConfig(path=path, validation_split=0.2), tok, "classification", seed=1)
    c = prepare(DataConfig(path=path, validation_split=0.2), tok, "classification", seed=2)
    assert (len(a.train), len(a.validation)) == (40, 10)
    assert a.train == b.train and a.validation == b.validation
    assert a.validation != c.validation
    key = [tuple(ex["input_ids"]) for ex in a.train + a.validation]
    assert len(set(key)) == 50  # disjoint, nothing lost
    none = prepare(DataConfig(path=path, validation_split=0), tok, "classification")
    assert (len(none.train), none.validation) == (50, [])


def test_separate_validation_file(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS[:30])
    val = write_jsonl(tmp_path / "val.csv", [])
    datasets.Dataset.from_list(ROWS[30:]).to_csv(val, index=False)
    p = prepare(DataConfig(path=train, validation_path=val, validation_split=0.5), tok, "classification")
    assert (len(p.train), len(p.validation), p.stats["validation"].examples) == (30, 20, 20)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"body": "x", "label": "billing"}])
    with pytest.raises(UserError, match="lacks column\\(s\\) text"):
        prepare(DataConfig(path=train, validation_path=bad), tok, "classification")


def test_demo_datasets(tok, chat_tok):
    train, val = demo_path("classification")
    p = prepare(DataConfig(path=train, validation_path=val, max_length=128), tok, "classification")
    assert p.label_names == ["account", "billing", "shipping", "technical"]
    assert (len(p.train), len(p.validation)) == (720, 200)
    assert p.stats["train"].truncated == 0
    texts = lambda path: set(load_table(path)["text"][:])  # noqa: E731
    assert not texts(train) & texts(val)
    p = prepare(DataConfig(), tok, "classification")  # no path: the demo, with its validation file
    assert (len(p.train), len(p.validation)) == (720, 200)
    causal, none = demo_path("causal-lm")
    assert none == ""
    p = prepare(DataConfig(path=causal, validation_split=0.1), tok, "causal-lm")
    assert p.format == "prompt-completion" and len(p.train) + len(p.validation) >= 200
    chat = str(Path(causal).with_name("demo_chat.jsonl"))
    p = prepare(DataConfig(path=chat, validation_split=0), chat_tok, "causal-lm")
    assert p.format == "messages" and len(p.train) == 50


# -- batching --------------------------------------------------------------------------------
def test_collate_pads_right():
    causal = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
              {"input_ids": [8], "attention_mask": [1], "labels": [8]}]
    b = collate(causal, pad_id=0)
    torch.testing.assert_close(b["input_ids"], torch.tensor([[5, 6, 7], [8, 0, 0]]))
    torch.testing.assert_close(b["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0]]))
    torch.testing.assert_close(b["labels"], torch.tensor([[-100, 6, 7], [8, -100, -100]]))
    assert all(t.dtype == torch.long for t in b.values())
    b = collate(causal, pad_id=9, pad_to_multiple_of=8)
    assert b["input_ids"].shape == (2, 8) and b["input_ids"][1, 1:].tolist() == [9] * 7
    cls = collate([{"input_ids": [1, 2], "attention_mask": [1, 1], "labels": 3},
                   {"input_ids": [1], "attention_mask": [1], "labels": 0}], pad_id=0)
    torch.testing.assert_close(cls["labels"], torch.tensor([3, 0]))
    assert cls["labels"].shape == (2,)


def test_huge_text_is_cut_before_tokenizing_without_changing_what_is_kept(tmp_path, tok, monkeypatch):
    """A text far over CHARS_PER_TOKEN x max_length characters: the same kept tokens as tokenizing
    it whole and truncating, and counted as cut."""
    from lora_studio.engine import data
    from lora_studio.engine.data import CHARS_PER_TOKEN

    L = 16
    huge = "the quick brown fox jumps over it " * (CHARS_PER_TOKEN * L)  # ~34 chars x 1024
    rows = [{"text": huge, "label": "a"}] + [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(9)]
    path = write_jsonl(tmp_path / "huge.jsonl", rows)
    cls = DataConfig(path=path, max_length=L, validation_split=0)
    causal = DataConfig(path=path, max_length=L, validation_split=0, format="text")
    p = prepare(cls, tok, "classification")
    pc = prepare(causal, tok, "causal-lm")
    assert p.stats["train"].clipped == 1 and p.stats["train"].truncated == 1
    assert "1 over 1,024 characters cut" in p.stats["train"].summary()
    assert p.train[0]["input_ids"] == tok(huge, truncation=True, max_length=L)["input_ids"]
    monkeypatch.setattr(data, "CHARS_PER_TOKEN", 10**9)  # no cut: the whole text tokenized
    whole, whole_causal = prepare(cls, tok, "classification"), prepare(causal, tok, "causal-lm")
    assert whole.stats["train"].clipped == 0
    assert [e["input_ids"] for e in p.train] == [e["input_ids"] for e in whole.train]
    assert pc.train == whole_causal.train and pc.train[0]["input_ids"][1:4] == ids(tok, "the quick brown")
