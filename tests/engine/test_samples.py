"""Chat runs and samples on a tiny Llama with a chat template: samples.jsonl at step 0 and at every
evaluation, the same on resume; a chat run is recorded and tried through its template."""

import json
from pathlib import Path

import pytest

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import train as T
from lora_studio.engine.samples import read_samples


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory):
    return tiny.llama_gguf_folder(tmp_path_factory.mktemp("chatllama"))


def _chat_data(path: Path, n: int, offset: int = 0) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"the fox {i} jumps"},
                          {"role": "assistant", "content": "low rank adaptation"}]} for i in range(offset, offset + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path, model, out, **train):
    t = {"max_steps": 6, "batch_size": 4, "lr": 2e-2, "eval_every": 2, "save_every": 2, "seed": 5,
         "warmup_ratio": 0.0, "save_minutes": 0, **train}
    return RunConfig().replace(model={"path": str(model), "task": "causal-lm"},
                               lora={"targets": ["q", "v"], "rank": 4, "alpha": 8},
                               data={"path": str(_chat_data(tmp_path / "train.jsonl", 24)),
                                     "validation_path": str(_chat_data(tmp_path / "val.jsonl", 6, 100)),
                                     "max_length": 32},
                               train=t, out=str(tmp_path / out))


def test_samples_at_step_0_and_each_evaluation_and_in_tensorboard(tmp_path, chat_folder):
    cfg = _config(tmp_path, chat_folder, "run")
    events = []
    assert isinstance(T.train(cfg, events.append), T.Finished)
    rows = read_samples(cfg.out)
    # default: the first 4 held-out prompts, at step 0 (the base) and at each evaluation (2, 4, 6)
    assert [(r["step"], r["prompt"]) for r in rows] == [(s, f"the fox {i} jumps") for s in (0, 2, 4, 6)
                                                         for i in range(100, 104)]
    assert all(isinstance(r["text"], str) and isinstance(r["stopped"], bool) for r in rows)
    assert [e.step for e in events if type(e).__name__ == "Samples"] == [0, 2, 4, 6]
    assert json.loads((Path(cfg.out) / "chat.json").read_text())["stop_tokens"] == ["</s>"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(cfg.out, size_guidance={"tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("samples/text_summary")] == [0, 2, 4, 6]


def test_resumed_run_writes_the_same_samples(tmp_path, chat_folder):
    full = _config(tmp_path, chat_folder, "full")
    T.train(full)
    part = _config(tmp_path, chat_folder, "part")
    control = T.Control()
    T.train(part, lambda e: control.stop() if isinstance(e, T.Step) and e.step == 3 else None, control)
    # a sample line written after the checkpoint by the "killed" process is dropped on resume
    with open(Path(part.out) / "samples.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "prompt": "x", "text": "lost", "stopped": False}) + "\n")
    assert isinstance(T.train(part, resume=part.out), T.Finished)
    assert read_samples(part.out) == read_samples(full.out)
    assert len(read_samples(full.out)) == 16


def test_sample_prompts_file_and_off(tmp_path, chat_folder):
    prompts = tmp_path / "p.txt"
    prompts.write_text("the lazy dog\n\nmerges the update\n")
    cfg = _config(tmp_path, chat_folder, "file", max_steps=2, sample_every=1, sample_prompts=str(prompts))
    T.train(cfg)
    assert [(r["step"], r["prompt"]) for r in read_samples(cfg.out)] == [
        (s, p) for s in (0, 1, 2) for p in ("the lazy dog", "merges the update")]
    off = _config(tmp_path, chat_folder, "off", max_steps=2, sample_every=0)
    T.train(off)
    assert not (Path(off.out) / "samples.jsonl").exists()


def test_try_uses_the_chat_template_of_a_chat_run(tmp_path, chat_folder, monkeypatch):
    from lora_studio.engine import generate, tryit

    cfg = _config(tmp_path, chat_folder, "try", max_steps=2, sample_every=0)
    T.train(cfg)
    seen = []
    real = generate.render
    monkeypatch.setattr(generate, "render", lambda tok, p, chat: seen.append(chat) or real(tok, p, chat))
    c = tryit.compare(cfg.out, "the fox 7 jumps", max_new_tokens=4)
    assert c.chat and seen == [True, True] and isinstance(c.adapted.stopped, bool)
    seen.clear()
    tryit.compare(cfg.out, "the fox 7 jumps", max_new_tokens=4, chat=False)
    assert seen == [False, False]


def test_generation_stops_on_the_end_of_turn_token(chat_folder):
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from lora_studio.engine.generate import generate, stop_ids

    tok = AutoTokenizer.from_pretrained(chat_folder)
    eos = stop_ids(tok)
    assert eos == [tok.convert_tokens_to_ids("</s>")]

    class Always:  # a "model" whose greedy answer is token 5 then the end token
        config = AutoConfig.from_pretrained(chat_folder)

        def parameters(self):
            yield torch.zeros(1)

        def generate(self, input_ids, max_new_tokens, **kw):
            assert kw["eos_token_id"] == eos
            return torch.cat([input_ids, torch.tensor([[5, eos[0], 7]])], 1)

    a = generate(Always(), tok, ["hi"], chat=True, max_new_tokens=3)[0]
    assert a.stopped and a.tokens == 2 and a.text == tok.decode([5], skip_special_tokens=True)


def test_samples_on_learned_positions_stay_within_the_position_limit(tmp_path):
    """A GPT-2 with 64 positions: a long prompt plus the sample length ran past its position table
    (IndexError at step 0); the answer now fits what is left after the prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_studio.engine.generate import generate

    folder = tiny.model_folder(tmp_path / "gpt2", "gpt2")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    long_prompt = " ".join(["fox"] * 50)  # ~50 tokens + [CLS]/[SEP] of 64 positions
    (answer,) = generate(model, tok, [long_prompt], chat=False, max_new_tokens=48)
    assert 1 <= answer.tokens <= 64 - len(tok(long_prompt)["input_ids"])
