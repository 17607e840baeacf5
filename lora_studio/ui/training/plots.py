"""Live training curves (pyqtgraph): loss raw and smoothed with eval loss on the same step axis,
eval accuracy (classification) or gradient norm, and the learning rate.

Points go into growing numpy buffers as signals arrive; a 10 Hz timer pushes them to the
curves only when something changed, and every plot downsamples (peak) and clips to the view,
so 100k+ points stay smooth.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                               QWidget)

from lora_studio.ui import style
from lora_studio.ui.axes import ShortNumberAxis, StepAxis, fit_width

SMOOTHING = 0.8  # EMA weight of the past, debiased as TensorBoard does (the default of the control)
SMOOTHING_KEY = "training/smoothing"  # QSettings: the user's choice, kept across sessions


def smoothed(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average: v_k = w v_(k-1) + (1 - w) x_k, shown as
    v_k / (1 - w^k). Weight 0 is the raw curve."""
    out = np.empty(len(values))
    value = 0.0
    for k, x in enumerate(values, 1):
        value = weight * value + (1 - weight) * x
        out[k - 1] = value / (1 - weight ** k)
    return out


class Series:
    """x/y float64 buffers that grow by doubling."""

    def __init__(self, capacity: int = 1024):
        self.x = np.empty(capacity)
        self.y = np.empty(capacity)
        self.n = 0

    def append(self, x: float, y: float):
        if self.n == len(self.x):
            self.x = np.concatenate([self.x, np.empty_like(self.x)])
            self.y = np.concatenate([self.y, np.empty_like(self.y)])
        self.x[self.n], self.y[self.n] = x, y
        self.n += 1

    def extend(self, xs, ys):
        for x, y in zip(xs, ys):
            self.append(x, y)

    def data(self):
        return self.x[:self.n], self.y[:self.n]

    def clear(self):
        self.n = 0


def _saved_smoothing() -> float:
    try:
        value = float(QSettings().value(SMOOTHING_KEY, SMOOTHING))
    except (TypeError, ValueError):
        return SMOOTHING
    return min(0.99, max(0.0, value)) if math.isfinite(value) else SMOOTHING


class TrainingPlots(QWidget):
    """Loss (train, smoothed, eval) over the run; below it eval accuracy (classification), the
    gradient norm and the learning rate. Dashed vertical lines mark epoch boundaries. A bar above
    the plots: log scale for the loss, the smoothing of the loss curve, "Save plot…" (PNG) and
    "Save data…" (CSV)."""

    smoothing_changed = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 0, 0)
        self.log_loss = QCheckBox("Log scale")
        self.log_loss.setToolTip("A logarithmic axis for the loss plot: late, small improvements stay visible")
        self.save_plot = QPushButton("Save plot…")
        self.save_plot.setToolTip("The plots as a PNG image")
        self.save_data = QPushButton("Save data…")
        self.save_data.setToolTip("The curves as CSV: series, step, value")
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 0.99)
        self.smoothing.setSingleStep(0.05)
        self.smoothing.setDecimals(2)
        self.smoothing.setValue(_saved_smoothing())
        self.smoothing.setKeyboardTracking(False)  # on Enter or leaving the field: "0.3" is not "0" first
        self.smoothing.setToolTip("Smoothing of the loss curve and the loss card: the weight of the past in an "
                                  "exponential moving average, debiased as in TensorBoard (0 = raw, 0.99 = "
                                  "very smooth). The raw curve stays drawn thin behind it.")
        smoothing_label = QLabel("Smoothing")
        smoothing_label.setBuddy(self.smoothing)
        # the legend is a label in this bar, outside the plots: it never covers a curve
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.RichText)
        # wraps between its entries on a narrow window: the bar never sets the window's minimum width
        self.legend.setWordWrap(True)
        bar.addWidget(self.log_loss)
        bar.addSpacing(12)
        bar.addWidget(smoothing_label)
        bar.addWidget(self.smoothing)
        bar.addSpacing(12)
        bar.addWidget(self.legend, 1)  # the room left: one line whenever it fits
        bar.addWidget(self.save_plot)
        bar.addWidget(self.save_data)
        lay.addLayout(bar)
        self.view = pg.GraphicsLayoutWidget()
        lay.addWidget(self.view, 1)
        # whole steps only on every step axis; the learning rate in short numbers, from 0
        self.loss = self.view.addPlot(row=0, col=0, colspan=3, axisItems={"bottom": StepAxis()})
        self.side = self.view.addPlot(row=1, col=0, axisItems={"bottom": StepAxis()})
        self.norm_plot = self.view.addPlot(row=1, col=1, axisItems={"bottom": StepAxis()})
        self.lr = self.view.addPlot(row=1, col=2, axisItems={"bottom": StepAxis(), "left": ShortNumberAxis()})
        self.view.ci.layout.setRowStretchFactor(0, 2)  # the loss is what a short window must keep
        self.view.ci.layout.setRowStretchFactor(1, 1)
        self.view.ci.setSpacing(10)
        # no setXLink: pyqtgraph links views by screen position, wrong for plots of other widths;
        # set_total frames all three on the same steps instead
        self.raw_curve = self.loss.plot()
        self.ema_curve = self.loss.plot()
        self.eval_curve = self.loss.plot(symbol="o", symbolSize=7)
        self.legend_names = ["train loss", "smoothed", "eval loss"]
        self.side_curve = self.side.plot(symbol="o", symbolSize=6)
        self.norm_curve = self.norm_plot.plot()
        self.lr_curve = self.lr.plot()
        # preference runs (task "preference"): reward accuracy and the completions' log-probs take
        # the places of the gradient norm and the learning rate; the side plot is the reward margin
        self.reward_plot, self.logp_plot = (pg.PlotItem(axisItems={"bottom": StepAxis()}) for _ in range(2))
        self.reward_curve = self.reward_plot.plot()
        self.chosen_curve, self.rejected_curve = self.logp_plot.plot(), self.logp_plot.plot()
        self.plots = (self.loss, self.side, self.norm_plot, self.lr, self.reward_plot, self.logp_plot)
        self.grids = []
        for p in self.plots:
            # a GridItem, not showGrid(): the axes' grid costs several times more to paint
            grid = pg.GridItem(textPen=None)
            grid.setTickSpacing(x=[None], y=[None])  # one level of lines: a third of the paint time
            grid.setZValue(-100)
            p.addItem(grid, ignoreBounds=True)
            self.grids.append(grid)
            p.getAxis("left").enableAutoSIPrefix(False)  # a grad norm of 0.4 is drawn as 0.4, not "400 (x0.001)"
            p.setDownsampling(auto=True, mode="peak")
            p.setClipToView(True)
            p.setMenuEnabled(True)  # right click: log scale, and Export… (PNG, SVG, CSV)
            p.getViewBox().setMouseMode(pg.ViewBox.RectMode)
        self.raw, self.ema, self.eval, self.acc, self.norm, self.rate = (Series() for _ in range(6))
        self.margin, self.reward_acc, self.chosen, self.rejected = (Series() for _ in range(4))
        self.epochs: list[tuple[int, int]] = []  # (step, epoch number starting there), epoch >= 1
        self._marks: list[pg.InfiniteLine] = []
        self._ema_state = (0.0, 0)
        self._weight = self.smoothing.value()
        self._last_epoch = None
        self.task = "classification"
        self.total = 0
        self._lr_top = math.nan  # the peak the lr plot is framed on
        self._dirty = False
        self.timer = QTimer(self, interval=100)
        self.timer.timeout.connect(self.flush)
        self.timer.start()
        self.log_loss.toggled.connect(lambda on: self.loss.setLogMode(y=on))
        self.smoothing.valueChanged.connect(self.set_smoothing)
        self.save_plot.clicked.connect(self._ask_save_plot)
        self.save_data.clicked.connect(self._ask_save_data)
        self.apply_theme(style.current())
        self.set_task("classification")

    # -- data ----------------------------------------------------------------------------
    def clear(self):
        for s in (self.raw, self.ema, self.eval, self.acc, self.norm, self.rate, self.margin, self.reward_acc,
                  self.chosen, self.rejected):
            s.clear()
        self._ema_state = (0.0, 0)
        self._last_epoch = None
        self.epochs = []
        self._draw_epochs()
        self.total = 0
        self._lr_top = math.nan
        self._dirty = True
        self.flush()
        for p in self.plots:  # a new run starts on a neutral frame, not on the previous run's ranges
            p.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            p.enableAutoRange()
        self._frame_percent()  # a continued run's one eval point must not auto-range 0-100 % (GUI #18)

    def _frame_percent(self):
        """Accuracies (a classifier's eval accuracy, a preference run's reward accuracy) on 0-100 %."""
        for plot, on in ((self.side, self.task == "classification"), (self.reward_plot, self.task == "preference")):
            if on:
                plot.setYRange(0, 100, padding=0.02)
            else:  # the side plot of a language model is the gradient norm: its own range
                plot.enableAutoRange(axis="y")

    def set_task(self, task: str):
        self.task = task
        classify = task == "classification"
        prefer = task == "preference"
        for p in (self.reward_plot, self.logp_plot):
            if p.scene() is not None:
                self.view.ci.removeItem(p)
        if self.lr.scene() is None:  # back from a preference layout: the language model's, first
            self.view.addItem(self.lr, row=1, col=1, colspan=2)
        self.side.setTitle("Eval accuracy" if classify else "Reward margin" if prefer else "Gradient norm",
                           size="10pt")
        self.side.setLabel("left", "%" if classify else "β·Δlog π" if prefer else "‖g‖₂",
                           color=style.colors(style.current())["muted"])
        self.loss.setLabel("left", self._loss_unit(), color=style.colors(style.current())["muted"])
        self._frame_percent()
        self.side_curve.setSymbol("o" if classify else None)
        # a language model's side plot is already the gradient norm: the third plot goes
        shown = self.norm_plot.scene() is not None
        if classify and not shown:
            self.view.ci.removeItem(self.lr)
            self.view.addItem(self.norm_plot, row=1, col=1)
            self.view.addItem(self.lr, row=1, col=2)
        elif not classify and shown:
            self.view.ci.removeItem(self.norm_plot)
            self.view.ci.removeItem(self.lr)
            self.view.addItem(self.lr, row=1, col=1, colspan=2)
        if prefer:
            self.view.ci.removeItem(self.lr)
            self.view.addItem(self.reward_plot, row=1, col=1)
            self.view.addItem(self.logp_plot, row=1, col=2)
        self._dirty = True

    def set_total(self, total: int):
        """Frame the x axis on the whole run, so the curve grows into it."""
        self.total = total
        if total > 0:
            for p in self.plots:
                p.setXRange(0, total, padding=0.02)
        if self.epochs:  # an epoch name near the new end goes to the left of its line
            self._draw_epochs()

    def add_step(self, step: int, loss: float, lr: float, grad_norm: float = math.nan,
                 epoch: float | None = None):
        """`epoch`: Step.epoch (fractional); a step whose whole epoch number grew gets a mark."""
        if epoch is not None and math.isfinite(epoch):
            whole = int(math.floor(epoch + 1e-9))
            if self._last_epoch is not None and whole > self._last_epoch:
                self.epochs.append((step, whole))
                self._draw_epochs()
            self._last_epoch = whole
        if math.isfinite(loss):
            self.raw.append(step, loss)
            w = self._weight
            value, k = self._ema_state
            value, k = w * value + (1 - w) * loss, k + 1
            self._ema_state = (value, k)
            self.ema.append(step, value / (1 - w ** k))
        self.rate.append(step, lr)
        if math.isfinite(grad_norm):
            self.norm.append(step, grad_norm)
        self._dirty = True

    def set_smoothing(self, weight: float):
        """Smooth the loss curve with another weight: the whole curve is recomputed from the raw
        losses (and later steps continue it); the choice is kept for the next session."""
        weight = min(0.99, max(0.0, float(weight)))
        if weight == self._weight:
            return
        self._weight = weight
        if self.smoothing.value() != weight:
            self.smoothing.setValue(weight)
        QSettings().setValue(SMOOTHING_KEY, weight)
        xs, ys = self.raw.data()
        xs, ys = xs.copy(), ys.copy()
        self.ema.clear()
        self.ema.extend(xs, smoothed(ys, weight))
        value = 0.0
        for y in ys:  # the state later steps continue from
            value = weight * value + (1 - weight) * y
        self._ema_state = (value, len(ys))
        self._dirty = True
        self.flush()
        self.smoothing_changed.emit(weight)

    def add_stats(self, step: int, stats: dict):
        """A preference step's numbers (Step.stats, or a metrics.jsonl row): reward margin and
        accuracy, the chosen and rejected completions' log-probs."""
        for key, series, scale in (("reward_margin", self.margin, 1.0), ("reward_accuracy", self.reward_acc, 100.0),
                                   ("chosen_logps", self.chosen, 1.0), ("rejected_logps", self.rejected, 1.0)):
            value = stats.get(key)
            if value is not None and math.isfinite(value):
                series.append(step, scale * value)
        self._dirty = True

    def add_eval(self, step: int, eval_loss: float, accuracy: float | None = None):
        if eval_loss is not None and math.isfinite(eval_loss):
            self.eval.append(step, eval_loss)
        if accuracy is not None:
            self.acc.append(step, 100.0 * accuracy)  # in %, as the cards say
        self._dirty = True

    def load_metrics(self, records: list[dict]):
        """Curves of a run folder's metrics.jsonl (engine.train.read_metrics)."""
        self.clear()
        for r in records:
            if "loss" in r:
                self.add_step(r["step"], r["loss"], r.get("lr", math.nan), r.get("grad_norm", math.nan),
                              r.get("epoch"))
                if "reward_margin" in r:
                    self.add_stats(r["step"], r)
            if "eval_loss" in r:
                self.add_eval(r["step"], r["eval_loss"], r.get("accuracy"))
        self.flush()
        for p in self.plots:
            p.enableAutoRange(axis="y")
        self._frame_percent()  # accuracies keep their 0-100 % frame
        self._lr_top = math.nan  # and the learning rate its 0 … peak
        self._frame_lr()
        last = max((r["step"] for r in records), default=0)
        if last:
            self.set_total(last)

    # -- drawing -------------------------------------------------------------------------
    def flush(self):
        if not self._dirty:
            return
        self._dirty = False
        self.raw_curve.setData(*self.raw.data(), skipFiniteCheck=True)
        one = self.ema.n == 1  # a line needs two points: the first step is a dot, not nothing
        self.ema_curve.setData(*self.ema.data(), skipFiniteCheck=True, symbol="o" if one else None, symbolSize=6,
                               symbolPen=None, symbolBrush=pg.mkPen(self.ema_curve.opts["pen"]).color() if one else None)
        self.eval_curve.setData(*self.eval.data())
        side = self.acc if self.task == "classification" else self.margin if self.task == "preference" else self.norm
        self.side_curve.setData(*side.data())
        self.reward_curve.setData(*self.reward_acc.data(), skipFiniteCheck=True)
        self.chosen_curve.setData(*self.chosen.data(), skipFiniteCheck=True)
        self.rejected_curve.setData(*self.rejected.data(), skipFiniteCheck=True)
        self.norm_curve.setData(*self.norm.data(), skipFiniteCheck=True)
        self.lr_curve.setData(*self.rate.data(), skipFiniteCheck=True)
        self._frame_lr()
        # auto-range now, not during the paint: a range changed mid-paint costs a second paint
        self.view.scene().prepareForPaint()

    def _frame_lr(self):
        """The learning rate on 0 … its peak: auto-ranged around 0.00093-0.001 it showed one tick
        and a linear decay looked like a fall to zero."""
        rates = self.rate.data()[1]
        top = float(np.nanmax(rates)) if len(rates) and np.isfinite(rates).any() else math.nan
        if math.isfinite(top) and top > 0 and top != self._lr_top:
            self._lr_top = top
            self.lr.setYRange(0, top, padding=0.05)

    def _loss_unit(self) -> str:
        """A classifier's loss is cross-entropy per example, a preference loss per pair, a language
        model's per trained token."""
        return {"classification": "nats / example", "preference": "nats / pair"}.get(self.task, "nats / token")

    def apply_theme(self, theme: str):
        c = style.colors(theme)
        p = style.PLOT[style.resolve(theme)]
        self.view.setBackground(c["surface"])
        for plot, title in ((self.loss, "Loss"), (self.side, None), (self.norm_plot, "Gradient norm"),
                            (self.lr, "Learning rate"), (self.reward_plot, "Reward accuracy"),
                            (self.logp_plot, "Log-prob chosen / rejected (- -)")):
            for axis in ("left", "bottom"):
                ax = plot.getAxis(axis)
                ax.setPen(pg.mkPen(c["border"]))
                ax.setTextPen(pg.mkPen(c["muted"]))
            if title:
                plot.setTitle(title, size="10pt", color=c["text"])
            if plot is not self.loss:  # the loss shares the row below's step axis: its height goes to the curve
                plot.setLabel("bottom", "step", color=c["muted"])
        self.loss.setLabel("left", self._loss_unit(), color=c["muted"])
        self.lr.setLabel("left", "lr", color=c["muted"])
        self.norm_plot.setLabel("left", "‖g‖₂", color=c["muted"])
        self.reward_plot.setLabel("left", "%", color=c["muted"])
        self.logp_plot.setLabel("left", "nats / answer", color=c["muted"])
        for plot in self.plots:
            fit_width(plot.getAxis("left"))  # its title beside the tick labels, never over them
        self.reward_curve.setPen(pg.mkPen(p["acc"], width=2))
        self.chosen_curve.setPen(pg.mkPen(p["ema"], width=2))
        self.rejected_curve.setPen(pg.mkPen(p["raw"], width=2, style=Qt.DashLine))
        for grid in self.grids:
            grid.setPen(pg.mkPen(c["border"], width=1))
        self.side.setTitle(self.side.titleLabel.text or "", size="10pt", color=c["text"])
        self.raw_curve.setPen(pg.mkPen(p["raw"], width=1))
        self.ema_curve.setPen(pg.mkPen(p["ema"], width=2.2))
        self.eval_curve.setPen(pg.mkPen(p["eval"], width=2))
        self.eval_curve.setSymbolBrush(pg.mkBrush(p["eval"]))
        self.eval_curve.setSymbolPen(pg.mkPen(c["surface"], width=1.5))
        self.side_curve.setPen(pg.mkPen(p["acc"], width=2))
        self.side_curve.setSymbolBrush(pg.mkBrush(p["acc"]))
        self.side_curve.setSymbolPen(pg.mkPen(c["surface"], width=1.5))
        self.lr_curve.setPen(pg.mkPen(p["lr"], width=2))
        self.norm_curve.setPen(pg.mkPen(p["ema"], width=1.5))
        marks = (("━", p["raw"]), ("━", p["ema"]), ("●", p["eval"]))
        self.legend.setText("&nbsp;&nbsp; ".join(
            f'<span style="color:{color}">{mark}</span>&nbsp;<span style="color:{c["muted"]}">{name}</span>'
            for (mark, color), name in zip(marks, self.legend_names)))
        self._theme = theme
        self._draw_epochs()

    def _draw_epochs(self):
        """Dashed vertical lines at epoch boundaries on every plot; the loss plot names them."""
        for line in self._marks:
            line.getViewBox() and line.getViewBox().removeItem(line)
        self._marks = []
        c = style.colors(getattr(self, "_theme", style.current()))
        pen = pg.mkPen(c["muted"], width=1, style=Qt.DashLine)
        for step, epoch in self.epochs:
            # the name right of its line, or left of it near the end of the run (it was cut to "epo")
            side = [(1, 0), (1, 0)] if self.total and step > 0.85 * self.total else [(0, 0), (0, 0)]
            for p in self.plots:
                opts = dict(label=f"epoch {epoch + 1}", labelOpts=dict(position=0.95, color=c["muted"],
                                                                       anchors=side)) if p is self.loss else {}
                line = pg.InfiniteLine(pos=step, angle=90, pen=pen, movable=False, **opts)
                line.setZValue(-50)
                p.addItem(line, ignoreBounds=True)
                self._marks.append(line)

    # -- saving --------------------------------------------------------------------------
    def _ask_save_plot(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save plot", "training.png", "PNG image (*.png)")
        if path:
            self.save_png(path)

    def _ask_save_data(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save data", "training.csv", "CSV (*.csv)")
        if path:
            self.save_csv(path)

    def save_png(self, path: str):
        """The plots as shown, at the screen's resolution, written to a temp name and renamed."""
        self.flush()
        image = self.view.grab().toImage()
        tmp = f"{path}.part"
        if not image.save(tmp, "PNG"):
            raise OSError(f"could not write {path}")
        os.replace(tmp, path)

    def save_csv(self, path: str):
        """Long format, one row per point: series (train_loss, smoothed_loss, eval_loss,
        eval_accuracy_percent, grad_norm, lr), step, value."""
        series = (("train_loss", self.raw), ("smoothed_loss", self.ema), ("eval_loss", self.eval),
                  ("eval_accuracy_percent", self.acc), ("grad_norm", self.norm), ("lr", self.rate),
                  ("reward_margin", self.margin), ("reward_accuracy_percent", self.reward_acc),
                  ("chosen_logps", self.chosen), ("rejected_logps", self.rejected))
        tmp = f"{path}.part"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["series", "step", "value"])
            for name, s in series:
                for x, y in zip(*s.data()):
                    w.writerow([name, int(x), repr(float(y))])
        os.replace(tmp, path)
