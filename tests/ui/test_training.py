"""Start, live metrics reaching the plot, pause/resume, stop with a checkpoint, continue, close."""

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from gui_helpers import make_draft, open_window, shut
from lora_studio.engine.train import Eval, Finished, Started, Step, read_metrics


def curve(w):
    c = w.training.plots.raw_curve
    return ([] if c.xData is None else list(c.xData)), ([] if c.yData is None else list(c.yData))


def test_start_pause_resume_stop_continue(qtbot, tiny_model, tiny_data, tmp_path, dialogs):
    out = tmp_path / "run"
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, out, max_steps=2000, eval_every=0))
    try:
        assert w.header.start.isEnabled() and not w.header.stop.isEnabled()
        with qtbot.waitSignal(w.controller.started, timeout=60_000) as started:
            qtbot.mouseClick(w.header.start, Qt.LeftButton)
        assert isinstance(started.args[0], Started) and started.args[0].total_steps == 2000
        with qtbot.waitSignal(w.controller.stepped, timeout=30_000) as stepped:
            pass
        first = stepped.args[0]
        assert isinstance(first, Step) and first.loss > 0
        # the real loss reaches the plot (pushed by its 10 Hz timer)
        qtbot.waitUntil(lambda: len(curve(w)[0]) > 0, timeout=5_000)
        xs, ys = curve(w)
        rows = {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r}
        assert xs[0] == 1 and ys[0] == rows[1]
        assert not w.model_panel.isEnabled()  # settings are fixed while a run trains
        assert not w.header.export.isEnabled() and not w.act_export.isEnabled()  # no half-written adapter
        w.tabs.setCurrentWidget(w.tryit.parentWidget())
        w.tryit.prompt.setFocus()
        w.tryit.prompt.moveCursor(QTextCursor.End)
        qtbot.keyClick(w.tryit.prompt, Qt.Key_Space)  # typing a space is not the pause shortcut
        assert w.tryit.prompt.toPlainText().endswith(" ") and w.controller.state == "running"
        w.tabs.setCurrentWidget(w.training.parentWidget())

        with qtbot.waitSignal(w.controller.paused, timeout=30_000) as paused:
            qtbot.mouseClick(w.header.pause, Qt.LeftButton)
        assert w.header.pause.text() == "Resume" and w.controller.state == "paused"
        at = paused.args[0].step
        qtbot.wait(300)
        assert w.controller.last_step == at  # nothing trains while paused
        assert w.tryit.run.isEnabled()  # the adapter can be tried while paused

        with qtbot.waitSignal(w.controller.resumed, timeout=10_000):
            qtbot.keyClick(w, Qt.Key_Space)  # the shortcut resumes
        with qtbot.waitSignal(w.controller.stepped, timeout=10_000) as later:
            pass
        assert later.args[0].step > at

        with qtbot.waitSignal(w.controller.finished, timeout=30_000) as finished:
            qtbot.mouseClick(w.header.stop, Qt.LeftButton)
        ev = finished.args[0]
        assert isinstance(ev, Finished) and ev.stopped and ev.step < 2000
        assert w.header.state.text() == f"Stopped at {ev.step}" and w.header.state.property("state") == ""
        assert w.header.export.isEnabled()
        assert (out / "checkpoints" / f"step-{ev.step}").is_dir()
        assert w.header.start.isEnabled() and w.model_panel.isEnabled()
        assert w.training.banner.isVisible() and w.training.banner.first.text() == "Continue run"

        steps_after = []  # listening from before the click: on an idle machine several steps pass
        w.controller.stepped.connect(steps_after.append)  # between `started` and a later waitSignal
        with qtbot.waitSignal(w.controller.started, timeout=60_000) as resumed:
            qtbot.mouseClick(w.training.banner.first, Qt.LeftButton)
        assert resumed.args[0].start_step == ev.step
        qtbot.waitUntil(lambda: len(steps_after) > 0, timeout=30_000)
        assert steps_after[0].step == ev.step + 1
        qtbot.waitUntil(lambda: len(curve(w)[0]) > ev.step, timeout=5_000)  # the old curve was reloaded
        with qtbot.waitSignal(w.controller.finished, timeout=30_000):
            qtbot.keyClick(w, Qt.Key_Period, Qt.ControlModifier)  # Ctrl+. stops
        assert dialogs.shown == []
    finally:
        shut(w)


def test_run_to_the_end_with_eval(window, qtbot, dialogs):
    evals = []
    window.controller.evaluated.connect(evals.append)
    with qtbot.waitSignal(window.controller.finished, timeout=90_000) as finished:
        qtbot.mouseClick(window.header.start, Qt.LeftButton)
    ev = finished.args[0]
    assert isinstance(ev, Finished) and not ev.stopped and ev.step == 6
    assert [e.step for e in evals] == [0, 3, 6] and all(isinstance(e, Eval) for e in evals)
    qtbot.waitUntil(lambda: window.training.plots.eval_curve.xData is not None
                    and list(window.training.plots.eval_curve.xData) == [0, 3, 6], timeout=5_000)
    assert list(window.training.plots.side_curve.yData) == [100 * e.accuracy for e in evals]  # %
    # the card shows the last eval (step 6), which arrives after the last step
    assert window.training.loss.sub.text().startswith(f"eval {evals[-1].eval_loss:.4f}")
    assert window.training.eta.value.text() == "–"
    qtbot.waitUntil(lambda: window.header.state.text() == "Done", timeout=5_000)
    assert window.header.state.property("state") == "done"  # its own colour, not the idle grey
    assert window.training.banner.first.text() == "Try it"
    assert Path(window.run_dir, "adapter_model.safetensors").is_file()
    assert dialogs.shown == []


def test_closing_during_training_asks_then_stops_with_a_checkpoint(qtbot, tiny_model, tiny_data, tmp_path, dialogs):
    out = tmp_path / "run"
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, out, max_steps=2000, eval_every=0))
    with qtbot.waitSignal(w.controller.stepped, timeout=60_000):
        qtbot.mouseClick(w.header.start, Qt.LeftButton)
    dialogs.answer = dialogs.answer.__class__.No
    w.close()
    assert dialogs.kinds() == ["question"] and w.isVisible() and w.controller.running  # "No" keeps training
    dialogs.answer = dialogs.answer.__class__.Yes
    with qtbot.waitSignal(w.controller.finished, timeout=30_000) as finished:
        w.close()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
    step = finished.args[0].step
    assert finished.args[0].stopped and (out / "checkpoints" / f"step-{step}").is_dir()
    assert w.controller.thread is None  # the thread was joined


def test_bad_data_says_what_to_do_and_blocks_start(qtbot, tiny_model, tmp_path, dialogs):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": "x", "bar": 1}\n' * 10)
    w = open_window(qtbot, make_draft(tiny_model, bad, tmp_path / "run"),
                    ready=lambda s: s.info is not None and s.preview is not None)
    try:
        assert "no usable columns" in w.data_view.problem.text()
        qtbot.waitUntil(lambda: not w.header.start.isEnabled(), timeout=10_000)  # no run that fails afterwards
        assert "Data not usable" in w.header.state.text()
        qtbot.keyClick(w, Qt.Key_Return, Qt.ControlModifier)
        assert not w.controller.running and dialogs.kinds() == []
    finally:
        shut(w)


def test_spectra_reach_the_spectra_tab(qtbot, tiny_model, tiny_data, tmp_path):
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, tmp_path / "run", max_steps=4), spectra_every=2)
    try:
        got = []
        w.controller.spectra.connect(got.append)
        with qtbot.waitSignal(w.controller.finished, timeout=60_000):
            qtbot.mouseClick(w.header.start, Qt.LeftButton)
        assert got, "spectra_every=2 over 4 steps sends spectra events"
        calls = []
        view = w.spectra_tab.ensure()
        original = view.set_spectra
        view.set_spectra = lambda step, modules, live=True: (calls.append(step), original(step, modules, live))
        assert calls == []  # hidden: nothing drawn yet
        w.tabs.setCurrentWidget(w.spectra_tab)
        assert calls == [got[-1].step]  # shown: the newest spectra, once
    finally:
        shut(w)


def fail_with(monkeypatch, failed):
    """engine.train.train replaced by one that fails at once, as the real one reports failures."""
    import lora_studio.engine.train as engine_train

    def fake(config, on_event=None, control=None, resume=None, spectra_every=0, overwrite=False):
        on_event(failed)
        return failed

    monkeypatch.setattr(engine_train, "train", fake)


def test_out_of_memory_shows_the_tips(window, qtbot, dialogs, monkeypatch):
    from lora_studio.engine.train import Failed

    tips = "out of GPU memory at batch 4 x 32 tokens: lower the batch size (now 4; …); shorten max length"
    fail_with(monkeypatch, Failed(tips, "oom", 3))
    with qtbot.waitSignal(window.controller.finished, timeout=10_000):
        qtbot.mouseClick(window.header.start, Qt.LeftButton)
    assert [(d.kind, d.title) for d in dialogs.shown] == [("warning", "Out of memory")]
    assert dialogs.shown[0].text == tips
    assert window.header.start.isEnabled() and window.header.state.text() == "Failed"


def test_a_failed_run_s_banner_offers_details_and_dismiss(window, qtbot, dialogs, monkeypatch):
    """GUI #46: the failure banner had no action and stayed up. Details… shows the dialog again;
    Dismiss takes the banner away."""
    from lora_studio.engine.train import Failed

    tips = "out of GPU memory at batch 4 x 32 tokens: lower the batch size (now 4; …); shorten max length"
    fail_with(monkeypatch, Failed(tips, "oom", 3))
    with qtbot.waitSignal(window.controller.finished, timeout=10_000):
        qtbot.mouseClick(window.header.start, Qt.LeftButton)
    banner = window.training.banner
    assert banner.isVisible() and banner.property("kind") == "bad"
    assert [banner.first.text(), banner.second.text()] == ["Details…", "Dismiss"]
    qtbot.mouseClick(banner.first, Qt.LeftButton)
    assert [(d.kind, d.title, d.text) for d in dialogs.shown] == [("warning", "Out of memory", tips)] * 2
    qtbot.mouseClick(banner.second, Qt.LeftButton)
    assert not banner.isVisible()


def test_a_disk_full_failure_with_a_checkpoint_offers_continue(qtbot, tmp_path):
    """A full disk keeps the last checkpoint, and the run goes on from it once space is freed: the
    banner's second action continues that run (other failures offer Dismiss: continuing as it is
    would fail again)."""
    import errno

    from lora_studio.engine.errors import failure_of
    from lora_studio.engine.events import Failed
    from lora_studio.ui.training.view import TrainingView
    from lora_studio.ui.training.worker import TrainingController

    run = tmp_path / "run"
    (run / "checkpoints" / "step-4").mkdir(parents=True)
    (run / "checkpoints" / "step-4" / "trainer_state.pt").write_bytes(b"x")
    view = TrainingView(TrainingController())
    qtbot.addWidget(view)
    view.run_dir = str(run)
    f = failure_of(OSError(errno.ENOSPC, "No space left on device", str(run / "checkpoints")), 7, str(run))
    view._finished(Failed(f.message, f.kind, f.detail, f.step))
    assert [view.banner.first.text(), view.banner.second.text()] == ["Details…", "Continue run"]
    with qtbot.waitSignal(view.sig_continue) as got:
        qtbot.mouseClick(view.banner.second, Qt.LeftButton)
    assert got.args == [str(run)]
    view._finished(Failed("the loss is NaN at step 5", "nonfinite", "", 5))
    assert view.banner.second.text() == "Dismiss"


def test_disk_full_is_not_called_a_bug(window, qtbot, dialogs, monkeypatch):
    import errno

    from lora_studio.engine.errors import failure_of

    failed = failure_of(OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints"), 7, "/runs/x")
    assert failed.kind == "disk"
    fail_with(monkeypatch, failed)
    with qtbot.waitSignal(window.controller.finished, timeout=10_000):
        qtbot.mouseClick(window.header.start, Qt.LeftButton)
    assert dialogs.kinds() == ["warning"] and dialogs.shown[0].title == "Disk full"
    assert "free some space" in dialogs.shown[0].text
