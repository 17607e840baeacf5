"""Live training curves (pyqtgraph): loss raw and smoothed with eval loss on the same step axis,
eval accuracy (classification) or gradient norm, and the learning rate.

Points go into growing numpy buffers as signals arrive; a 10 Hz timer pushes them to the
curves only when something changed, and every plot downsamples (peak) and clips to the view,
so 100k+ points stay smooth.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QVBoxLayout, QWidget

from lora_studio.ui import style

SMOOTHING = 0.8  # EMA weight of the past, debiased as TensorBoard does


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


class TrainingPlots(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.view = pg.GraphicsLayoutWidget()
        lay.addWidget(self.view)
        self.loss = self.view.addPlot(row=0, col=0, colspan=2)
        self.side = self.view.addPlot(row=1, col=0)
        self.lr = self.view.addPlot(row=1, col=1)
        self.view.ci.layout.setRowStretchFactor(0, 3)
        self.view.ci.layout.setRowStretchFactor(1, 2)
        self.view.ci.setSpacing(14)
        # no setXLink: pyqtgraph links views by screen position, wrong for plots of other widths;
        # set_total frames all three on the same steps instead
        self.legend = self.loss.addLegend(offset=(-10, 10), labelTextSize="9pt")
        self.raw_curve = self.loss.plot(name="train loss")
        self.ema_curve = self.loss.plot(name="smoothed")
        self.eval_curve = self.loss.plot(name="eval loss", symbol="o", symbolSize=7)
        self.side_curve = self.side.plot(symbol="o", symbolSize=6)
        self.lr_curve = self.lr.plot()
        self.grids = []
        for p in (self.loss, self.side, self.lr):
            # a GridItem, not showGrid(): the axes' grid costs several times more to paint
            grid = pg.GridItem(textPen=None)
            grid.setTickSpacing(x=[None], y=[None])  # one level of lines: a third of the paint time
            grid.setZValue(-100)
            p.addItem(grid, ignoreBounds=True)
            self.grids.append(grid)
            p.getAxis("left").setWidth(54)  # tick labels changing width must not re-layout (a 2nd paint)
            p.setDownsampling(auto=True, mode="peak")
            p.setClipToView(True)
            p.setMenuEnabled(True)  # right click: log scale, and Export… (PNG, SVG, CSV)
            p.getViewBox().setMouseMode(pg.ViewBox.RectMode)
        self.raw, self.ema, self.eval, self.acc, self.norm, self.rate = (Series() for _ in range(6))
        self._ema_state = (0.0, 0)
        self.task = "classification"
        self.total = 0
        self._dirty = False
        self.timer = QTimer(self, interval=100)
        self.timer.timeout.connect(self.flush)
        self.timer.start()
        self.apply_theme(style.current())
        self.set_task("classification")

    # -- data ----------------------------------------------------------------------------
    def clear(self):
        for s in (self.raw, self.ema, self.eval, self.acc, self.norm, self.rate):
            s.clear()
        self._ema_state = (0.0, 0)
        self.total = 0
        self._dirty = True
        self.flush()
        for p in (self.loss, self.side, self.lr):
            p.enableAutoRange()

    def set_task(self, task: str):
        self.task = task
        classify = task == "classification"
        self.side.setTitle("Eval accuracy" if classify else "Gradient norm", size="10pt")
        self.side.setLabel("left", "%" if classify else "‖g‖₂", color=style.colors(style.current())["muted"])
        if classify:
            self.side.setYRange(0, 100, padding=0.02)
        self.side_curve.setSymbol("o" if classify else None)
        self._dirty = True

    def set_total(self, total: int):
        """Frame the x axis on the whole run, so the curve grows into it."""
        self.total = total
        if total > 0:
            for p in (self.loss, self.side, self.lr):
                p.setXRange(0, total, padding=0.02)

    def add_step(self, step: int, loss: float, lr: float, grad_norm: float = math.nan):
        if math.isfinite(loss):
            self.raw.append(step, loss)
            value, k = self._ema_state
            value, k = SMOOTHING * value + (1 - SMOOTHING) * loss, k + 1
            self._ema_state = (value, k)
            self.ema.append(step, value / (1 - SMOOTHING ** k))
        self.rate.append(step, lr)
        if math.isfinite(grad_norm):
            self.norm.append(step, grad_norm)
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
                self.add_step(r["step"], r["loss"], r.get("lr", math.nan), r.get("grad_norm", math.nan))
            if "eval_loss" in r:
                self.add_eval(r["step"], r["eval_loss"], r.get("accuracy"))
        self.flush()
        for p in (self.loss, self.lr) if self.task == "classification" else (self.loss, self.side, self.lr):
            p.enableAutoRange(axis="y")  # accuracy keeps its 0-100 % frame
        last = max((r["step"] for r in records), default=0)
        if last:
            self.set_total(last)

    # -- drawing -------------------------------------------------------------------------
    def flush(self):
        if not self._dirty:
            return
        self._dirty = False
        self.raw_curve.setData(*self.raw.data(), skipFiniteCheck=True)
        self.ema_curve.setData(*self.ema.data(), skipFiniteCheck=True)
        self.eval_curve.setData(*self.eval.data())
        side = self.acc if self.task == "classification" else self.norm
        self.side_curve.setData(*side.data())
        self.lr_curve.setData(*self.rate.data(), skipFiniteCheck=True)
        # auto-range now, not during the paint: a range changed mid-paint costs a second paint
        self.view.scene().prepareForPaint()

    def apply_theme(self, theme: str):
        c = style.colors(theme)
        p = style.PLOT[style.resolve(theme)]
        self.view.setBackground(c["surface"])
        for plot, title in ((self.loss, "Loss"), (self.side, None), (self.lr, "Learning rate")):
            for axis in ("left", "bottom"):
                ax = plot.getAxis(axis)
                ax.setPen(pg.mkPen(c["border"]))
                ax.setTextPen(pg.mkPen(c["muted"]))
            if title:
                plot.setTitle(title, size="10pt", color=c["text"])
            plot.setLabel("bottom", "step", color=c["muted"])
        self.loss.setLabel("left", "nats / token", color=c["muted"])
        self.lr.setLabel("left", "lr", color=c["muted"])
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
        self.legend.setLabelTextColor(c["muted"])
