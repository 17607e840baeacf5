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
    from gui_helpers import axis_labels

    return [text for _rect, text in axis_labels(axis)]


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


# -- N18: the Runs tab's overlay and its Date column at 1280 px ----------------------------------

def _runs_folder(root, finished_run):
    """Three runs of the same data: the finished one, one at rank 4 on q,k,v,o, and one inside a
    study (a long Run name)."""
    import dataclasses
    import json
    import shutil

    from lora_studio.config import RunConfig
    from lora_studio.engine import runfolder

    shutil.copytree(finished_run, root / "run-20261206-140312")
    shutil.copytree(finished_run, root / "run-20261206-141544")
    cfg = RunConfig.load(root / "run-20261206-141544" / runfolder.RUN_FILE)
    lora = dataclasses.replace(cfg.lora, rank=4, targets=["q", "k", "v", "o"])
    dataclasses.replace(cfg, lora=lora).save(root / "run-20261206-141544" / runfolder.RUN_FILE)
    study = root / "study-20261206-160000"
    study.mkdir()
    shutil.copytree(finished_run, study / "q-k-v-o_r16_s42")
    (study / "sweep.json").write_text(json.dumps({"runs": [], "complete": True}))
    return [root / "run-20261206-140312", root / "run-20261206-141544"]


def test_runs_overlay_colour_blind_safe_named_by_what_differs_legend_outside(qtbot, window, finished_run, tmp_path):
    """N18: the first two overlaid runs were red and green, named by their timestamps only, with the
    legend drawn over the curves."""
    import pyqtgraph as pg
    from PySide6.QtCore import QPoint, QRect

    root = tmp_path / "runs"
    root.mkdir()
    first, second = _runs_folder(root, finished_run)
    window.resize(1280, 800)
    window.runs.set_root(root)
    window.tabs.setCurrentWidget(window.runs.parentWidget())
    panel = window.runs
    panel.select([first, second])
    curves = [item for item in panel.plot.getPlotItem().listDataItems() if item.name().endswith("· train")]
    colours = [c.opts["pen"].color().name() for c in curves]
    assert colours == ["#0072b2", "#e69f00"]  # Okabe-Ito blue, then orange: never red beside green
    names = [e[0] for e in panel.legend_entries[:2]]
    by_path = dict(zip(panel.selected(), names))
    assert by_path[str(first)] == "run-20261206-140312 · r 8 · q,v"
    assert by_path[str(second)] == "run-20261206-141544 · r 4 · q,k,v,o"
    assert [e[0] for e in panel.legend_entries[2:]] == ["train", "eval"]
    # the legend is a label under the plot, outside the curves' area
    assert not any(isinstance(item, pg.LegendItem) for item in panel.plot.scene().items())
    assert panel.legend.isVisible() and not panel.plot.isAncestorOf(panel.legend)
    vb = panel.plot.getPlotItem().getViewBox()
    data = vb.mapRectToScene(vb.boundingRect()).toRect()
    data = QRect(panel.plot.mapToGlobal(data.topLeft()), data.size())
    shown = QRect(panel.legend.mapToGlobal(QPoint(0, 0)), panel.legend.size())
    assert not data.intersects(shown) and shown.top() >= data.bottom()
    assert "r&nbsp;8" in panel.legend.text() and "q,k,v,o" in panel.legend.text()


def test_runs_date_column_fits_at_1280(qtbot, window, finished_run, tmp_path):
    """N18: the Date column was cut at 1280 px ("2026-12-06 …"): a compact date that fits whole,
    the full date and time in its tooltip."""
    import re
    import time

    root = tmp_path / "runs"
    root.mkdir()
    _runs_folder(root, finished_run)
    window.resize(1280, 800)
    window.runs.set_root(root)
    window.tabs.setCurrentWidget(window.runs.parentWidget())
    table = window.runs.table
    qtbot.waitUntil(lambda: table.viewport().width() > 600)
    date = table.columnCount() - 1
    assert table.horizontalHeaderItem(date).text() == "Date"
    assert not table.horizontalScrollBar().isVisible()
    inside = table.columnViewportPosition(date) + table.columnWidth(date)
    assert table.columnViewportPosition(date) >= 0 and inside <= table.viewport().width()
    metrics = table.fontMetrics()
    for r in range(table.rowCount()):
        item = table.item(r, date)
        assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d", item.text()), item.text()
        assert metrics.horizontalAdvance(item.text()) + 8 <= table.columnWidth(date)
        row = window.runs.rows[r]
        assert item.toolTip() == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.date))


def test_short_date_and_overlay_names():
    """A date of an earlier year keeps its year; a run is named by folder, rank and targets, then
    up to two other settings that differ (learning rate first), '…' when more differ."""
    import time

    from lora_studio.ui.runs_panel import RunRow, overlay_names, short_date

    now = time.mktime((2026, 12, 6, 15, 0, 0, 0, 0, -1))
    assert short_date(time.mktime((2026, 12, 6, 14, 3, 0, 0, 0, -1)), now) == "12-06 14:03"
    assert short_date(time.mktime((2025, 3, 1, 9, 0, 0, 0, 0, -1)), now) == "2025-03-01"

    def row(name, **settings):
        base = {"lora.rank": "r 8", "lora.targets": "q,v", "train.lr": "lr 0.001", "lora.dora": "no DoRA",
                "train.seed": "seed 42"}
        return RunRow("/r/" + name, name, "finished", False, 8, 8, "m", "q+v", 8, None, None, None, 0.0,
                      settings={**base, **settings})

    assert overlay_names([row("a"), row("b")]) == ["a · r 8 · q,v", "b · r 8 · q,v"]
    assert overlay_names([row("a"), row("b", **{"train.lr": "lr 0.0005"})]) == ["a · r 8 · q,v · lr 0.001",
                                                                                 "b · r 8 · q,v · lr 0.0005"]
    many = {"lora.rank": "r 4", "train.seed": "seed 1", "train.lr": "lr 0.1", "lora.dora": "DoRA"}
    assert overlay_names([row("a"), row("s/b", **many)])[1] == "b · r 4 · q,v · lr 0.1 · DoRA …"


def test_spectra_header_names_the_live_run_not_training(qtbot, tmp_path):
    """Item 31: the live run's Spectra header read "step 60 · Training"; it says "live · step N"
    and names the run's folder, and once the run ends, "step N" and the same name."""
    import tiny
    from lora_studio import LoraSpec, inject
    from lora_studio.engine.spectra import analyse
    from lora_studio.ui.spectra.view import SpectraView

    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    view = SpectraView()
    qtbot.addWidget(view)
    view.resize(1280, 700)
    view.show()
    run = tmp_path / "run-20261206-140312"
    run.mkdir()
    view.set_run_dir(str(run))
    view.set_spectra(3, analyse(tiny.randomize_adapters(model, seed=1)))
    assert (view.step_chip.text(), view.title.text()) == ("live · step 3", "run-20261206-140312")
    assert view.title.toolTip() == str(run)
    view.training_ended()
    assert (view.step_chip.text(), view.title.text()) == ("step 3", "run-20261206-140312")
    view.shutdown()
