"""Preference tuning with `--packing` (issue 26 item 5): a micro-batch's 2P sequences (the chosen
ones, then the rejected ones of the same pairs) laid end to end in one row give the padded batch's
per-sequence log-probs, losses, stats and adapter gradients; a whole run, evaluation on, logs the
padded run's numbers."""

from __future__ import annotations

import math

import pytest
import torch

from lora_studio.engine.packing import BOUNDS, pack, use_packed_attention
from lora_studio.engine.preference import PreferenceObjective, preference_loss, sequence_logps
from test_preference import (PAIRS, adapted, folder, grads, metrics, pairs_batch, pref_config, tok,  # noqa: F401
                             write)

pytest.importorskip("trl")

RAGGED = PAIRS + [{"prompt": "a", "chosen": " the lazy dog jumps over the quick brown fox twice", "rejected": " no"}]


def packed_batch(tmp_path, tok, rows=RAGGED):
    """The same pairs as `pairs_batch`, packed as the objective packs them."""
    from lora_studio.config import DataConfig
    from lora_studio.engine.data_pref import prepare_preference

    cfg = DataConfig(path=write(tmp_path / "pairs.jsonl", rows), validation_split=0.0, max_length=64)
    examples = prepare_preference(cfg, tok).train
    return pack(list(examples) + [e["rejected"] for e in examples])


def test_packed_row_holds_the_pairs_in_the_padded_order(tmp_path, tok):
    padded, packed = pairs_batch(tmp_path, tok, RAGGED), packed_batch(tmp_path, tok)
    lengths = padded["attention_mask"].sum(1).tolist()
    assert [b - a for a, b in zip(packed[BOUNDS][:-1], packed[BOUNDS][1:])] == lengths
    assert packed["input_ids"].shape == (1, sum(lengths))  # no padding at all
    assert padded["attention_mask"].numel() > sum(lengths)  # the padded batch had some


@pytest.mark.parametrize("loss", ["dpo", "orpo", "simpo"])
def test_packed_loss_stats_and_gradients_equal_padded(folder, tok, tmp_path, loss):
    model = adapted(folder)
    use_packed_attention(model)  # what setup does for a packed run; a padded batch takes the usual path
    padded, packed = pairs_batch(tmp_path, tok, RAGGED), packed_batch(tmp_path, tok)
    with torch.no_grad():
        s_pad, n_pad = sequence_logps(model, padded)
        s_pack, n_pack = sequence_logps(model, packed)
    torch.testing.assert_close(n_pack, n_pad)
    torch.testing.assert_close(s_pack, s_pad, atol=1e-5, rtol=1e-5)
    l_pad, st_pad = preference_loss(model, padded, loss)
    g_pad = grads(model, l_pad)
    l_pack, st_pack = preference_loss(model, packed, loss)
    g_pack = grads(model, l_pack)
    assert abs(float(l_pack.detach() - l_pad.detach())) <= 1e-5 and float(l_pad.detach()) > 0
    for k in st_pad:
        assert float(st_pack[k]) == pytest.approx(float(st_pad[k]), abs=1e-5), k
    for a, b in zip(g_pack, g_pad):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert any(float(g.abs().max()) > 0 for g in g_pad)


def test_a_pair_s_log_probs_do_not_move_with_its_neighbours(folder, tok, tmp_path):
    """Isolation: the first pair's log-probs are the same packed alone and packed with three others."""
    model = adapted(folder)
    use_packed_attention(model)
    with torch.no_grad():
        alone, _ = sequence_logps(model, packed_batch(tmp_path, tok, RAGGED[:1]))
        crowd, _ = sequence_logps(model, packed_batch(tmp_path, tok, RAGGED))
    P = len(RAGGED)
    torch.testing.assert_close(crowd[[0, P]], alone, atol=1e-5, rtol=1e-5)


def test_objective_counts_pairs_and_real_tokens(tmp_path, tok, folder):
    config = pref_config(folder, "x.jsonl", tmp_path / "r", packing=True)
    objective = PreferenceObjective(config)
    batch = packed_batch(tmp_path, tok)
    assert objective.count(batch) == len(RAGGED) and objective.tokens(batch) == batch[BOUNDS][-1]


@pytest.mark.parametrize("loss", ["dpo", "simpo"])
def test_a_packed_run_logs_the_padded_run_s_numbers(folder, tmp_path, loss):
    """With the defaults a user has (evaluation on, a validation split), packed and padded runs of
    the same pairs log the same train and eval losses and rewards (≤ 1e-4), DPO starting at ln 2."""
    from lora_studio.engine.runfolder import read_metrics
    from lora_studio.engine.train import train

    data = write(tmp_path / "pairs.jsonl", RAGGED * 3)
    runs = {}
    for packing in (False, True):
        out = tmp_path / f"packed-{packing}"
        config = pref_config(folder, data, out, max_steps=3, batch_size=4, loss=loss, packing=packing,
                             eval_every=2).replace(data={"validation_split": 0.25})
        train(config)
        runs[packing] = (metrics(out), [m for m in read_metrics(out) if "eval_loss" in m])
    (train_pad, eval_pad), (train_pack, eval_pack) = runs[False], runs[True]
    assert [m["step"] for m in train_pack] == [m["step"] for m in train_pad] == [1, 2, 3]
    assert len(eval_pack) == len(eval_pad) >= 2
    for a, b in zip(train_pad + eval_pad, train_pack + eval_pack):
        keys = [k for k in a if k.removeprefix("eval_") in ("loss", "reward_margin", "reward_accuracy", "chosen_logps",
                                                              "rejected_logps")]
        assert len(keys) == 5
        for k in keys:
            assert b[k] == pytest.approx(a[k], abs=1e-4), (k, a, b)
    if loss == "dpo":
        assert train_pack[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(m["padding"] == 0 for m in train_pack) and all(m["padding"] > 0 for m in train_pad)
