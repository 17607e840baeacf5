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
