"""The pyqtgraph pieces of the Spectra tab: singular values (log scale), cumulative energy, and a
heatmap with a colour bar, cell values and a hover readout (effective rank, subspace similarity).

They only draw what the engine computed; items are created once and updated in place
(`setData`/`setImage`), so live refreshes during training do not flicker.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QTextOption
from PySide6.QtWidgets import QLabel

from lora_studio.ui import style
from lora_studio.ui.axes import LogAxis, StepAxis

# Curve colours per theme: distinct hues, readable on the surface colour of each theme.
SERIES = {
    "light": ["#5b50e8", "#e0772b", "#138a4b", "#2f8fd8", "#d23c3c", "#b5489e", "#9a7b00", "#0f9aa8",
              "#6b5d4f", "#7a8a00", "#c2185b", "#455a9c"],
    "dark": ["#a39dff", "#f5a25d", "#4ccb85", "#5ab0ff", "#ff7b7b", "#e27ad0", "#e8c547", "#4fd1dc",
             "#c9b49c", "#b5cc3a", "#ff6fa3", "#8fa4ff"],
}
LEGEND_MAX = 16  # curves named under a plot; more are summed up as "… and N more"
HEATMAP = "viridis"  # perceptually uniform, legible in light and dark
TEXT_DARK = "#10131a"  # a cell value's colour on a light cell


def series_color(theme: str, index: int) -> str:
    colors = SERIES[style.resolve(theme)]
    return colors[index % len(colors)]


def _luminance(color) -> float:
    """WCAG relative luminance of a QColor."""
    ch = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4
          for x in (color.redF(), color.greenF(), color.blueF())]
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]


def text_on(background) -> str:
    """Dark or white text, whichever contrasts more with `background` (WCAG contrast ratio; HSL
    lightness picked white on viridis' mid teal, where dark text reads better)."""
    bg = _luminance(background)
    dark = (bg + 0.05) / (_luminance(pg.mkColor(TEXT_DARK)) + 0.05)
    return TEXT_DARK if dark >= 1.05 / (bg + 0.05) else "#ffffff"


def tick_step(n: int, most: int = 16) -> int:
    """A 1-2-5 step that shows at most `most` labels on an axis of n cells."""
    for step in (1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100, 128):
        if n / step <= most:
            return step
    return max(1, n // most)


def _style_plot(plot: pg.PlotItem, theme: str, title: str | None = None):
    c = style.colors(theme)
    for axis in ("left", "bottom", "right", "top"):
        ax = plot.getAxis(axis)
        ax.setPen(pg.mkPen(c["border"]))
        ax.setTextPen(pg.mkPen(c["muted"]))
    if title is not None:
        plot.setTitle(title, size="10pt", color=c["text"])


class _Base(pg.PlotWidget):
    def __init__(self, parent=None, **kwargs):
        super().__init__(parent, **kwargs)
        self.theme = style.current()
        p = self.getPlotItem()
        p.setMenuEnabled(False)
        p.hideButtons()
        p.getViewBox().setMouseMode(pg.ViewBox.RectMode)
        self.setMinimumSize(170, 170)

    def apply_theme(self, theme: str):
        self.theme = theme
        c = style.colors(theme)
        self.setBackground(c["surface"])
        _style_plot(self.getPlotItem(), theme)
        for axis in ("left", "bottom"):
            ax = self.getPlotItem().getAxis(axis)
            if ax.labelText:
                ax.setLabel(ax.labelText, units=ax.labelUnits or None, color=c["muted"])


class CurvePlot(_Base):
    """One curve per module, keyed, each with its own colour; a legend that follows the keys."""

    def __init__(self, ylabel: str, parent=None, log_y: bool = False):
        # k is whole; a log axis labels a few round values, not each minor tick
        axes = {"bottom": StepAxis(), "left": LogAxis() if log_y else pg.AxisItem("left")}
        super().__init__(parent, axisItems=axes)
        p = self.getPlotItem()
        p.setLogMode(y=log_y)
        p.setLabel("bottom", "k")
        p.setLabel("left", ylabel)
        p.setClipToView(True)
        # the legend is a label under the plot (panels.py places it): it never covers a curve
        self.legend = QLabel()
        self.legend.setObjectName("Hint")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.RichText)
        self.curves: dict[tuple, pg.PlotDataItem] = {}
        self._legend_rows: list[tuple[str, str]] = []  # (label, colour) shown
        self.apply_theme(self.theme)

    def set_curves(self, series: list[tuple[tuple, str, str, np.ndarray, np.ndarray]]):
        """series: (key, label, colour, x, y). Existing curves are updated in place."""
        p = self.getPlotItem()
        keep = {s[0] for s in series}
        for key in [k for k in self.curves if k not in keep]:
            p.removeItem(self.curves.pop(key))
        c = style.colors(self.theme)
        for key, text, color, x, y in series:
            curve = self.curves.get(key)
            if curve is None:
                curve = self.curves[key] = p.plot(name=None)
            curve.setData(x, y)
            curve.setPen(pg.mkPen(color, width=2))
            few = len(x) <= 32
            curve.setSymbol("o" if few else None)
            curve.setSymbolSize(5)
            curve.setSymbolBrush(pg.mkBrush(color))
            curve.setSymbolPen(pg.mkPen(c["surface"], width=1))
            curve.opts["name"] = text
        rows = [(text, color) for _, text, color, *_ in series]
        if rows != self._legend_rows:
            self._legend_rows = rows
            self._draw_legend()

    def legend_entries(self) -> list[tuple[str, str]]:
        """(label, colour) of each curve the legend names, in order."""
        return self._legend_rows[:LEGEND_MAX]

    def _draw_legend(self):
        rows = self._legend_rows
        items = [f'<span style="color:{color}">■</span>&nbsp;{html.escape(text).replace(" ", "&nbsp;")}'
                 for text, color in rows[:LEGEND_MAX]]
        more = f" … and {len(rows) - LEGEND_MAX} more" if len(rows) > LEGEND_MAX else ""
        self.legend.setText("&nbsp;&nbsp; ".join(items) + more)
        self.legend.setVisible(bool(rows))

    def apply_theme(self, theme: str):
        super().apply_theme(theme)
        p = style.PLOT[style.resolve(theme)]
        self.getPlotItem().showGrid(x=True, y=True, alpha=p["grid"])


class SigmaPlot(CurvePlot):
    """σ_k of ΔW against k, log scale (zeros are left out: they have no logarithm)."""

    def __init__(self, parent=None):
        super().__init__("σₖ", parent, log_y=True)

    def show_spectra(self, series):
        """series: (key, label, colour, singular values)."""
        out = []
        for key, text, color, sigma in series:
            y = np.asarray(sigma, dtype=float)
            x = np.arange(1, len(y) + 1, dtype=float)
            nz = y > 0
            out.append((key, text, color, x[nz], y[nz]))
        self.set_curves(out)


class EnergyPlot(CurvePlot):
    """Σ_{i<=k} σ_i² / Σσ² against k, with the 90% / 99% lines and the suggested rank."""

    def __init__(self, parent=None):
        super().__init__("energy kept", parent)
        p = self.getPlotItem()
        p.setYRange(0, 1.02, padding=0)
        p.getViewBox().setLimits(yMin=-0.02, yMax=1.05)
        p.enableAutoRange(axis="y", enable=False)
        self.refs = []
        for level in (0.9, 0.99):
            line = pg.InfiniteLine(pos=level, angle=0, movable=False,
                                   label=f"{level:.0%}", labelOpts={"position": 0.98, "anchors": [(1, 0), (1, 0)]})
            line.setZValue(-5)
            p.addItem(line)
            self.refs.append(line)
        self.suggested = pg.InfiniteLine(pos=1, angle=90, movable=False, label="",
                                         labelOpts={"position": 0.6, "anchors": [(1, 0.5), (0, 0.5)]})
        self.suggested.setZValue(-4)
        self.suggested.hide()
        p.addItem(self.suggested)
        self.apply_theme(self.theme)

    def show_energy(self, series, suggested: int | None = None, energy: float = 0.9):
        """series: (key, label, colour, cumulative energy fractions for k = 1..r)."""
        out = []
        for key, text, color, cum in series:
            y = np.concatenate([[0.0], np.asarray(cum, dtype=float)])
            out.append((key, text, color, np.arange(len(y), dtype=float), y))
        self.set_curves(out)
        self.suggested.setVisible(bool(suggested) and bool(series))
        if suggested:  # after setVisible: a hidden line's label ignores updates
            right = max((len(s[3]) for s in series), default=0)
            side = (1, 0.5) if suggested > right / 2 else (0, 0.5)  # the label on the roomier side
            self.suggested.label.anchors = [side, side]
            self.suggested.setPos(suggested)
            self.suggested.label.setFormat(f" r = {suggested} keeps {energy:.0%} ")

    def apply_theme(self, theme: str):
        super().apply_theme(theme)
        if not hasattr(self, "refs"):
            return
        c = style.colors(theme)
        for line in self.refs:
            line.setPen(pg.mkPen(c["muted"], width=1, style=Qt.DashLine))
            line.label.setColor(c["muted"])
        self.suggested.setPen(pg.mkPen(c["accent"], width=1.5, style=Qt.DotLine))
        self.suggested.label.setColor(c["accent"])


class Heatmap(_Base):
    """A matrix as coloured cells with a colour bar; values in the cells when they fit.

    Signals:
        hovered(int, int): row and column under the mouse (-1, -1 outside)
        clicked(int, int): row and column clicked
    """

    hovered = Signal(int, int)
    clicked = Signal(int, int)

    def __init__(self, xlabel: str, ylabel: str, bar_label: str = "", parent=None, origin: int = 0):
        """`bar_label`: the colour bar's title, best left empty when the panel's title names the
        values (a rotated title longer than a short bar is cut)."""
        super().__init__(parent)
        self.origin = origin  # the index of the first row/column (0: layers, 1: i and j of Eq. 4)
        self.fmt = "{:.2f}"
        self.data = np.zeros((0, 0))
        self.row_labels: list[str] | None = None
        self.col_labels: list[str] | None = None
        p = self.getPlotItem()
        p.setMouseEnabled(x=False, y=False)
        p.getViewBox().invertY(True)
        p.layout.setContentsMargins(1, 8, 1, 1)  # room above the bar for half its top tick label ("1.0" was cut)
        p.setLabel("bottom", xlabel)
        p.setLabel("left", ylabel)
        self.image = pg.ImageItem(axisOrder="row-major")
        p.addItem(self.image)
        self.bar = pg.ColorBarItem(values=(0, 1), width=12, colorMap=pg.colormap.get(HEATMAP),
                                   interactive=False, label=bar_label or None, colorMapMenu=False)
        self.bar.setImageItem(self.image, insert_in=p)
        self.cells: list[pg.TextItem] = []
        self.max_cells = 160  # more cells than this: values on hover only
        self.placeholder = pg.TextItem("", anchor=(0.5, 0.5))
        centred = QTextOption(Qt.AlignCenter)
        centred.setWrapMode(QTextOption.WordWrap)
        self.placeholder.textItem.document().setDefaultTextOption(centred)
        p.addItem(self.placeholder)
        p.getViewBox().sigResized.connect(self._fit_cells)
        p.getViewBox().sigResized.connect(self._fit_placeholder)
        p.getViewBox().sigRangeChanged.connect(self._fit_placeholder)
        self.scene().sigMouseMoved.connect(self._moved)
        self.scene().sigMouseClicked.connect(self._clicked)
        self._last = (-1, -1)
        self.apply_theme(self.theme)

    # -- data --------------------------------------------------------------------------
    def show_matrix(self, data, levels: tuple[float, float], row_labels=None, col_labels=None, fmt="{:.2f}"):
        """data: (rows, cols) numbers, NaN for an empty cell; labels default to origin-based indices."""
        data = np.asarray(data, dtype=float)
        self.data, self.fmt = data, fmt
        self.row_labels, self.col_labels = row_labels, col_labels
        rows, cols = data.shape if data.ndim == 2 else (0, 0)
        self.placeholder.setText("")
        if rows == 0 or cols == 0:
            self.image.clear()
            self._cell_text(0, 0)
            return
        lo, hi = levels
        if not hi > lo:
            hi = lo + 1
        self.bar.setLevels((lo, hi))
        self.image.setImage(data, levels=(lo, hi), autoLevels=False)
        o = self.origin
        self.image.setRect(QRectF(o - 0.5, o - 0.5, cols, rows))
        p = self.getPlotItem()
        p.setRange(xRange=(o - 0.5, o - 0.5 + cols), yRange=(o - 0.5, o - 0.5 + rows), padding=0)
        self._ticks("bottom", cols, col_labels)
        self._ticks("left", rows, row_labels)
        self._cell_text(rows, cols)

    def show_message(self, text: str):
        """Empty the heatmap and say why."""
        self.data = np.zeros((0, 0))
        self.image.clear()
        self._cell_text(0, 0)
        p = self.getPlotItem()
        p.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        for axis in ("bottom", "left"):
            p.getAxis(axis).setTicks([[], []])
        self.placeholder.setText(text)
        self._fit_placeholder()

    def _fit_placeholder(self, *_):
        """The message wraps within the cells' area (at 1280 px it was cut at both ends), centred on
        what the view shows (a view that keeps its aspect widens its range past 0-1 on one side)."""
        if self.placeholder.toPlainText():
            vb = self.getPlotItem().getViewBox()
            self.placeholder.setTextWidth(max(40.0, vb.width() - 8))
            self.placeholder.setPos(vb.viewRect().center())

    def _ticks(self, axis: str, n: int, labels):
        """Labels at a 1-2-5 step, as many as the axis has room for (15 px a row label, 30 px a
        column label): 16 row labels on a 200 px heatmap overprinted each other."""
        room = self.getPlotItem().getViewBox().height() if axis == "left" else self.getPlotItem().getViewBox().width()
        most = 16 if axis == "left" else 12
        if room > 1:
            most = max(2, min(most, int(room // (15 if axis == "left" else 30))))
        step = tick_step(n, most)
        o = self.origin
        major = [(o + i, labels[i] if labels else str(o + i)) for i in range(n)
                 if i % step == 0 or (labels is None and i == n - 1 and n > 1 and (n - 1) % step > step // 2)]
        self.getPlotItem().getAxis(axis).setTicks([major, []])

    def _cell_text(self, rows: int, cols: int):
        show = 0 < rows * cols <= self.max_cells
        need = rows * cols if show else 0
        p = self.getPlotItem()
        while len(self.cells) > need:
            p.removeItem(self.cells.pop())
        while len(self.cells) < need:
            t = pg.TextItem("", anchor=(0.5, 0.5))
            t.setZValue(5)
            p.addItem(t)
            self.cells.append(t)
        if not show:
            return
        lo, hi = self.bar.levels()
        cmap = self.bar.colorMap()
        font = self.font()
        font.setPointSizeF(8 if rows * cols > 48 else 9)
        for idx, t in enumerate(self.cells):
            r, c = divmod(idx, cols)
            v = self.data[r, c]
            t.setFont(font)
            if not math.isfinite(v):
                t.setText("")
                continue
            t.setText(self.fmt.format(v))
            frac = min(1.0, max(0.0, (v - lo) / (hi - lo))) if hi > lo else 0.0
            bg = cmap.map(frac, mode="qcolor")
            t.setColor(text_on(bg))
            t.setPos(self.origin + c, self.origin + r)
        self._fit_cells()

    def _fit_cells(self, *_):
        """Values in the cells only while they are large enough to read (else: on hover); the axes'
        labels as many as fit."""
        if self.data.ndim != 2 or self.data.size == 0:
            return
        rows, cols = self.data.shape
        self._ticks("bottom", cols, self.col_labels)
        self._ticks("left", rows, self.row_labels)
        if not self.cells:
            return
        size = self.getPlotItem().getViewBox().size()
        fits = size.height() / rows >= 15 and size.width() / cols >= 30
        for t in self.cells:
            t.setVisible(fits)

    # -- mouse -------------------------------------------------------------------------
    def cell_at(self, scene_pos) -> tuple[int, int]:
        vb = self.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos) or self.data.size == 0:
            return -1, -1
        pt = vb.mapSceneToView(scene_pos)
        c = int(math.floor(pt.x() - self.origin + 0.5))
        r = int(math.floor(pt.y() - self.origin + 0.5))
        rows, cols = self.data.shape
        return (r, c) if 0 <= r < rows and 0 <= c < cols else (-1, -1)

    def value(self, r: int, c: int) -> float:
        return float(self.data[r, c])

    def _moved(self, pos):
        cell = self.cell_at(pos)
        if cell != self._last:
            self._last = cell
            self.hovered.emit(*cell)

    def _clicked(self, ev):
        r, c = self.cell_at(ev.scenePos())
        if r >= 0:
            self.clicked.emit(r, c)

    def leaveEvent(self, ev):
        if self._last != (-1, -1):
            self._last = (-1, -1)
            self.hovered.emit(-1, -1)
        super().leaveEvent(ev)

    def apply_theme(self, theme: str):
        super().apply_theme(theme)
        c = style.colors(theme)
        if hasattr(self, "bar"):
            self.bar.axis.setPen(pg.mkPen(c["border"]))
            self.bar.axis.setTextPen(pg.mkPen(c["muted"]))
            if self.bar.axis.labelText:
                self.bar.axis.setLabel(self.bar.axis.labelText, color=c["muted"])
            self.placeholder.setColor(c["muted"])
