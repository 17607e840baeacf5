"""GUI walkthrough of 2026-12-06, what a laptop screen shows (issue 22): N18 (Runs overlay), N19
(Study plots), items 17, 18 and 31 of its table. Each test asserts on what the widgets draw."""

from __future__ import annotations

import math

from lora_studio.ui.training.plots import TrainingPlots


def _ticks(axis, lo, hi, size=400):
    """The (value, label) pairs an axis draws over the view range lo..hi."""
    out = []
    for _spacing, values in axis.tickValues(lo, hi, size):
        out += zip(values, axis.tickStrings(values, axis.scale, _spacing))
    return out


def _y_range(plots, plot):
    plots.view.scene().prepareForPaint()  # where pyqtgraph applies a pending auto-range
    return plot.getViewBox().viewRange()[1]


def test_a_loaded_runs_accuracy_stays_on_0_to_100(qtbot):
    """Item 18: a continued (or opened) run's curves come through load_metrics -> clear(), which
    auto-ranged the accuracy plot around its points (-20 ... 80 % for one eval at 30 %)."""
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.set_task("classification")
    records = [dict(step=i, loss=1.0 / i, lr=1e-3, grad_norm=0.5 + 0.01 * i) for i in range(1, 11)]
    records.append(dict(step=5, eval_loss=0.5, accuracy=0.3))
    plots.load_metrics(records)
    lo, hi = _y_range(plots, plots.side)
    assert lo <= 0 and hi >= 100 and hi - lo < 110
    assert list(plots.side_curve.yData) == [30.0]
    plots.clear()  # a new run, then its first eval
    plots.add_eval(2, 0.6, 0.8)
    plots.flush()
    lo, hi = _y_range(plots, plots.side)
    assert lo <= 0 and hi >= 100 and hi - lo < 110
    # a language model's side plot is the gradient norm: it follows its values again
    plots.set_task("causal-lm")
    plots.load_metrics(records)
    lo, hi = _y_range(plots, plots.side)
    assert hi < 5


def test_grad_norm_and_lr_axes_show_plain_numbers(qtbot):
    """Item 17: no "(x0.001)" SI prefix on the gradient norm or the learning rate."""
    plots = TrainingPlots()
    qtbot.addWidget(plots)
    plots.set_task("classification")
    for plot in (plots.norm_plot, plots.lr):
        axis = plot.getAxis("left")
        assert not axis.autoSIPrefix and axis.scale == 1.0
        labels = [label for _, label in _ticks(axis, 0.0, 0.002)]
        assert "0.002" in labels or "0.0020" in labels, labels
        assert "(x0.001)" not in axis.labelString()
