"""Packing: the same examples give the same loss and gradients packed as padded, no example sees
another, positions restart, the masks of prompt/completion and chat data survive, and no dense
(N, N) mask is built."""

import json

import pytest
import torch

import tiny
from lora_studio import LoraSpec, inject
from lora_studio.config import RunConfig
from lora_studio.engine import UserError, packing
from lora_studio.engine.data import IGNORE, collate
from lora_studio.engine.loss import training_loss

ARCHS = {"llama": ["q", "v", "gate"], "gpt2": ["c_attn", "c_fc"], "qwen2": ["q", "k", "v", "o"]}


def examples(lengths=(5, 11, 3, 8), seed=0, prompt=None):
    """Causal-LM examples as data.prepare makes them: the first `prompt` tokens carry no loss
    (by default 0, 1, 2, 0, …: plain text, whose first token is a label, among them)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = torch.randint(3, tiny.VOCAB, (n,), generator=g).tolist()
        p = i % 3 if prompt is None else prompt
        out.append({"input_ids": ids, "attention_mask": [1] * n, "labels": [IGNORE] * p + ids[p:]})
    return out


def adapted(arch: str, dropout: float = 0.0):
    model = tiny.build(arch, task="causal-lm")
    for key in ("attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, dropout)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = dropout
    inject(model, LoraSpec(targets=ARCHS[arch], rank=4, alpha=8))
    tiny.randomize_adapters(model)
    return model.train()


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = training_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_pack_lays_examples_end_to_end():
    ex = examples((3, 2), prompt=2)
    b = packing.pack(ex)
    assert b["input_ids"].tolist() == [ex[0]["input_ids"] + ex[1]["input_ids"]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert b[packing.BOUNDS] == (0, 3, 5)
    # each example's first token is predicted by no one: its label is -100 (here the prompt's anyway)
    assert b["labels"].tolist() == [ex[0]["labels"] + ex[1]["labels"]]
    ex = examples((3, 2), prompt=0)
    labels = packing.pack(ex)["labels"][0].tolist()
    assert labels[0] == IGNORE and labels[3] == IGNORE and labels[4] == ex[1]["input_ids"][1]
    assert packing.real_tokens(b) == 5 == packing.positions(b)
    padded = collate(ex, 0)
    assert packing.real_tokens(padded) == 5 and packing.positions(padded) == 6


@pytest.mark.parametrize("arch", list(ARCHS))
def test_packed_equals_padded_loss_and_gradients(arch):
    model = adapted(arch)
    ex = examples()
    l_pad, g_pad = loss_and_grads(model, collate(ex, 0))
    assert packing.use_packed_attention(model) == packing.NAME
    l_pack, g_pack = loss_and_grads(model, packing.pack(ex))
    torch.testing.assert_close(l_pack, l_pad, atol=1e-5, rtol=1e-5)
    assert set(g_pack) == set(g_pad)
    for name in g_pad:
        torch.testing.assert_close(g_pack[name], g_pad[name], atol=1e-6, rtol=1e-4, msg=name)
    # the padded batch still runs through the same attention (evaluation stays padded)
    l_pad2, _ = loss_and_grads(model, collate(ex, 0))
    torch.testing.assert_close(l_pad2, l_pad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_an_example_is_isolated_from_its_neighbour(arch):
    """B's loss and gradients are B's alone, whatever is packed before it."""
    model = adapted(arch)
    packing.use_packed_attention(model)
    a, b, a2 = examples((9,), seed=1)[0], examples((6,), seed=2)[0], examples((4,), seed=3)[0]
    silent = lambda e: {**e, "labels": [IGNORE] * len(e["input_ids"])}  # noqa: E731 - carries no loss
    alone_loss, alone_grads = loss_and_grads(model, packing.pack([b]))
    for neighbour in (a, a2):
        loss, grads = loss_and_grads(model, packing.pack([silent(neighbour), b]))
        torch.testing.assert_close(loss, alone_loss, atol=1e-6, rtol=1e-6)
        for name in alone_grads:
            torch.testing.assert_close(grads[name], alone_grads[name], atol=1e-7, rtol=1e-5, msg=name)
    # and B's hidden states: identical to B alone, whichever neighbour
    with torch.no_grad():
        alone = model.base_model(**packing.model_inputs(packing.pack([b]))).last_hidden_state
        for neighbour in (a, a2):
            packed = model.base_model(**packing.model_inputs(packing.pack([neighbour, b]))).last_hidden_state
            torch.testing.assert_close(packed[:, len(neighbour["input_ids"]):], alone, atol=1e-6, rtol=1e-5)


def test_attention_without_bounds_would_leak():
    """The test above can fail: the same row without the boundaries is one long sequence."""
    model = adapted("llama")
    packing.use_packed_attention(model)
    a, b = examples((9,), seed=1)[0], examples((6,), seed=2)[0]
    with torch.no_grad():
        alone = model.base_model(**packing.model_inputs(packing.pack([b]))).last_hidden_state
        row = packing.model_inputs(packing.pack([a, b]))
        del row[packing.BOUNDS]
        leaked = model.base_model(**row).last_hidden_state[:, 9:]
    assert (leaked - alone).abs().max() > 1e-2


def test_no_dense_mask_is_built(monkeypatch):
    """A packed forward never asks transformers for an (N, N) mask; a padded one does."""
    import transformers.masking_utils as mu

    calls = []
    real = mu.sdpa_mask
    monkeypatch.setattr(mu, "sdpa_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = adapted("llama")
    packing.use_packed_attention(model)
    loss_and_grads(model, packing.pack(examples()))
    assert calls == []
    loss_and_grads(model, collate(examples(), 0))
    assert calls


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_transformers_own_packed_route_needs_use_cache_false(impl):
    """What transformers 5 itself does with packed position_ids and no mask (docs/benchmarks.md):
    SDPA and eager isolate the examples through a dense block-causal mask, but only with
    use_cache=False; `pack` passes use_cache=False, so a flash-attention model is safe too."""
    model = tiny.build("llama", task="causal-lm")
    model.set_attn_implementation(impl)
    a, b = examples((9,), seed=1)[0], examples((6,), seed=2)[0]
    row = packing.pack([a, b])
    assert row["use_cache"] is False
    with torch.no_grad():
        alone = model.model(input_ids=torch.tensor([b["input_ids"]]), use_cache=False).last_hidden_state
        packed = model.model(input_ids=row["input_ids"], position_ids=row["position_ids"],
                             use_cache=False).last_hidden_state[:, 9:]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_dropout_models_keep_the_varlen_path():
    """GPT-2 with attention dropout on a CPU uses engine/fast.py's attention; packing wraps it."""
    from lora_studio.engine.fast import speed_up

    model = adapted("gpt2", dropout=0.1)
    speed_up(model, "cpu")
    assert model.config._attn_implementation == "lora_studio_sdpa"
    assert packing.use_packed_attention(model) == packing.NAME
    model.eval()  # no dropout: the packed row equals the padded batch
    ex = examples()
    with torch.no_grad():
        torch.testing.assert_close(training_loss(model, packing.pack(ex)), training_loss(model, collate(ex, 0)),
                                   atol=1e-5, rtol=1e-5)
    model.train()
    loss = training_loss(model, packing.pack(ex))  # dropout on: runs, finite
    assert torch.isfinite(loss)


@pytest.fixture(scope="module")
def chat_tok():
    from lora_studio.engine.models import demo_model_path, load_tokenizer

    t = load_tokenizer(demo_model_path())
    t.chat_template = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}"
                       "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    return t


@pytest.mark.parametrize("fmt", ["prompt-completion", "messages"])
def test_prompt_completion_and_chat_masks_survive(tmp_path, chat_tok, fmt):
    from lora_studio.config import DataConfig
    from lora_studio.engine.data import prepare

    if fmt == "messages":
        rows = [{"messages": [{"role": "user", "content": f"question {i} " * (1 + i % 3)},
                              {"role": "assistant", "content": "an answer " * (1 + i % 4)},
                              {"role": "user", "content": "and then?"},
                              {"role": "assistant", "content": "more"}]} for i in range(5)]
    else:
        rows = [{"prompt": f"prompt {i} " * (1 + i % 3), "completion": " the answer" * (1 + i % 2)} for i in range(5)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = prepare(DataConfig(path=str(path), validation_split=0.0, max_length=64), chat_tok, "causal-lm")
    ex = data.train
    row = packing.pack(ex)
    # the targets (label of the next position) are the padded batch's, in the same order
    padded = collate(ex, 0)
    targets = lambda labels: [t for r in labels.tolist() for t in r[1:] if t != IGNORE]  # noqa: E731
    pack_targets = [t for t in row["labels"][0].tolist() if t != IGNORE]
    assert pack_targets == targets(padded["labels"]) and pack_targets
    # and the loss on a model with the MiniLM vocabulary is the padded one
    torch.manual_seed(0)
    import transformers as T

    model = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=len(chat_tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    model.train()
    l_pad = training_loss(model, padded)
    packing.use_packed_attention(model)
    torch.testing.assert_close(training_loss(model, row), l_pad, atol=1e-5, rtol=1e-5)


def test_pack_refuses_class_labels():
    with pytest.raises(ValueError):
        packing.pack([{"input_ids": [1, 2], "labels": 1}])
def test_classification_is_refused_in_one_line():
    with pytest.raises(UserError) as e:
        RunConfig().replace(model={"task": "classification"}, train={"packing": True})
    assert "\n" not in str(e.value) and "packing" in str(e.value)
    assert RunConfig().replace(model={"task": "causal-lm"}, train={"packing": True}).train.packing


def test_cli_refuses_packing_for_classification(tmp_path, capsys):
    from lora_studio.cli import main

    code = main(["train", "--task", "classification", "--packing", "--max-steps", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: packing is for causal-LM and preference training") and "\n" not in err


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("llama"), "llama")


def _ragged(path, n=24):
    rows = [{"prompt": f"what comes after {i} ?" + " and then" * (i % 7), "completion": " seven" * (1 + i % 5)}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_packed_run_trains_the_padded_run(tmp_path, llama_folder):
    """Same examples per step, same losses (train and eval) as the padded run; metrics say the
    padding share: some when padded, none when packed."""
    from lora_studio.engine import train as T

    data = _ragged(tmp_path / "d.jsonl")
    curves = {}
    for packed in (False, True):
        cfg = RunConfig().replace(
            model={"path": str(llama_folder), "task": "causal-lm"},
            lora={"targets": ["q", "v", "down"], "rank": 4, "alpha": 8, "dropout": 0.0},
            data={"path": str(data), "max_length": 48, "validation_split": 0.2},
            train={"max_steps": 4, "batch_size": 5, "grad_accum": 2, "lr": 1e-2, "eval_every": 2, "save_every": 0,
                   "seed": 3, "warmup_ratio": 0.0, "packing": packed},
            out=str(tmp_path / f"run{int(packed)}"))
        assert isinstance(T.train(cfg), T.Finished)
        curves[packed] = T.read_metrics(tmp_path / f"run{int(packed)}")
    rows = {p: [m for m in curves[p] if "loss" in m] for p in curves}
    evals = {p: [m["eval_loss"] for m in curves[p] if "eval_loss" in m] for p in curves}
    assert len(rows[True]) == len(rows[False]) == 4 and len(evals[True]) == len(evals[False]) == 3
    for a, b in zip(rows[False], rows[True]):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a, b)
        assert a["padding"] > 0.1 and b["padding"] == 0.0
    for a, b in zip(evals[False], evals[True]):
        assert abs(a - b) <= 1e-4
    assert abs(rows[False][-1]["loss"] - rows[False][0]["loss"]) > 1e-3  # it trained: the check is not vacuous


def test_packing_with_gradient_checkpointing():
    from lora_studio.engine.setup import checkpointing

    model = adapted("llama")
    ex = examples()
    l_pad, g_pad = loss_and_grads(model, collate(ex, 0))
    packing.use_packed_attention(model)
    checkpointing(model)
    l_pack, g_pack = loss_and_grads(model, packing.pack(ex))
    torch.testing.assert_close(l_pack, l_pad, atol=1e-5, rtol=1e-5)
    for name in g_pad:
        torch.testing.assert_close(g_pack[name], g_pad[name], atol=1e-6, rtol=1e-4, msg=name)


def test_isolation_is_checked_on_the_model_itself(monkeypatch):
    """setup proves isolation on the loaded model: a model whose packed rows leak is refused."""
    model = adapted("llama")
    packing.use_packed_attention(model)
    packing.check_isolation(model)  # isolated: passes
    leaky = adapted("llama")  # transformers' own route with a KV cache: the examples see each other
    monkeypatch.setattr(packing, "model_inputs",
                        lambda b: {k: v for k, v in b.items() if k not in ("labels", packing.BOUNDS, "use_cache")})
    with pytest.raises(UserError, match="packing is not supported for llama"):
        packing.check_isolation(leaky)
    assert leaky.training  # the check leaves the mode as it was
