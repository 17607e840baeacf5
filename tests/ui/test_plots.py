"""Plot basics (issue 13 item 8): axis labels with units, accuracy in %, the context menu (log
scale, export) enabled."""

from lora_studio.ui.training.plots import TrainingPlots


def test_axes_units_accuracy_percent_and_menu(qtbot):
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.set_task("classification")
    plots.add_step(1, 0.7, 1e-3, 0.5)
    plots.add_eval(1, 0.69, 0.75)
    plots.flush()
    assert list(plots.side_curve.yData) == [75.0]
    assert plots.loss.getAxis("left").labelText == "nats / example"  # a classifier's loss is per example
    assert plots.side.getAxis("left").labelText == "%"
    assert plots.side.getViewBox().viewRange()[1][1] >= 100  # the frame is 0-100 %, not around one point
    for p in (plots.loss, plots.side, plots.lr):
        assert p.menuEnabled()
    plots.loss.setLogMode(y=True)  # what the menu's "Log Y" does
    assert plots.loss.getAxis("left").logMode
    plots.set_task("causal-lm")
    assert plots.side.getAxis("left").labelText == "‖g‖₂"
    assert plots.loss.getAxis("left").labelText == "nats / token"
    assert not plots.lr.getAxis("left").autoSIPrefix  # 2e-4 is drawn as 0.0002, not "0.2 (x0.001)"


def test_grad_norm_epochs_legend_log_and_saving(qtbot, tmp_path, monkeypatch):
    import csv

    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QFileDialog

    from lora_studio.ui.training.view import TrainingView
    from lora_studio.ui.training.worker import TrainingController
    from lora_studio.engine.events import Eval, Step

    view = TrainingView(TrainingController())
    qtbot.addWidget(view)
    view.resize(1000, 600)
    view.show()
    plots, c = view.plots, view.controller
    plots.set_task("classification")
    norms = [0.9, 0.7, 0.5, 0.45, 0.4, 0.3, 0.25]
    for i, g in enumerate(norms, start=1):  # 3 steps per epoch: boundaries after steps 3 and 6
        c.stepped.emit(Step(i, 7, i / 3, 1.0 / i, 1e-3, g, 100.0, float(i), 1.0, 0, 0))
    c.evaluated.emit(Eval(6, 0.3, 0.5))
    plots.flush()
    assert list(plots.norm_curve.yData) == norms  # its own plot for a classifier
    assert plots.norm_plot.scene() is not None and plots.norm_plot.getAxis("left").labelText == "‖g‖₂"
    assert plots.epochs == [(3, 1), (6, 2)]
    marks = [m for m in plots._marks if m.getViewBox() is plots.loss.getViewBox()]
    assert sorted(m.value() for m in marks) == [3, 6]
    # the legend is a label in the bar above the plots, outside their data area
    from PySide6.QtCore import QPoint

    legend_bottom = plots.legend.mapTo(plots, QPoint(0, plots.legend.height())).y()
    assert plots.legend.isVisible() and legend_bottom <= plots.view.mapTo(plots, QPoint(0, 0)).y()
    assert all(name in plots.legend.text() for name in ("train loss", "smoothed", "eval loss"))

    qtbot.mouseClick(plots.log_loss, Qt.LeftButton)
    assert plots.loss.getAxis("left").logMode
    qtbot.mouseClick(plots.log_loss, Qt.LeftButton)
    assert not plots.loss.getAxis("left").logMode

    png, data = tmp_path / "plot.png", tmp_path / "curves.csv"
    answers = iter([(str(png), ""), (str(data), "")])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: next(answers)))
    qtbot.mouseClick(plots.save_plot, Qt.LeftButton)
    qtbot.mouseClick(plots.save_data, Qt.LeftButton)
    image = QImage(str(png))
    assert not image.isNull() and image.width() == plots.view.width()
    rows = list(csv.DictReader(data.open()))
    got = [float(r["value"]) for r in rows if r["series"] == "grad_norm"]
    assert got == norms and [int(r["step"]) for r in rows if r["series"] == "grad_norm"] == list(range(1, 8))
    assert [(int(r["step"]), float(r["value"])) for r in rows if r["series"] == "eval_accuracy_percent"] == [(6, 50.0)]
    assert [float(r["value"]) for r in rows if r["series"] == "train_loss"] == [1.0 / i for i in range(1, 8)]

    plots.set_task("causal-lm")  # the side plot is the gradient norm: no second one
    assert plots.norm_plot.scene() is None
    plots.clear()
    assert plots.epochs == [] and plots._marks == []


def test_a_new_run_starts_on_a_neutral_frame_and_its_first_step_shows(qtbot):
    """Walkthrough: a new run's empty plots kept the previous run's y range (1.365-1.395), and the
    first step drew nothing (a line needs two points)."""
    from lora_studio.ui.training.plots import TrainingPlots

    plots = TrainingPlots()
    qtbot.addWidget(plots)
    for step in range(1, 11):
        plots.add_step(step, 1.38 - step * 1e-3, 1e-3, 0.5)
    plots.flush()
    assert plots.loss.viewRange()[1][0] > 1.3
    plots.clear()
    assert plots.loss.viewRange()[1] == [0.0, 1.0]  # nothing of the previous run's frame
    plots.add_step(1, 2.0, 1e-3, 0.5)
    plots.flush()
    assert plots.ema_curve.opts["symbol"] == "o" and list(plots.ema_curve.xData) == [1]  # a dot
    plots.add_step(2, 1.9, 1e-3, 0.5)
    plots.flush()
    assert plots.ema_curve.opts["symbol"] is None  # a line from the second step on


def test_smoothing_control_recomputes_the_curve_and_the_card_and_is_kept(qtbot):
    """GUI walkthrough #20: the loss curve's smoothing is a control (TensorBoard's debiased EMA).
    Changing it recomputes the whole curve from the raw losses, later steps continue it, the
    loss card shows the new last value at once, and the next window starts with it."""
    import numpy as np
    from PySide6.QtCore import Qt

    from lora_studio.engine.events import Step
    from lora_studio.ui.training.plots import SMOOTHING, smoothed
    from lora_studio.ui.training.view import TrainingView
    from lora_studio.ui.training.worker import TrainingController

    view = TrainingView(TrainingController())
    qtbot.addWidget(view)
    view.resize(1280, 700)
    view.show()
    plots, c = view.plots, view.controller
    assert plots.smoothing.value() == SMOOTHING and plots.smoothing.isVisible()
    losses = [2.0, 1.0, 1.6, 0.8, 1.1, 0.5]
    for i, loss in enumerate(losses[:4], start=1):
        c.stepped.emit(Step(i, 6, i / 6, loss, 1e-3, 1.0, 100.0, float(i), 1.0, 0, 0))
    qtbot.waitUntil(lambda: view.loss.value.text() not in ("", "–"))
    np.testing.assert_allclose(plots.ema.data()[1], smoothed(np.array(losses[:4]), SMOOTHING))
    # the user types 0 (raw) then presses Enter: the curve is the raw losses, and so is the card
    plots.smoothing.selectAll()
    qtbot.keyClicks(plots.smoothing, "0")
    qtbot.keyClick(plots.smoothing, Qt.Key_Return)
    qtbot.waitUntil(lambda: plots.ema.n == 4 and plots.ema.y[3] == 0.8)
    np.testing.assert_allclose(plots.ema.data()[1], losses[:4])
    assert view.loss.value.text() == "0.8000"
    plots.set_smoothing(0.9)
    np.testing.assert_allclose(plots.ema.data()[1], smoothed(np.array(losses[:4]), 0.9))
    assert view.loss.value.text() == f"{smoothed(np.array(losses[:4]), 0.9)[-1]:.4f}"
    for i, loss in enumerate(losses[4:], start=5):  # later steps continue the recomputed curve
        c.stepped.emit(Step(i, 6, i / 6, loss, 1e-3, 1.0, 100.0, float(i), 1.0, 0, 0))
    np.testing.assert_allclose(plots.ema.data()[1], smoothed(np.array(losses), 0.9), rtol=1e-12)
    plots.flush()
    np.testing.assert_allclose(plots.ema_curve.yData, smoothed(np.array(losses), 0.9))
    np.testing.assert_allclose(plots.raw_curve.yData, losses)  # the raw curve is untouched
    again = TrainingView(TrainingController())  # the next session starts with the user's choice
    qtbot.addWidget(again)
    assert again.plots.smoothing.value() == 0.9
    again.plots.add_step(1, 3.0, 1e-3)
    again.plots.add_step(2, 1.0, 1e-3)
    np.testing.assert_allclose(again.plots.ema.data()[1], smoothed(np.array([3.0, 1.0]), 0.9))
