"""The data check: what it says is trained is exactly what `data.prepare` trains, on tiny Llama
(sentencepiece-like) and GPT-2 (byte-level, ChatML) tokenizers and on the real SmolLM2 one; each
warning fires when it should and stays quiet when it should not."""

import json
from pathlib import Path

import pytest

from lora_studio.config import DataConfig
from lora_studio.engine import data, datacheck

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# closes every turn but the last one: the final answer's end-of-turn token is never rendered, so never trained
OPEN_END = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% if not loop.last %}<|im_end|>\n"
            "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_end|>\n<|im_start|>assistant\n{% endif %}")
CHAT_ROWS = [{"messages": [{"role": "user", "content": f"what is {i} plus {i}"},
                           {"role": "assistant", "content": f"it is {2 * i}"}]} for i in range(6)]
PC_ROWS = [{"prompt": f"Question {i}: the quick brown fox?", "completion": f" answer {i} jumps"} for i in range(5)]


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def llama_tok(tmp_path_factory):
    import tiny
    from lora_studio.engine.models import load_tokenizer

    return load_tokenizer(str(tiny.llama_gguf_folder(tmp_path_factory.mktemp("llama"))))


def gpt2_tokenizer(template: str | None = CHATML):
    """A byte-level BPE tokenizer as GPT-2's, with <|endoftext|> as eos and ChatML's two special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog", "what is one plus one, it is two",
            "Question answer café naïve 日本"] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = template
    return fast


@pytest.fixture(scope="module")
def gpt2_tok():
    return gpt2_tokenizer()


def trained_text(tok, row) -> str:
    return tok.decode([i for i, m in zip(row.ids, row.trained) if m], skip_special_tokens=False)


def test_rows_match_what_prepare_trains(tmp_path, llama_tok, gpt2_tok):
    """Every kept row's trained tokens are the non-masked labels of the example `prepare` builds."""
    for tok in (llama_tok, gpt2_tok):
        for rows in (CHAT_ROWS, PC_ROWS):
            path = write_jsonl(tmp_path / "d.jsonl", rows)
            c = datacheck.check(path, tok, DataConfig(max_length=64))
            prepared = data.prepare(DataConfig(path=path, validation_split=0, max_length=64), tok, "causal-lm")
            assert [r.kept for r in c.detail] == [True] * len(rows)
            for r, ex in zip(c.detail, prepared.train):
                assert r.ids == ex["input_ids"]
                assert [i if m else data.IGNORE for i, m in zip(r.ids, r.trained)] == ex["labels"]
            assert c.rows == c.kept == len(rows) and c.warnings == []


def test_chatml_trains_the_answer_and_its_end_of_turn(tmp_path, gpt2_tok):
    c = datacheck.check(write_jsonl(tmp_path / "c.jsonl", CHAT_ROWS), gpt2_tok)
    assert c.format == "messages" and c.end_tokens == ["<|endoftext|>", "<|im_end|>"]
    assert trained_text(gpt2_tok, c.detail[3]) == "it is 6<|im_end|>\n"
    assert c.warning("eos_not_trained") is None
    assert datacheck.marked(gpt2_tok, c.detail[3], c.max_length) == \
        "<|im_start|>user\nwhat is 3 plus 3<|im_end|>\n<|im_start|>assistant\n[[it is 6<|im_end|>\n]]"


def test_eos_not_trained_fires_when_the_template_leaves_the_last_turn_open(tmp_path):
    tok = gpt2_tokenizer(OPEN_END)
    c = datacheck.check(write_jsonl(tmp_path / "c.jsonl", CHAT_ROWS), tok)
    w = c.warning("eos_not_trained")
    assert w is not None and w.rows == [1, 2, 3, 4, 5, 6] and "<|endoftext|>" in w.message
    assert trained_text(tok, c.detail[0]) == "it is 0"


def test_prompt_completion_trains_eos_and_fires_without_one(tmp_path, llama_tok):
    path = write_jsonl(tmp_path / "p.jsonl", PC_ROWS)
    c = datacheck.check(path, llama_tok)
    assert c.format == "prompt-completion" and c.warnings == []
    assert trained_text(llama_tok, c.detail[2]).endswith("</s>")
    assert c.trained_tokens["total"] == sum(r.trained_tokens for r in c.detail)
    no_eos = gpt2_tokenizer(None)
    no_eos.eos_token = None
    c = datacheck.check(path, no_eos)
    w = c.warning("eos_not_trained")
    assert w is not None and w.rows == [1, 2, 3, 4, 5] and "has none" in w.message


def test_answer_truncated_and_no_trained_tokens(tmp_path, gpt2_tok):
    rows = [{"prompt": "the quick brown fox", "completion": " jumps over the lazy dog " * 6},
            {"prompt": "the quick brown fox " * 8, "completion": " jumps"},
            {"prompt": "the quick", "completion": ""},
            {"prompt": "one", "completion": " two"}]
    # as plain text (the template's turn markers would leave no room in 16 tokens)
    c = datacheck.check(write_jsonl(tmp_path / "t.jsonl", rows), gpt2_tok, DataConfig(max_length=16, chat_template=False))
    assert [r.kept for r in c.detail] == [True, False, False, True]
    assert c.warning("answer_truncated").rows == [1, 2]
    assert c.warning("no_trained_tokens").rows == [2, 3]
    assert c.warning("eos_not_trained") is None  # the cut answer is answer_truncated, not a missing eos
    first = c.detail[0]
    assert len(first.ids) > 16 and first.trained[16:] == [False] * (len(first.ids) - 16)
    assert "✂" in datacheck.marked(gpt2_tok, first, 16)
    color = datacheck.marked(gpt2_tok, c.detail[3], 16, color=True)  # a terminal: green, not brackets
    assert color == "one\x1b[42;30m two<|endoftext|>\x1b[0m" and "[[" not in color
    assert datacheck.to_json(c)["trained_per_row"] == [r.trained_tokens for r in c.detail] and \
        datacheck.to_json(c)["trained_per_row"][1:3] == [0, 0]
    assert c.tokens["max"] == len(first.ids) and c.tokens["min"] == len(c.detail[3].ids)
    assert c.trained_tokens["min"] == c.detail[3].trained_tokens  # " two" + eos


def test_no_chat_template(tmp_path):
    c = datacheck.check(write_jsonl(tmp_path / "c.jsonl", CHAT_ROWS), gpt2_tokenizer(None))
    w = c.warning("no_chat_template")
    assert c.format == "messages" and w.rows == [1, 2, 3, 4, 5, 6] and c.kept == 0


def test_pieces_rebuild_the_text(llama_tok, gpt2_tok):
    for tok in (llama_tok, gpt2_tok):
        ids = tok("café naïve 日本 the fox jumps  over\n the lazy dog " * 4, add_special_tokens=False)["input_ids"]
        p = datacheck.pieces(tok, ids)
        assert len(p) == len(ids) and "".join(p) == tok.decode(ids, clean_up_tokenization_spaces=False)


def smollm2(request) -> str:
    """The session fixture `smollm2_dir` (tests/conftest.py, see notes on fixtures), or skip."""
    try:
        folder = request.getfixturevalue("smollm2_dir")
    except pytest.FixtureLookupError:
        pytest.skip("no smollm2_dir fixture in this checkout")
    if not folder or not Path(folder, "tokenizer_config.json").is_file():
        pytest.skip("the real SmolLM2 folder is not on this machine")
    return str(folder)


@pytest.mark.slow
def test_smollm2_chat_data_trains_im_end(tmp_path, request):
    from lora_studio.engine.models import load_tokenizer

    folder = smollm2(request)
    tok = load_tokenizer(folder)
    c = datacheck.check(write_jsonl(tmp_path / "c.jsonl", CHAT_ROWS), tok, end_ids=datacheck.generation_end_ids(folder))
    assert "<|im_end|>" in c.end_tokens and c.warning("eos_not_trained") is None
    assert trained_text(tok, c.detail[1]).startswith("it is 2<|im_end|>")
    prepared = data.prepare(DataConfig(path=c.path, validation_split=0), tok, "causal-lm")
    assert [[i if m else data.IGNORE for i, m in zip(r.ids, r.trained)] for r in c.detail] == \
        [ex["labels"] for ex in prepared.train]
