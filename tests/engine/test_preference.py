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
    # a chat run: samples (and try) go through the template, prompted with the held-out questions
    prepared = prepare_preference(DataConfig(path=str(tmp_path / "pairs.jsonl"), validation_split=0.0), tok)
    assert prepared.format == "preference-chat"
    assert prepared.sample_prompts[0] == [{"role": "user", "content": PAIRS[0]["prompt"]}]


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


# -- the training loop ------------------------------------------------------------------------
def pref_config(folder, data, out, **train):
    from lora_studio.config import RunConfig

    t = {"max_steps": 2, "batch_size": 3, "lr": 1e-2, "eval_every": 0, "save_every": 0, "save_minutes": 0,
         "device": "cpu", "warmup_ratio": 0.0, "loss": "dpo", "beta": 0.1, **train}
    return RunConfig.from_dict({"model": {"path": str(folder), "task": "preference"},
                                "lora": {"targets": ["q", "v"], "rank": 4, "alpha": 8},
                                "data": {"path": data, "validation_split": 0.0, "max_length": 64},
                                "train": t, "out": str(out)})


def metrics(run):
    from lora_studio.engine.runfolder import read_metrics

    return [m for m in read_metrics(run) if "loss" in m]


def test_a_dpo_run_starts_at_ln2_logs_rewards_and_is_a_peft_adapter(folder, tmp_path):
    import peft
    import transformers

    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.events import Finished
    from lora_studio.engine.train import train

    data = write(tmp_path / "pairs.jsonl", PAIRS)
    run = tmp_path / "dpo"
    assert isinstance(train(pref_config(folder, data, run)), Finished)
    m = metrics(run)
    assert m[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # the step's loss is before its update
    assert m[0]["reward_margin"] == 0.0 and m[0]["reward_accuracy"] == 0.0
    assert m[1]["loss"] < m[0]["loss"] and m[1]["reward_margin"] > 0  # lr 1e-2: one step moves it
    assert {"chosen_logps", "rejected_logps"} <= set(m[1])
    # the run folder is a PEFT adapter: PEFT's model computes what ours does
    x = {"input_ids": torch.tensor([[1, 40, 50, 60, 70]])}
    ours = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    load_adapter(ours, run)
    base = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    theirs = peft.PeftModel.from_pretrained(base, str(run)).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(**x).logits, theirs(**x).logits, atol=1e-5, rtol=1e-5)


def test_from_a_run_the_first_dpo_loss_is_ln2_again(folder, tmp_path):
    """--from RUN_DIR: reference = that run's adapter. With the base as reference, as
    LLaMA-Factory did (its issue 8459), the first loss would not be ln 2."""
    from lora_studio.engine.train import train

    data = write(tmp_path / "pairs.jsonl", PAIRS)
    train(pref_config(folder, data, tmp_path / "first", max_steps=3))
    first = metrics(tmp_path / "first")
    config = pref_config(folder, data, tmp_path / "second").replace(
        model={"start_from": str(tmp_path / "first")})
    train(config)
    second = metrics(tmp_path / "second")
    assert second[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert second[0]["reward_margin"] == 0.0
    # and the policy did start from the first run's adapter: its log-probs are where the first run ended
    assert second[0]["chosen_logps"] != pytest.approx(first[0]["chosen_logps"], abs=1e-4)


@pytest.mark.parametrize("loss, start", [("dpo", True), ("simpo", False)], ids=["dpo-from", "simpo"])
def test_resume_continues_exactly(folder, tmp_path, loss, start):
    """A stopped and resumed run logs what the unbroken one does (DPO --from: the reference is
    the starting adapter again, not the checkpoint's)."""
    from lora_studio.engine.events import Control, Step
    from lora_studio.engine.train import train

    data = write(tmp_path / "pairs.jsonl", PAIRS * 2)
    model = {}
    if start:
        train(pref_config(folder, data, tmp_path / "start", max_steps=2))
        model = {"start_from": str(tmp_path / "start")}
    train(pref_config(folder, data, tmp_path / "whole", max_steps=4, batch_size=2, loss=loss).replace(model=model))
    control = Control()

    def stop_after_two(e):
        if isinstance(e, Step) and e.step == 2:
            control.stop()

    cut = pref_config(folder, data, tmp_path / "cut", max_steps=4, batch_size=2, loss=loss).replace(model=model)
    train(cut, stop_after_two, control)
    train(cut, resume=tmp_path / "cut")
    whole, resumed = metrics(tmp_path / "whole"), metrics(tmp_path / "cut")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["reward_margin"] == pytest.approx(b["reward_margin"], abs=1e-6)


@pytest.mark.slow
def test_cli_from_a_run_then_merge(folder, tmp_path):
    """`train --task preference --from RUN`: the first DPO loss is ln 2; a flag that would reshape the
    adapter is one line, exit 2; the run merges like any other."""
    import subprocess
    import sys

    from lora_studio.engine.train import train

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lora_studio", *args], capture_output=True, text=True)

    data = write(tmp_path / "pairs.jsonl", PAIRS)
    train(pref_config(folder, data, tmp_path / "sft", max_steps=2, loss="orpo"))
    flags = ["train", "--task", "preference", "--from", str(tmp_path / "sft"), "--data", data,
             "--validation-split", "0", "--max-steps", "1", "--batch-size", "3", "--device", "cpu", "--quiet"]
    bad = cli(*flags, "--rank", "2", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "--rank" in bad.stderr and not (tmp_path / "bad").exists()
    out = cli(*flags, "--loss", "dpo", "--out", str(tmp_path / "dpo"))
    assert out.returncode == 0, out.stderr
    assert metrics(tmp_path / "dpo")[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    merged = cli("merge", str(tmp_path / "dpo"), "--out", str(tmp_path / "merged"))
    assert merged.returncode == 0 and "verified" in merged.stdout, merged.stderr


def _dist_worker(rank: int, world: int, store: str, config):
    import torch.distributed as td

    from lora_studio.engine.errors import Failure
    from lora_studio.engine.train import train

    torch.set_num_threads(1)
    td.init_process_group("gloo", store=td.FileStore(store, world), rank=rank, world_size=world)
    result = train(config)
    if isinstance(result, Failure):
        raise RuntimeError(f"rank {rank}: {result.message}")


@pytest.mark.slow
def test_two_processes_train_the_same_dpo_adapter_as_one(folder, tmp_path):
    """Pairs stay whole on a process (a micro-batch is pairs, split by pairs): 2 processes x 2 pairs
    give the losses and the adapter of 1 process x 4 pairs."""
    import torch.multiprocessing as mp

    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.train import train

    data = write(tmp_path / "pairs.jsonl", PAIRS * 3)
    one = pref_config(folder, data, tmp_path / "one", max_steps=2, batch_size=4)
    train(one)
    two = pref_config(folder, data, tmp_path / "two", max_steps=2, batch_size=2, distributed="ddp")
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "store"), two), nprocs=2, join=True)
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert x["reward_margin"] == pytest.approx(y["reward_margin"], abs=1e-5)
    ra, rb = read_adapter(tmp_path / "one").modules, read_adapter(tmp_path / "two").modules
    assert ra[next(iter(ra))].B.abs().max() > 1e-3  # it trained
    for name in ra:
        torch.testing.assert_close((rb[name].A, rb[name].B), (ra[name].A, ra[name].B), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_fsdp2_dpo_from_a_run_equals_one_process(folder, tmp_path):
    """DPO --from under FSDP2 (refused before: the reference swapped whole tensors, FSDP2 holds
    shards). Each layer now computes with its frozen tensors inside its forward, where FSDP2's
    parameters are whole; the reference is read from the --from folder, so the processes that
    build on meta have it too. With evaluation on and a validation split, as a user runs it:
    2 processes x 2 pairs log what 1 process x 4 pairs does, from ln 2 at step 1."""
    import torch.multiprocessing as mp

    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.train import train

    data = write(tmp_path / "pairs.jsonl", PAIRS * 4)
    train(pref_config(folder, data, tmp_path / "start", max_steps=2))
    start = {"start_from": str(tmp_path / "start")}

    def config(out, **kw):
        c = pref_config(folder, data, tmp_path / out, max_steps=2, eval_every=2, **kw).replace(model=start)
        return c.replace(data={"validation_split": 0.25})

    one = config("one", batch_size=4)
    train(one)
    two = config("two", batch_size=2, distributed="fsdp")
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "store"), two), nprocs=2, join=True)
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert a[0]["loss"] == pytest.approx(math.log(2), abs=1e-6) and b[0]["reward_margin"] == 0.0
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert x["reward_margin"] == pytest.approx(y["reward_margin"], abs=1e-5)
    evals = lambda run: [m["eval_loss"] for m in read_metrics_all(run) if "eval_loss" in m]
    assert len(evals(tmp_path / "one")) == len(evals(tmp_path / "two")) >= 2
    for x, y in zip(evals(tmp_path / "one"), evals(tmp_path / "two")):
        assert x == pytest.approx(y, abs=1e-5)
    ra, rb = read_adapter(tmp_path / "one").modules, read_adapter(tmp_path / "two").modules
    for name in ra:
        torch.testing.assert_close((rb[name].A, rb[name].B), (ra[name].A, ra[name].B), rtol=0, atol=1e-5)


def read_metrics_all(run):
    from lora_studio.engine.runfolder import read_metrics

    return read_metrics(run)


@pytest.mark.parametrize("variant", ["nf4", "dora"])
def test_qlora_and_dora_dpo_runs_start_at_ln2_and_train(folder, tmp_path, variant):
    """A 4-bit base (bitsandbytes on the CPU) or a DoRA adapter: the reference is still the base
    exactly (adapters bypassed), so the first loss is ln 2; the run trains."""
    from lora_studio.engine.events import Finished
    from lora_studio.engine.train import train

    if variant == "nf4":
        pytest.importorskip("bitsandbytes")
    data = write(tmp_path / "pairs.jsonl", PAIRS)
    config = pref_config(folder, data, tmp_path / variant)
    config = config.replace(model={"quantize": "nf4"}) if variant == "nf4" else config.replace(lora={"dora": True})
    assert isinstance(train(config), Finished)
    m = metrics(tmp_path / variant)
    assert m[0]["loss"] == pytest.approx(math.log(2), abs=1e-6) and m[0]["reward_margin"] == pytest.approx(0, abs=1e-6)
    assert m[1]["reward_margin"] > 0


def test_starting_from_a_run_with_other_adapter_settings_is_one_clear_line(folder, tmp_path):
    """The GUI lets the rank or the model change after From was picked; the engine says what differs
    before anything loads, instead of failing on mismatched adapter shapes."""
    from lora_studio.engine.events import Failed
    from lora_studio.engine.train import train

    data = write(tmp_path / "pairs.jsonl", PAIRS)
    train(pref_config(folder, data, tmp_path / "first", max_steps=1))
    start = {"start_from": str(tmp_path / "first")}
    other = pref_config(folder, data, tmp_path / "second").replace(model=start, lora={"rank": 2, "targets": ["q", "k"]})
    result = train(other)
    assert isinstance(result, Failed) and result.kind == "user" and "\n" not in result.message, result
    assert "rank 4 (this run: 2)" in result.message and "targets ['q', 'v'] (this run: ['q', 'k'])" in result.message
    assert not (tmp_path / "second" / "adapter_model.safetensors").exists()
    same = pref_config(folder, data, tmp_path / "third").replace(model=start)
    assert not isinstance(train(same), Failed)  # the start run's own settings: it trains
