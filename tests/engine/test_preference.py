"""Preference losses against TRL (the reference implementation), DPO's reference policy, and the data.

The same tiny Llama (chat template, 400 tokens) and the same batch go through our loss and through
TRL's: DPOTrainer's own `_compute_loss` (with `ref_model` the reference we claim), and ORPO's /
CPO's (SimPO) own log-prob and loss functions. Loss and adapter gradients agree within 1e-5.
"""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch

from lora_studio.config import DataConfig
from lora_studio.engine.data_pref import collate_pairs, prepare_preference
from lora_studio.engine.errors import UserError
from lora_studio.engine.lora import LoraSpec, inject, lora_layers
from lora_studio.engine.preference import Reference, adapter_tensors, preference_loss, sequence_logps
from tiny import llama_gguf_folder, randomize_adapters

trl = pytest.importorskip("trl")

PAIRS = [
    {"prompt": "the quick brown fox", "chosen": " jumps over the lazy dog", "rejected": " low rank"},
    {"prompt": "low rank adaptation", "chosen": " freezes the pretrained model", "rejected": " the dog"},
    {"prompt": "LoRA Studio merges", "chosen": " the update into the base weights", "rejected": " the fox jumps"},
]
LN2 = torch.tensor(math.log(2))  # float32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return llama_gguf_folder(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="module")
def tok(folder):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(folder)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def pairs_batch(tmp_path, tok, rows=PAIRS):
    cfg = DataConfig(path=write(tmp_path / "pairs.jsonl", rows), validation_split=0.0, max_length=64)
    prepared = prepare_preference(cfg, tok)
    return collate_pairs(prepared.train, tok.pad_token_id)


def adapted(folder, dora=False, randomize=True, seed=3):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(seed)
    inject(model, LoraSpec(targets=["q", "v", "down"], rank=4, alpha=8, dora=dora))
    if randomize:
        randomize_adapters(model, seed=seed)
    return model


def grads(model, loss):
    params = adapter_tensors(model)
    for p in params:
        p.grad = None
    loss.backward()
    return [p.grad.clone() for p in params]


def frozen_copy(model, base: bool):
    """A separate model equal to the reference we claim: the base, or the adapter as it is now."""
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(False)
    if base:
        for m in lora_layers(ref).values():
            m.disabled = True
    return ref.eval()


def trl_dpo_loss(model, ref_model, batch, tok, tmp_path, beta):
    """DPOTrainer's own loss on our batch (its layout: chosen rows, then rejected; completion_mask)."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, report_to="none", use_cpu=True,
                     bf16=False, fp16=False)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_list(PAIRS))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "completion_mask": (batch["labels"] != -100).long()}
    model.train()
    return trainer._compute_loss(model, inputs, return_outputs=False)


# -- DPO --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_dpo_loss_and_gradients_equal_trl(folder, tok, tmp_path, dora):
    model = adapted(folder, dora=dora)
    batch = pairs_batch(tmp_path, tok)
    model.train()
    ours, stats = preference_loss(model, batch, "dpo", beta=0.1)
    g_ours = grads(model, ours)
    theirs = trl_dpo_loss(model, frozen_copy(model, base=True), batch, tok, tmp_path, beta=0.1)
    g_theirs = grads(model, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert abs(ours.item() - math.log(2)) > 1e-3  # the random adapter moved the policy off the reference
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert set(stats) >= {"reward_margin", "reward_accuracy", "chosen_logps", "rejected_logps"}


def test_dpo_loss_is_ln2_at_the_start_of_a_new_adapter(folder, tok, tmp_path):
    model = adapted(folder, randomize=False)  # B = 0: the policy is the base
    loss, stats = preference_loss(model, pairs_batch(tmp_path, tok), "dpo", beta=0.5)
    assert torch.equal(loss.detach(), LN2)
    assert stats["reward_margin"].item() == 0.0 and stats["reward_accuracy"].item() == 0.0


def test_from_a_trained_adapter_the_reference_is_that_adapter(folder, tok, tmp_path):
    """--from RUN_DIR: the reference is the starting adapter (not the base, LLaMA-Factory #8459)."""
    model = adapted(folder)  # a trained adapter, as --from loads it
    batch = pairs_batch(tmp_path, tok)
    start = Reference.of_start(model)
    loss, stats = preference_loss(model, batch, "dpo", beta=0.1, reference=start)
    assert torch.equal(loss.detach(), LN2) and stats["reward_margin"].item() == 0.0
    base_ref, _ = preference_loss(model, batch, "dpo", beta=0.1, reference=Reference())
    assert abs(base_ref.item() - math.log(2)) > 1e-3  # the base would be a different reference
    # after the policy moves, the loss still equals TRL's with that starting adapter as ref_model
    ref_model = frozen_copy(model, base=False)
    with torch.no_grad():
        for p in adapter_tensors(model):
            p.add_(torch.randn_like(p) * 0.05)
    ours, _ = preference_loss(model, batch, "dpo", beta=0.1, reference=start)
    g_ours = grads(model, ours)
    theirs = trl_dpo_loss(model, ref_model, batch, tok, tmp_path, beta=0.1)
    g_theirs = grads(model, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_reference_swap_leaves_the_policy_as_it_was(folder, tok, tmp_path):
    model = adapted(folder)
    start = Reference.of_start(model)
    with torch.no_grad():
        for p in adapter_tensors(model):
            p.add_(1.0)
    before = [p.detach().clone() for p in adapter_tensors(model)]
    batch = pairs_batch(tmp_path, tok)
    with torch.no_grad(), start.active(model):
        ref_logps, _ = sequence_logps(model, batch)
    for p, b in zip(adapter_tensors(model), before):
        assert torch.equal(p, b)
    with torch.no_grad():
        policy, _ = sequence_logps(model, batch)
    assert not torch.allclose(ref_logps, policy)


# -- ORPO and SimPO (reference-free) ----------------------------------------------------------
def trl_logps(model, batch, trainer_cls):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    avg = trainer_cls.get_batch_logps(logits, batch["labels"], average_log_prob=True)
    P = avg.shape[0] // 2
    return avg[:P], avg[P:]


def test_orpo_equals_trl(folder, tok, tmp_path):
    from trl.experimental.orpo import ORPOTrainer

    model = adapted(folder).train()
    batch = pairs_batch(tmp_path, tok)
    ours, _ = preference_loss(model, batch, "orpo", beta=0.25)
    g_ours = grads(model, ours)
    c, r = trl_logps(model, batch, ORPOTrainer)
    this = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device=torch.device("cpu")))
    ratio_losses = ORPOTrainer.odds_ratio_loss(this, c, r)[0]
    # TRL's odds-ratio term; the SFT term as the ORPO paper's Eq. 2: the chosen completion's mean NLL
    theirs = (-c).mean() - ratio_losses.mean()
    g_theirs = grads(model, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_simpo_equals_trl_cpo_simpo(folder, tok, tmp_path):
    from trl.experimental.cpo import CPOTrainer

    model = adapted(folder).train()
    batch = pairs_batch(tmp_path, tok)
    ours, _ = preference_loss(model, batch, "simpo", beta=2.0, gamma=0.5)
    g_ours = grads(model, ours)
    c, r = trl_logps(model, batch, CPOTrainer)
    this = SimpleNamespace(beta=2.0, alpha=0.0, loss_type="simpo", simpo_gamma=0.5, label_smoothing=0.0,
                           accelerator=SimpleNamespace(device=torch.device("cpu")))
    theirs = CPOTrainer.cpo_loss(this, c, r)[0].mean()  # cpo_alpha = 0: SimPO alone
    g_theirs = grads(model, theirs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# -- data -------------------------------------------------------------------------------------
def test_strings_train_the_completion_only(tmp_path, tok):
    batch = pairs_batch(tmp_path, tok)
    P = len(PAIRS)
    assert batch["input_ids"].shape[0] == 2 * P
    for i, row in enumerate(PAIRS):
        for j, key in ((i, "chosen"), (P + i, "rejected")):
            trained = batch["labels"][j][batch["labels"][j] != -100].tolist()
            # the completion is trained; the prompt's start is not (this toy BPE merges across the
            # prompt/completion boundary, so the boundary token may be trained too: data.py's rule)
            assert tok.decode(trained[:-1]).strip().endswith(row[key].strip())
            assert batch["labels"][j][0] == -100 and len(trained) < int(batch["attention_mask"][j].sum())
            assert trained[-1] == tok.eos_token_id  # the model learns where the answer ends


def test_message_lists_go_through_the_chat_template(tmp_path, tok):
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"].strip()}],
             "rejected": [{"role": "assistant", "content": p["rejected"].strip()}]} for p in PAIRS]
    batch = pairs_batch(tmp_path, tok, rows)
    text = tok.decode(batch["input_ids"][0][batch["attention_mask"][0] == 1])
    assert "user:" in text and "assistant:" in text
    trained = tok.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert "user" not in trained and "jumps over the lazy dog" in trained


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "a", "chosen": "b"}], "lacks rejected"),
    ([{"prompt": "a", "chosen": " ", "rejected": "c"}], "row 1: chosen is empty"),
    ([{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b", "rejected": "b"}],
     "row 2: chosen and rejected are the same"),
])
def test_bad_preference_data_is_one_clear_line(tmp_path, tok, rows, message):
    cfg = DataConfig(path=write(tmp_path / "bad.jsonl", rows), validation_split=0.0)
    with pytest.raises(UserError, match=message) as e:
        prepare_preference(cfg, tok)
    assert "\n" not in str(e.value)
