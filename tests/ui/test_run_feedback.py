"""What the window says while a run starts and ends (issue 13 items 7 and 10): model loading,
the baseline evaluation's progress, elapsed time across Continue, the stopped banner's result."""

from PySide6.QtCore import Qt

from lora_studio.engine.events import Eval, Evaluating, Finished, Started


def _started(out, **kw):
    args = dict(out=str(out), total_steps=100, start_step=0, device="cpu", device_name="CPU", precision="fp32",
                trainable_params=10, total_params=100, train_examples=36, validation_examples=12,
                task="classification")
    args.update(kw)
    return Started(**args)


def test_start_is_disabled_while_the_model_loads(qtbot, window):
    window.session.load_model()
    assert window.header.state.text() == "Loading model …"
    assert not window.header.start.isEnabled() and not window.act_start.isEnabled()
    qtbot.keyClick(window, Qt.Key_Return, Qt.ControlModifier)
    assert not window.controller.running
    qtbot.waitUntil(lambda: window.header.start.isEnabled(), timeout=30_000)
    assert window.header.state.text() == "Ready"


def test_baseline_eval_progress_shows_in_the_header_and_step_card(qtbot, window, monkeypatch):
    seen = []
    window.controller.evaluating.connect(lambda ev: seen.append((window.header.state.text(),
                                                                 window.training.step.sub.text())))
    with qtbot.waitSignal(window.controller.finished, timeout=60_000):
        qtbot.mouseClick(window.header.start, Qt.LeftButton)
    assert seen, "the run evaluated the base model"
    header, sub = seen[-1]
    assert header.startswith("Evaluating base model… ") or header.startswith("Evaluating step ")
    assert sub == header
    first_header = seen[0][0]
    assert first_header.startswith("Evaluating base model… 0/")


def test_elapsed_continues_and_stopped_banner_hides_the_baseline(qtbot, window, tmp_path):
    view, c = window.training, window.controller
    c.started.emit(_started(tmp_path, start_step=40, elapsed_before=75.0))
    assert view.eta.sub.text() == "elapsed 1m 15s"
    c.evaluated.emit(Eval(0, 0.6931, 0.5))  # the baseline, before any training
    c.finished.emit(Finished(step=5, out=str(tmp_path), stopped=True, eval_loss=0.6931, accuracy=0.5))
    assert "0.6931" not in view.banner.text.text() and "Stopped at step 5" in view.banner.text.text()
    assert view.banner.first.text() == "Continue run" and view.banner.second.text() == "Export…"
    c.evaluated.emit(Eval(4, 0.5123, 0.75))
    c.finished.emit(Finished(step=5, out=str(tmp_path), stopped=True, eval_loss=0.5123, accuracy=0.75))
    assert "Last eval (step 4): loss 0.5123" in view.banner.text.text()
    continued = []
    window.training.sig_continue.connect(lambda: continued.append(1))
    qtbot.mouseClick(view.banner.first, Qt.LeftButton)
    assert continued == [1]


def test_evaluating_text():
    from lora_studio.ui.training.view import evaluating_text

    assert evaluating_text(Evaluating(0, 120, 200)) == "Evaluating base model… 120/200"
    assert evaluating_text(Evaluating(30, 1200, 2000)) == "Evaluating step 30… 1,200/2,000"


def test_missing_data_file_clears_the_rows_and_blocks_start(qtbot, window, tmp_path, tiny_data):
    view = window.data_view
    assert view.model.rowCount() > 0
    headers = [view.model.headerData(i, Qt.Horizontal) for i in range(view.model.columnCount())]
    assert headers == ["text", "label"]  # not "text · text"
    with qtbot.waitSignal(window.session.data_failed, timeout=30_000):
        window.session.set_data(path=str(tmp_path / "missing.jsonl"))
    assert view.model.rowCount() == 0 and "Could not read" in view.source.text()
    assert not window.header.start.isEnabled()
    with qtbot.waitSignal(window.session.data_stats, timeout=60_000):
        window.session.set_data(path=str(tiny_data))
    assert view.model.rowCount() > 0 and window.header.start.isEnabled()
