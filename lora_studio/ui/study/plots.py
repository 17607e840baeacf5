"""The Study tab's plots: live loss of every run of a sweep (one curve each), final and eval loss
vs rank, and the subspace similarity φ (Eq. 4) between the largest and each smaller rank.

Each plot's legend is a label under it (view.py places it), never drawn over the curves (GUI N19)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QVBoxLayout, QWidget

from lora_studio.ui import style
from lora_studio.ui.axes import StepAxis
from lora_studio.ui.spectra.plots import Heatmap
from lora_studio.ui.training.plots import Series
from lora_studio.ui.bind import quiet
from lora_studio.ui.widgets import LINE_KEY, label, legend_html, legend_label

# qualitative palette (Tableau 10): distinct hues, legible on light and dark backgrounds
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")


def run_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _style_plot(plot: pg.PlotItem, title: str, xlabel: str, theme: str):
    c = style.colors(theme)
    for axis in ("left", "bottom"):
        ax = plot.getAxis(axis)
        ax.setPen(pg.mkPen(c["border"]))
        ax.setTextPen(pg.mkPen(c["muted"]))
        ax.enableAutoSIPrefix(False)  # a loss of 0.69 is drawn as 0.69, not "690 (x0.001)"
    plot.setTitle(title, size="10pt", color=c["text"])
    plot.setLabel("bottom", xlabel, color=c["muted"])
    plot.setLabel("left", "loss (nats)", color=c["muted"])  # (GUI N19: the y axis had no name)
    plot.showGrid(x=True, y=True, alpha=style.PLOT[style.resolve(theme)]["grid"])
    plot.setMenuEnabled(False)


class LiveLoss(pg.PlotWidget):
    """Train loss per step, one curve per run, named in the legend. Points are buffered and pushed
    to the curves by a 10 Hz timer (as training/plots.py does)."""

    def __init__(self, parent=None):
        super().__init__(parent, axisItems={"bottom": StepAxis()})  # whole steps (a 2-step run ticked 1.5)
        self.plot_item = self.getPlotItem()
        self.title = ("Training loss, every run", "step")
        self.apply_theme(style.current())
        self.plot_item.setDownsampling(auto=True, mode="peak")
        self.plot_item.setClipToView(True)
        self.legend = legend_label()
        self.legend_entries: list[tuple[str, str, bool]] = []  # (run, colour, dashed)
        self.series: dict[str, Series] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._dirty = False
        self.timer = QTimer(self, interval=100)
        self.timer.timeout.connect(self.flush)
        self.timer.start()

    def apply_theme(self, theme: str):
        self.setBackground(style.colors(theme)["surface"])
        _style_plot(self.plot_item, *self.title, theme)

    def clear_runs(self):
        for curve in self.curves.values():
            self.plot_item.removeItem(curve)
        self.series.clear()
        self.curves.clear()
        self.legend_entries = []
        self.legend.setText("")

    def add_run(self, name: str):
        """A curve for `name` (again: the same curve, emptied — a resumed run replays no steps)."""
        if name in self.curves:
            return
        color = run_color(len(self.curves))
        curve = self.plot_item.plot(name=name, pen=pg.mkPen(color, width=1.6))
        self.curves[name] = curve
        self.series[name] = Series()
        self.legend_entries.append((name, color, False))
        self.legend.setText(legend_html(self.legend_entries))

    def add_point(self, name: str, step: int, loss: float):
        if name not in self.curves:
            self.add_run(name)
        if math.isfinite(loss):
            self.series[name].append(step, loss)
            self._dirty = True

    def flush(self):
        if not self._dirty:
            return
        self._dirty = False
        for name, s in self.series.items():
            self.curves[name].setData(*s.data())

    def data(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        self.flush()
        return self.series[name].data()


class LossVsRank(pg.PlotWidget):
    """Final train loss (solid) and eval loss (dashed, when evaluated) vs rank, one colour per
    targets set; ranks on a log2 axis (1, 2, 4, … 64 evenly spaced); seeds averaged."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.plot_item = self.getPlotItem()
        self.title = ("Loss vs rank", "rank r")
        self.apply_theme(style.current())
        self.plot_item.setLogMode(x=True, y=False)
        self.legend = legend_label()
        self.legend_entries: list[tuple[str, str, bool]] = []  # (targets set | train | eval, colour, dashed)
        self.points: dict[str, tuple[list[int], list[float]]] = {}
        self.set_ranks([1, 2, 4, 8, 16, 32, 64])  # until a sweep says its own

    apply_theme = LiveLoss.apply_theme

    def show_runs(self, runs: list[dict]):
        self.plot_item.clear()
        self.points = {}
        sets = list(dict.fromkeys(",".join(r["targets"]) for r in runs))
        for i, ts in enumerate(sets):
            for key, dash in (("final_loss", False), ("eval_loss", True)):
                by_rank: dict[int, list[float]] = {}
                for r in runs:
                    if ",".join(r["targets"]) == ts and r.get(key) is not None:
                        by_rank.setdefault(r["rank"], []).append(r[key])
                if not by_rank:
                    continue
                ranks = sorted(by_rank)
                ys = [sum(by_rank[k]) / len(by_rank[k]) for k in ranks]
                name = f"{ts} · {'eval' if dash else 'train'}"
                self.points[name] = (ranks, ys)
                pen = pg.mkPen(run_color(i), width=1.8, style=pg.QtCore.Qt.DashLine if dash else pg.QtCore.Qt.SolidLine)
                self.plot_item.plot(ranks, ys, pen=pen, symbol="o", symbolSize=7, symbolBrush=run_color(i),
                                    symbolPen=None, name=name)
        # one entry per targets set, then what solid and dashed mean: short enough for a narrow plot
        self.legend_entries = [(ts, run_color(i), False) for i, ts in enumerate(sets)]
        kinds = {name.rsplit(" · ", 1)[1] for name in self.points}
        self.legend_entries += [(k, LINE_KEY, k == "eval") for k in ("train", "eval") if k in kinds]
        self.legend.setText(legend_html(self.legend_entries))
        self.set_ranks(sorted({r["rank"] for r in runs}))

    def set_ranks(self, ranks: list[int]):
        """Ticks at these ranks, labelled with them: a log axis would otherwise label its minor
        ticks "2 3 … 9" with no 1 or 10 (GUI N19)."""
        ranks = sorted(set(ranks))
        if not ranks:
            return
        self.plot_item.getAxis("bottom").setTicks([[(math.log10(k), str(k)) for k in ranks], []])
        lo, hi = math.log10(ranks[0]), math.log10(ranks[-1])
        self.plot_item.setXRange(lo - 0.15, hi + 0.15, padding=0)  # the end points' symbols whole


HOVER_HINT = ("Hover a cell for its value. φ(i, j): how much the top i directions of the smaller rank share "
              "with the top j of the larger (0 none, 1 all)")


class PhiView(QWidget):
    """φ(i, j) between the largest rank and a smaller one, per module kind (a heatmap with a colour
    bar, 0…1, j down the side); a combo, shown once a sweep gave something to pick, picks the pair
    and the kind."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.pick = QWidget()  # hidden until there is a pair to pick (an empty, unnamed combo said nothing)
        row = QHBoxLayout(self.pick)
        row.setContentsMargins(0, 0, 0, 0)
        self.choice = QComboBox()
        self.choice.setToolTip("Which pair of ranks and which module kind (φ averaged over layers)")
        row.addWidget(label("Pair", "Hint"))
        row.addWidget(self.choice, 1)
        self.pick.hide()
        lay.addWidget(self.pick)
        # the larger rank down the side: the panel is taller than wide at 1280 px, so r = 1 vs 8 gets
        # 8 cells wide enough for their values instead of 8 slivers (GUI N19). φ is named in the
        # title: a colour bar title "φ" stood alone as a stray glyph
        self.heatmap = Heatmap("i (smaller rank)", "j (larger rank)", origin=1)
        lay.addWidget(self.heatmap, 1)
        # every cell's value on hover: from 16 ranks up the cells are too small for their numbers
        self.readout = label("", "Hint")
        self.readout.setWordWrap(True)
        lay.addWidget(self.readout)
        self.entries: list[tuple[str, np.ndarray]] = []
        self.choice.currentIndexChanged.connect(self._show)
        self.heatmap.hovered.connect(self._hovered)
        self.heatmap.show_message("φ: after the sweep")
        self.apply_theme(style.current())

    def apply_theme(self, theme: str):
        self.heatmap.apply_theme(theme)
        self.heatmap.getPlotItem().setTitle("Subspace similarity φ", size="10pt", color=style.colors(theme)["text"])

    def show_similarity(self, similarity: list[dict]):
        """sweep.json's `similarity`: [{targets, seed, rank_a, rank_b, phi: {kind: (r_a, r_b) matrix}}]."""
        self.entries = [(f"{s['targets']} · r={s['rank_a']} vs r={s['rank_b']} · seed {s['seed']} · {kind}",
                         np.asarray(phi, dtype=float))
                        for s in similarity for kind, phi in s["phi"].items()]
        with quiet(self.choice):
            self.choice.clear()
            self.choice.addItems([name for name, _ in self.entries])
        self.pick.setVisible(bool(self.entries))
        if not self.entries:
            self.heatmap.show_message("φ: needs two ranks")
            return
        self.choice.setCurrentIndex(0)
        self._show(0)

    def _show(self, index: int):
        if 0 <= index < len(self.entries):
            self.heatmap.show_matrix(self.entries[index][1].T, (0.0, 1.0))  # (r_b, r_a): j down, i across
            self.readout.setText(HOVER_HINT)

    def _hovered(self, r: int, c: int):
        """Row r is j (the larger rank's direction), column c is i (the smaller rank's)."""
        if r < 0 or not self.entries:
            self.readout.setText(HOVER_HINT if self.entries else "")
            return
        self.readout.setText(f"i = {c + 1}, j = {r + 1}:  φ = {self.heatmap.value(r, c):.3f}")
