"""pyqtgraph axes that stay readable in a small plot: whole steps only, short
numbers for a learning rate, and log axes labelled at a few round values instead of every minor
tick. Each is passed to a plot as `axisItems={"bottom": StepAxis("bottom")}`."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtGui import QFontMetrics


def short_number(v: float) -> str:
    """3 significant digits, the exponent without its leading zero: 0.0002, 1.5e-5, 250."""
    if v == 0:
        return "0"
    return f"{v:.3g}".replace("e-0", "e-").replace("e+0", "e+")


def fit_width(axis: pg.AxisItem, widest: str = "0.0008"):
    """A fixed width (a changing one re-lays out the plots) that holds the rotated axis title
    beside tick labels as wide as `widest`; at a fixed 54 px the title ("lr", "‖g‖₂", "nats /
    example") was drawn over the labels. Call it after setLabel."""
    fm = QFontMetrics(axis.style["tickFont"] or axis.font())
    title = axis.label.boundingRect().height() if axis.label.isVisible() else 0
    axis.setWidth(math.ceil(fm.horizontalAdvance(widest) + title + max(0, axis.style["tickLength"])
                            + axis.style["tickTextOffset"][0] + 4))


class StepAxis(pg.AxisItem):
    """Ticks at whole steps only: a run of 8 steps was labelled 0.5, 1.5 … (no step 1.5 exists)."""

    def __init__(self, orientation: str = "bottom", **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)  # step 12000 is 12000, not "12 (x1000)"

    def tickValues(self, minVal: float, maxVal: float, size: float):
        levels = [(spacing, [v for v in values if float(v).is_integer()])
                  for spacing, values in super().tickValues(minVal, maxVal, size) if spacing >= 1]
        if levels:
            return levels
        lo, hi = sorted((minVal, maxVal))  # a view narrower than two steps: each step in it
        return [(1.0, [float(v) for v in range(math.ceil(lo), math.floor(hi) + 1)])]


class ShortNumberAxis(pg.AxisItem):
    """Plain numbers of at most 3 significant digits (a learning rate of 2e-5 reads "2e-5", not
    "0.000020" or "20 (x1e-06)")."""

    def __init__(self, orientation: str = "left", **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values, scale, spacing):
        if self.logMode:
            return super().tickStrings(values, scale, spacing)
        return [short_number(v * scale) for v in values]


class LogAxis(pg.AxisItem):
    """A log axis labelled at 1, 2 and 5 × 10^k, or at its decades alone when those crowd; the
    other minor ticks are drawn unlabelled. pyqtgraph labelled every minor tick, and at 170 px
    "9·10¹ 8·10¹ 7·10¹ …" piled into one smudge."""

    MIN_GAP = 20  # pixels between neighbouring labels (a label is ~13 px tall)

    def __init__(self, orientation: str = "left", **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)  # a log axis scaled by "(x0.001)" read as nonsense
        self.setStyle(maxTextLevel=0)  # labels on the first level only

    def logTickValues(self, minVal, maxVal, size, stdTicks):
        lo, hi = math.floor(minVal), math.ceil(maxVal)

        def at(mantissas) -> list[float]:
            return [d + math.log10(m) for d in range(lo, hi + 1) for m in mantissas
                    if minVal <= d + math.log10(m) <= maxVal]

        labelled = at((1, 2, 5))
        per_decade = size / max(maxVal - minVal, 1e-12)  # pixels
        if math.log10(2) * per_decade < self.MIN_GAP and len(at((1,))) >= 2:  # 1 to 2 is the closest pair
            labelled = at((1,))
        if len(labelled) < 2:  # less than a 1-2-5 step in view: every mantissa
            labelled = at(range(1, 10))
        minor = [v for v in at(range(1, 10)) if all(abs(v - u) > 1e-9 for u in labelled)]
        return [(1.0, labelled), (None, minor)]

    def logTickStrings(self, values, scale, spacing):
        out = []
        for v in values:
            x = 10 ** v * scale
            out.append(short_number(x) if 1e-3 <= abs(x) < 1e5 else super().logTickStrings([v], scale, spacing)[0])
        return out
