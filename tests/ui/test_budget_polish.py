"""Issue 13 item 9: the memory estimate at the data's real lengths, cleared with the ticks, the
rsLoRA factor, and estimate vs measured peak after a run."""

from PySide6.QtCore import Qt

from lora_studio.engine.budget import activation_bytes
from lora_studio.engine.events import Finished, Started
from lora_studio.ui.widgets import size


def test_activations_at_the_longest_example_not_max_length(window, qtbot):
    s = window.session
    stats = s.stats.train
    longest = min(stats.max_tokens, s.draft.data.max_length)
    assert 0 < longest < s.draft.data.max_length  # the tiny reviews are shorter than max_length 32
    cfg, batch = s.info.skeleton.config, s.draft.train.batch_size
    expected = activation_bytes(cfg, batch, longest, "fp32", False)
    assert expected != activation_bytes(cfg, batch, s.draft.data.max_length, "fp32", False)
    cells = window.details.memory_cells
    assert cells[("Activations", 1)].text() == size(expected) == cells[("Activations", 2)].text()
    total = s.budget.budget.memory_lora.total - s.budget.budget.memory_lora.activations + expected
    assert cells[("Total", 1)].text() == size(total)
    assert window.cards.memory.value.text() == size(total) and window.cards.estimate_bytes == total
    assert f"longest example {longest}" in window.cards.memory.sub.text()
    assert f"p95 {stats.p95_tokens:.0f} tokens" in window.details.memory_note.text()
    assert f"× {longest} tokens" in window.details.memory_note.text()


def test_clear_empties_the_memory_table(window, qtbot):
    cells = window.details.memory_cells
    assert cells[("Total", 1)].text() != "–"
    qtbot.mouseClick(window.grid.clear, Qt.LeftButton)
    assert {c.text() for c in cells.values()} == {"–"} and window.details.memory_note.text() == ""


def test_rslora_hint_states_the_factor(window, qtbot):
    panel = window.adapter_panel
    panel.rank.setValue(8)
    assert not panel.rslora_hint.isVisible()
    qtbot.mouseClick(panel.rslora, Qt.LeftButton)
    assert panel.rslora_hint.isVisible() and "×2.8 at r = 8" in panel.rslora_hint.text()
    qtbot.mouseClick(panel.rslora, Qt.LeftButton)
    assert not panel.rslora_hint.isVisible()


def test_finished_run_shows_estimate_vs_measured_peak(window, qtbot, tmp_path):
    view, c = window.training, window.controller
    c.started.emit(Started(out=str(tmp_path), total_steps=6, start_step=0, device="cpu", device_name="CPU",
                           precision="fp32", trainable_params=10, total_params=100, train_examples=36,
                           validation_examples=12, task="classification"))
    estimate = window.cards.estimate_bytes
    measured = int(estimate * 1.25)
    c.finished.emit(Finished(step=6, out=str(tmp_path), stopped=False, mem_peak=measured))
    assert view.memory.value.text() == size(measured)
    # a CPU run measures the process's RSS: named so, never set against the tensor estimate (GUI N3)
    assert view.memory.sub.text() == "peak process RSS\nincl. Python, torch, Qt"
    c.started.emit(Started(out=str(tmp_path), total_steps=6, start_step=0, device="cuda", device_name="GPU",
                           precision="bf16", trainable_params=10, total_params=100, train_examples=36,
                           validation_examples=12, task="classification"))
    c.finished.emit(Finished(step=6, out=str(tmp_path), stopped=False, mem_peak=measured))
    assert view.memory.sub.text() == f"peak GPU tensors\nestimate {size(estimate)} (-20 %)"  # tensors vs tensors
