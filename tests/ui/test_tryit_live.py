"""Try it while paused runs on the live model of the run (issue 13 item 2): no checkpoint is read,
and the adapted answer differs from the base one after some training."""

import pytest
from PySide6.QtCore import Qt

from gui_helpers import make_draft, open_window, shut
from lora_studio.engine import tryit


@pytest.mark.slow
def test_try_it_while_paused_uses_the_live_weights(qtbot, tiny_model, tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, out, max_steps=2000, eval_every=0, save_every=0,
                                      lr=2e-2))
    called = []
    monkeypatch.setattr(tryit, "compare", lambda *a, **k: called.append(a) or 1 / 0)  # no run folder reads
    try:
        with qtbot.waitSignal(w.controller.started, timeout=60_000):
            qtbot.mouseClick(w.header.start, Qt.LeftButton)
        qtbot.waitUntil(lambda: w.controller.last_step >= 20, timeout=60_000)
        with qtbot.waitSignal(w.controller.paused, timeout=30_000):
            qtbot.mouseClick(w.header.pause, Qt.LeftButton)
        assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
        w.tabs.setCurrentWidget(w.tryit.parentWidget())
        results = []
        monkeypatch.setattr(w.tryit, "_done", lambda r, done=w.tryit._done: (results.append(r), done(r)))
        qtbot.mouseClick(w.tryit.run, Qt.LeftButton)
        qtbot.waitUntil(lambda: bool(results), timeout=30_000)
        r = results[0]
        assert called == [] and "live weights" in r.source
        assert r.base.probabilities != r.adapted.probabilities  # the trained adapter answers differently
        assert "live weights" in w.tryit.source.text()
        assert w.controller.state == "paused"
        with qtbot.waitSignal(w.controller.resumed, timeout=10_000):
            qtbot.mouseClick(w.header.pause, Qt.LeftButton)
    finally:
        shut(w)


def test_try_it_empty_input_says_what_to_do(qtbot, window, finished_run):
    window.open_run(str(finished_run))
    qtbot.waitUntil(lambda: window.tryit.run.isEnabled(), timeout=30_000)
    assert not window.tryit.max_new.isVisible() and not window.tryit.chat.isVisibleTo(window.tryit)
    window.tryit.prompt.setPlainText("   ")
    qtbot.mouseClick(window.tryit.run, Qt.LeftButton)
    assert "Type a text" in window.tryit.state.text()
