"""GUI walkthrough #45, #47, #48, #50: data the run cannot use (wrong columns, one label, a malformed
line, a missing file) left the Data tab's stat cards on the previous file's numbers or on
"… tokenizing"; with nothing ticked in the Targets grid Start stayed enabled and opened a dialog.
Each test types, clicks and presses keys as a user does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gui_helpers import captured_start, typed
from PySide6.QtCore import Qt

SHOTS = Path("/tmp/dataview-shots")


def _bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.jsonl"
    rows = {"columns": [{"review": "fine", "stars": 4}] * 12,
            "one-label": [{"text": f"good thing {i}", "label": "pos"} for i in range(12)]}
    if kind in rows:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[kind]))
    elif kind == "malformed":
        path.write_text('{"text": "a\tb", "label": "pos"}\n')  # a raw tab inside a string
    return path  # "missing": never written


def _cards(view) -> list[tuple[str, str]]:
    return [(c.value.text(), c.sub.text()) for c in (view.examples, view.tokens, view.truncated, view.labels)]


def _read(qtbot, window, path: Path, signal):
    """Type a data path in the Data panel and press Enter, as a user does."""
    with qtbot.waitSignal(signal, timeout=60_000):
        typed(qtbot, window.data_panel.path, str(path))
        qtbot.keyClick(window.data_panel.path, Qt.Key_Return)


@pytest.mark.parametrize("kind, why", [("columns", "data not usable"), ("one-label", "data not usable"),
                                       ("malformed", "file not read"), ("missing", "file not read")])
def test_unusable_data_clears_the_stat_cards(qtbot, window, tmp_path, tiny_data, kind, why):
    view = window.data_view
    window.resize(1280, 800)
    window.tabs.setCurrentWidget(view.parentWidget())
    before = _cards(view)
    assert before[0][0] == "36 / 12" and "mean" in before[1][0]
    _read(qtbot, window, _bad_file(tmp_path, kind), window.session.data_failed)
    qtbot.wait(100)  # a late "tokenizing" would land here
    assert _cards(view) == [("–", f"{why} (see below)")] * 4, kind
    assert view.problem.isVisible() and view.problem.text()
    assert not window.header.start.isEnabled() and window.header.state.text() == "Data not usable: see the Data tab"
    if kind == "malformed":
        assert view.problem.text().endswith("is not valid JSON at line 1, column 12: a raw tab inside a string; "
                                            "write it as \\t")
        SHOTS.mkdir(exist_ok=True)
        window.grab().save(str(SHOTS / "data-tab-malformed-1280x800.png"))
    _read(qtbot, window, tiny_data, window.session.data_stats)
    assert _cards(view) == before and window.header.start.isEnabled()


def test_nothing_ticked_blocks_start_until_a_projection_is_ticked(qtbot, window, monkeypatch, dialogs):
    started = captured_start(window, monkeypatch)
    start, chip = window.header.start, window.header.state
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.width() == 1280, timeout=5_000)
    assert start.isEnabled() and chip.text() == "Ready"
    qtbot.mouseClick(window.grid.clear, Qt.LeftButton)
    assert not start.isEnabled() and not window.act_start.isEnabled()
    assert chip.text() == "Targets: tick a projection"
    # the Training tab's Step card says so too (it said "ready: press Start" with Start disabled)
    assert window.training.step.sub.text() == "Start waits · Targets: tick a projection"
    qtbot.waitUntil(lambda: chip.toolTip() == "", timeout=2_000)  # whole at 1280 once laid out, not "…"
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key_Return, Qt.ControlModifier)  # Run ▸ Start's shortcut
    qtbot.mouseClick(start, Qt.LeftButton)
    assert started == [] and dialogs.shown == []  # no "Cannot start training" dialog
    box = window.grid.cell("q", 0)
    qtbot.mouseClick(box, Qt.LeftButton)
    assert box.isChecked() and window.session.cells == {("q", 0)}
    assert start.isEnabled() and window.act_start.isEnabled() and chip.text() == "Ready"
    assert window.training.step.sub.text() == "ready: press Start (Ctrl+Enter)"
    qtbot.keyClick(window, Qt.Key_Return, Qt.ControlModifier)
    assert len(started) == 1 and started[0].lora.targets == ["q"] and started[0].lora.layers == "0"


def test_a_long_status_message_shortens_beside_the_shortcut_hint(qtbot, window):
    """The status line cut a long data error mid-word where the shortcut hint sits: it now ends
    in "…" with the whole text in its tooltip, and clears after its timeout as before."""
    from PySide6.QtWidgets import QLabel

    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.width() == 1280, timeout=5_000)
    bar = window.statusBar()
    text = ("data: /home/someone/Documents/datasets/customer-support/train-2026-12.jsonl is not valid JSON at "
            "line 1841, column 12: a raw tab inside a string; write it as \\t")
    bar.showMessage(text, 300)
    qtbot.waitUntil(lambda: bar.message.toolTip() == text, timeout=2_000)
    shown = QLabel.text(bar.message)  # what is painted (ElidedLabel.text() is the whole text)
    assert shown.endswith("…") and bar.currentMessage() == text
    assert bar.message.fontMetrics().horizontalAdvance(shown) <= bar.message.width()
    hint = next(w for w in bar.findChildren(QLabel) if "Ctrl+Enter" in w.text())
    assert hint.isVisible() and bar.message.geometry().right() < hint.geometry().left()
    qtbot.waitUntil(lambda: bar.currentMessage() == "", timeout=3_000)


def test_phi_axis_labels_as_many_as_fit_at_1280(qtbot, window, tmp_path):
    """A 2 vs 16 sweep at 1280: the j axis labelled all 16 rows on a ~200 px heatmap and the
    numbers overprinted each other; now a label needs 15 px, so a 1-2-5 step thins them."""
    import numpy as np

    from gui_helpers import axis_labels

    window.resize(1280, 800)
    window.tabs.setCurrentWidget(window.study)
    heatmap = window.study.phi.heatmap
    phi = np.linspace(0.0, 1.0, 32).reshape(2, 16)
    window.study.show_summary({"runs": [], "similarity": [
        {"targets": "q-v", "seed": 42, "rank_a": 2, "rank_b": 16, "phi": {"query": phi.tolist()}}]})
    vb = heatmap.getPlotItem().getViewBox()

    def readable():
        rects = sorted((r for r, _ in axis_labels(heatmap.getPlotItem().getAxis("left"))), key=lambda r: r.top())
        return rects and all(a.bottom() <= b.top() + 0.5 for a, b in zip(rects, rects[1:]))

    qtbot.waitUntil(lambda: vb.height() > 50 and readable(), timeout=5_000)
    labels = [t for _, t in axis_labels(heatmap.getPlotItem().getAxis("left"))]
    assert 2 <= len(labels) <= max(2, vb.height() // 15) and labels[0] == "1"


def test_an_epoch_name_at_the_end_of_the_run_stays_inside_the_plot(qtbot):
    """An epoch boundary on the last step named itself right of its line, off the plot ("epo")."""
    from lora_studio.ui.training.plots import TrainingPlots

    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.resize(900, 500)
    plots.show()
    plots.set_total(10)
    for step in range(1, 11):
        plots.add_step(step, 1.0 / step, 1e-3, 0.5, epoch=step / 10 + (0.0 if step < 10 else 0.0001))
    plots.flush()
    line = next(m for m in plots._marks if m.getViewBox() is plots.loss.getViewBox())
    vb = plots.loss.getViewBox()
    qtbot.waitUntil(lambda: vb.sceneBoundingRect().contains(line.label.mapRectToScene(line.label.boundingRect())),
                    timeout=3_000)
    assert line.label.toPlainText() == "epoch 2"


def test_a_data_error_leaves_the_status_line_once_the_data_loads(qtbot, window):
    """The status line kept "data: … does not exist" for 8 s after a good file had loaded."""
    bar = window.statusBar()
    bar.showMessage("data: /tmp/missing.jsonl does not exist: check the path", 8000)
    window.session.data_stats.emit(window.session.stats)
    assert bar.currentMessage() == ""
    bar.showMessage("checkpoint saved: runs/x/checkpoints/step-4", 4000)
    window.session.data_stats.emit(window.session.stats)
    assert bar.currentMessage().startswith("checkpoint saved")  # only a data message goes
