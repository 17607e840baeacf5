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


# -- N19: the Study tab's plots at a laptop's 1280 px ------------------------------------------

def _drawn_labels(axis) -> list[str]:
    """The tick labels an axis paints now (pyqtgraph's own draw specs)."""
    from PySide6.QtGui import QImage, QPainter

    image = QImage(8, 8, QImage.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in specs[2]] if specs else []


def _contrast(a, b) -> float:
    """WCAG contrast ratio of two QColors."""
    def lum(c):
        ch = [x / 255 for x in (c.red(), c.green(), c.blue())]
        ch = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in ch]
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


PHI = [[0.24, 0.34, 0.35, 0.39, 0.40, 0.45, 0.50, 0.95]]  # r = 1 vs r = 8: one row of 8


def _study(qtbot, tmp_path):
    """A Study tab at the size the window gives it at 1280 x 800, showing a finished sweep of ranks
    1, 2, 4, 8 with two targets sets."""
    from lora_studio.ui.study import StudyTab

    w = StudyTab()
    qtbot.addWidget(w)
    w.resize(890, 570)
    w.show()
    runs = []
    for targets in (["q", "v"], ["q", "k", "v", "o"]):
        for rank in (1, 2, 4, 8):
            name = f"{'-'.join(targets)}_r{rank}_s42"
            runs.append(dict(name=name, rank=rank, targets=targets, run_dir=str(tmp_path / name), trainable_params=100,
                             final_loss=0.69 - 0.001 * rank, eval_loss=0.695 - 0.0005 * rank))
            w.loss.add_run(name)
            for step in range(1, 5):
                w.loss.add_point(name, step, 0.7 - 0.002 * step * rank)
    w.show_summary({"runs": runs, "similarity": [
        {"targets": "q-v", "seed": 42, "rank_a": 1, "rank_b": 8, "phi": {"query": PHI}}]})
    qtbot.waitUntil(lambda: w.phi.heatmap.getPlotItem().getViewBox().height() > 100)
    w.loss.flush()
    return w


def test_study_heatmap_shows_every_value_readable(qtbot, tmp_path):
    """N19: φ of r = 1 vs 8 was a row of eight 21 px slivers, too narrow for their values; the
    larger rank now runs down the side and every cell shows its value in the colour (dark or
    white) that contrasts more with the cell."""
    import numpy as np
    import pyqtgraph as pg

    heatmap = _study(qtbot, tmp_path).phi.heatmap
    np.testing.assert_array_equal(heatmap.data, np.array(PHI).T)  # j (1..8) down, i across
    assert len(heatmap.cells) == 8
    cmap, (lo, hi) = heatmap.bar.colorMap(), heatmap.bar.levels()
    for cell, value in zip(heatmap.cells, np.array(PHI).T.ravel()):
        assert cell.isVisible() and cell.textItem.toPlainText() == f"{value:.2f}"
        background = cmap.map((value - lo) / (hi - lo), mode="qcolor")
        other = pg.mkColor("#ffffff" if cell.color.name() != "#ffffff" else "#10131a")
        assert _contrast(cell.color, background) >= max(4.0, _contrast(other, background)), value
    assert heatmap.getPlotItem().getAxis("left").labelText == "j (larger rank)"


def test_study_legends_sit_under_the_plots_not_on_the_curves(qtbot, tmp_path):
    """N19: pyqtgraph's legends were drawn inside the plots, over the curves."""
    import pyqtgraph as pg
    from PySide6.QtCore import QPoint, QRect

    w = _study(qtbot, tmp_path)
    for plot in (w.loss, w.loss_vs_rank):
        assert not any(isinstance(item, pg.LegendItem) for item in plot.scene().items())
        legend = plot.legend
        assert legend.isVisible() and not plot.isAncestorOf(legend)
        vb = plot.getPlotItem().getViewBox()
        data = vb.mapRectToScene(vb.boundingRect()).toRect()
        data = QRect(plot.mapToGlobal(data.topLeft()), data.size())
        shown = QRect(legend.mapToGlobal(QPoint(0, 0)), legend.size())
        assert not data.intersects(shown)
        assert shown.top() >= data.bottom()  # under the plot
    for name in w.loss.curves:  # every run named once, whole (a hyphen never breaks a name)
        assert name.replace("-", "\u2011") in w.loss.legend.text()
    assert [e[0] for e in w.loss_vs_rank.legend_entries] == ["q,v", "q,k,v,o", "train", "eval"]


def test_study_rank_axis_is_labelled_at_the_swept_ranks(qtbot, tmp_path):
    """N19: a log axis labelled its minor ticks "2 3 4 5 6 7 8 9" (no 1, no 10) until a sweep
    ended; the y axes drew a loss of 0.69 as "690 (x0.001)"."""
    from lora_studio.ui.study.plots import LossVsRank

    empty = LossVsRank()
    qtbot.addWidget(empty)
    empty.resize(300, 250)
    empty.show()
    qtbot.waitExposed(empty)
    assert _drawn_labels(empty.getPlotItem().getAxis("bottom")) == ["1", "2", "4", "8", "16", "32", "64"]
    empty.set_ranks([16, 4])  # what Start does with the planned ranks
    assert _drawn_labels(empty.getPlotItem().getAxis("bottom")) == ["4", "16"]

    w = _study(qtbot, tmp_path)
    assert _drawn_labels(w.loss_vs_rank.getPlotItem().getAxis("bottom")) == ["1", "2", "4", "8"]
    for plot in (w.loss, w.loss_vs_rank):
        axis = plot.getPlotItem().getAxis("left")
        assert "(x" not in axis.labelString()
        labels = _drawn_labels(axis)
        assert labels and all(abs(float(t)) < 1 for t in labels), labels  # 0.69, not 690
