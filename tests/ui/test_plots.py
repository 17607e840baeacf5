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
    assert plots.loss.getAxis("left").labelText == "nats / token"
    assert plots.side.getAxis("left").labelText == "%"
    assert plots.side.getViewBox().viewRange()[1][1] >= 100  # the frame is 0-100 %, not around one point
    for p in (plots.loss, plots.side, plots.lr):
        assert p.menuEnabled()
    plots.loss.setLogMode(y=True)  # what the menu's "Log Y" does
    assert plots.loss.getAxis("left").logMode
    plots.set_task("causal-lm")
    assert plots.side.getAxis("left").labelText == "‖g‖₂"
