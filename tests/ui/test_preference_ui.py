"""The Preference task in the window (issue 26): the Task combo offers it, the Training section
shows its loss, beta and SimPO's gamma, the data panel reads prompt/chosen/rejected pairs, a run
can start from a finished run's adapter (--from), and a short DPO run plots the rewards."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

import tiny
from gui_helpers import captured_start, open_window, shut, typed
from lora_studio.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig

PAIRS = [("the quick brown fox", " jumps over the lazy dog", " low rank"),
         ("low rank adaptation", " freezes the pretrained model", " the dog"),
         ("lora studio merges", " the update into the base weights", " the fox jumps"),
         ("a small model", " learns from pairs", " forgets the prompt")]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny.model_folder(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS * 3]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def window(qtbot, llama, pairs, tmp_path):
    """A window on the tiny Llama as a causal LM, with pairs as its data (not causal-LM data: the
    preview reports it until Preference is picked)."""
    from lora_studio.ui.session import Draft

    draft = Draft(model=ModelConfig(path=str(llama), task="causal-lm"),
                  data=DataConfig(path=str(pairs), max_length=32, validation_split=0.25),
                  train=TrainConfig(max_steps=3, batch_size=2, eval_every=0, save_every=0, lr=5e-3,
                                    warmup_ratio=0.0, sample_every=0),
                  out=str(tmp_path / "run"))
    w = open_window(qtbot, draft, ready=lambda s: s.info is not None and s.preview is not None)
    yield w
    shut(w)


def pick(combo, value):
    """Choose the item whose data is `value`, as a click would (`activated`)."""
    i = combo.findData(value)
    assert i >= 0, f"{value!r} is not offered"
    combo.setCurrentIndex(i)
    combo.activated.emit(i)


def pick_task(qtbot, w, task):
    """Pick `task` and wait for the model and the data read for it (the pairs are data only for
    preference: for another task, the preview's problem)."""
    pick(w.model_panel.task, task)
    s, prefer = w.session, task == "preference"

    def read():
        if s.info.task != task or s.preview is None or (s.preview.format == "preference") != prefer:
            return False
        return s.stats is not None and s.stats.format.startswith("preference") if prefer else bool(s.preview.problem)

    qtbot.waitUntil(read, timeout=60_000)


def test_preference_rows_show_for_the_task_and_reach_the_started_config(qtbot, window, monkeypatch):
    s, ts, form = window.session, window.train_settings, window.train_settings.form
    assert not any(form.isRowVisible(w) for w in (ts.loss, ts.beta, ts.gamma))  # a causal LM: none
    pick_task(qtbot, window, "preference")
    assert window.model_panel.task.currentText() == "Preference (DPO/ORPO/SimPO)"
    assert form.isRowVisible(ts.loss) and form.isRowVisible(ts.beta) and not form.isRowVisible(ts.gamma)
    assert [ts.loss.itemData(i) for i in range(ts.loss.count())] == ["dpo", "orpo", "simpo"]
    assert ts.beta.text() == "default (0.1)"  # beta 0: the loss's own
    pick(ts.loss, "simpo")
    assert form.isRowVisible(ts.gamma) and ts.beta.text() == "default (2)"

    started = captured_start(window, monkeypatch)
    typed(qtbot, ts.beta, "2.5")
    qtbot.keyClick(ts.beta, Qt.Key_Return, Qt.ControlModifier)  # Start, without leaving the field
    typed(qtbot, ts.gamma, "1.25")
    qtbot.keyClick(ts.gamma, Qt.Key_Return, Qt.ControlModifier)
    assert len(started) == 2
    first, second = (c.to_dict() for c in started)
    assert first["model"]["task"] == "preference" and first["train"]["loss"] == "simpo"
    assert first["train"]["beta"] == pytest.approx(2.5)
    assert second["train"]["simpo_gamma"] == pytest.approx(1.25) and second["train"]["beta"] == pytest.approx(2.5)

    pick_task(qtbot, window, "causal-lm")
    assert not any(form.isRowVisible(w) for w in (ts.loss, ts.beta, ts.gamma))
    assert s.build().model.task == "causal-lm"


def test_data_panel_and_tab_read_preference_pairs(qtbot, window):
    panel, view = window.data_panel, window.data_view
    assert window.session.preview.problem  # pairs are no causal-LM data
    pick_task(qtbot, window, "preference")
    p = window.session.preview
    assert p.format == "preference" and p.roles == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    assert not p.problem and not view.problem.isVisible()
    assert [panel.format.itemText(i) for i in range(panel.format.count())] == ["Auto (preference)"]
    shown = [r for r, box in panel.roles.items() if panel.form.isRowVisible(box)]
    assert shown == ["prompt"]  # the one column of the three that DataConfig can rename
    stats = window.session.stats
    assert stats.train.examples == 9 and stats.validation.examples == 3
    assert view.labels.value.text() == "pairs"
    # the memory estimate under the Targets cards counts two sequences per pair, and says so
    batch = window.session.draft.train.batch_size
    qtbot.waitUntil(lambda: f"batch {batch} pairs (2 × {batch} sequences)" in window.details.memory_note.text(),
                    timeout=20_000)


def test_start_from_a_finished_run_takes_its_adapter_settings(qtbot, window, monkeypatch, llama, tmp_path):
    panel = window.model_panel
    assert panel.form.isRowVisible(panel.from_row)  # causal LM: shown
    sft = tmp_path / "sft"
    sft.mkdir()
    RunConfig(model=ModelConfig(path=str(llama), task="causal-lm"),
              lora=LoraConfig(targets=["q", "k", "down"], rank=4, alpha=8.0, init="pissa"),
              out=str(sft)).save(sft / "run.toml")
    (sft / "adapter_model.safetensors").write_bytes(b"")  # only its presence is read here
    pick_task(qtbot, window, "preference")
    panel.start_from.setFocus()
    qtbot.keyClicks(panel.start_from, str(sft))
    panel.start_from.editingFinished.emit()
    s = window.session
    qtbot.waitUntil(lambda: s.draft.model.start_from == str(sft.resolve()), timeout=10_000)
    qtbot.waitUntil(lambda: s.draft.lora.rank == 4 and "k" in {t for t, _ in s.cells}, timeout=10_000)
    started = captured_start(window, monkeypatch)
    window.start()
    config = started[-1]
    assert config.model.start_from == str(sft.resolve()) and config.model.task == "preference"
    assert (config.lora.targets, config.lora.rank, config.lora.init) == (["q", "k", "down"], 4, "kaiming")

    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    with qtbot.waitSignal(s.model_failed, timeout=10_000) as failed:
        s.start_from(str(not_a_run))
    assert "not a finished run folder" in failed.args[0].message
    panel.start_from.clear()
    panel.start_from.editingFinished.emit()
    assert s.draft.model.start_from == "" and panel.start_from.placeholderText() == "a new adapter"
    pick_task(qtbot, window, "classification")
    assert not panel.form.isRowVisible(panel.from_row)


def test_a_short_dpo_run_plots_the_rewards(qtbot, window, dialogs):
    pick_task(qtbot, window, "preference")
    with qtbot.waitSignal(window.controller.finished, timeout=90_000) as finished:
        qtbot.mouseClick(window.header.start, Qt.LeftButton)
    assert finished.args[0].step == 3 and not finished.args[0].stopped
    plots = window.training.plots
    qtbot.waitUntil(lambda: plots.side_curve.yData is not None and len(plots.side_curve.yData) == 3, timeout=5_000)
    assert plots.task == "preference" and plots.reward_plot.scene() is not None
    assert list(plots.side_curve.xData) == [1, 2, 3]  # the reward margin, step by step
    assert len(plots.reward_curve.yData) == 3 and len(plots.chosen_curve.yData) == 3
    assert all(0 <= a <= 100 for a in plots.reward_curve.yData)  # accuracy in %
    rows = [json.loads(line) for line in open(f"{window.run_dir}/metrics.jsonl")]
    margins = [r["reward_margin"] for r in rows if "reward_margin" in r]
    assert list(plots.side_curve.yData) == pytest.approx(margins)
    assert dialogs.shown == []
