"""Adapter: rank r, alpha, dropout, rsLoRA, and the scaling s they give (s = alpha / r)."""

from __future__ import annotations

from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QHBoxLayout, QSlider, QSpinBox, QToolButton)
from PySide6.QtCore import Qt

from lora_studio.ui.session import Session
from lora_studio.ui.widgets import Section, label
from lora_studio.ui.bind import bind

RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class AdapterPanel(Section):
    def __init__(self, session: Session, parent=None):
        super().__init__("Adapter", parent, collapsible=True)
        self.session = session
        self.rank = QSpinBox()
        self.rank.setRange(1, 4096)
        self.rank.setToolTip("r: rank of each update B·A. The paper finds 1-8 often enough.")
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, len(RANKS) - 1)
        self.slider.setPageStep(1)
        self.slider.setToolTip("Rank in powers of two")
        rank_row = QHBoxLayout()
        rank_row.addWidget(self.rank)
        rank_row.addWidget(self.slider, 1)
        self.form.addRow("Rank r", rank_row)

        self.alpha = QDoubleSpinBox()
        self.alpha.setRange(0.01, 100000)
        self.alpha.setDecimals(2)
        self.alpha.setToolTip("alpha: the update is scaled by alpha / r")
        self.twice = QToolButton()
        self.twice.setObjectName("Link")
        self.twice.setText("= 2 × r")
        self.twice.setToolTip("Set alpha to twice the rank (a common choice)")
        alpha_row = QHBoxLayout()
        alpha_row.addWidget(self.alpha, 1)
        alpha_row.addWidget(self.twice)
        self.form.addRow("Alpha α", alpha_row)

        self.dropout = QDoubleSpinBox()
        self.dropout.setRange(0.0, 0.95)
        self.dropout.setSingleStep(0.05)
        self.dropout.setDecimals(2)
        self.dropout.setToolTip("Dropout on the adapter's input (0 = off, fastest)")
        self.form.addRow("Dropout", self.dropout)

        self.rslora = QCheckBox("rsLoRA (s = α / √r)")
        self.rslora.setToolTip("Rank-stabilised scaling: keeps the update's size steady as r grows")
        self.form.addRow("", self.rslora)
        self.scaling = label("", "CardAccent")
        self.form.addRow("Scaling", self.scaling)
        self.rslora_hint = label("", "Hint", wrap=True)
        self.form.addRow("", self.rslora_hint)

        self.rank.valueChanged.connect(lambda v: session.set_lora(rank=int(v)))
        self.slider.valueChanged.connect(lambda i: self.rank.setValue(RANKS[i]))
        self.alpha.valueChanged.connect(lambda v: session.set_lora(alpha=float(v)))
        self.twice.clicked.connect(lambda: self.alpha.setValue(2 * self.rank.value()))
        self.dropout.valueChanged.connect(lambda v: session.set_lora(dropout=float(v)))
        self.rslora.toggled.connect(lambda on: session.set_lora(rslora=bool(on)))
        session.changed.connect(lambda s: s == "lora" and self._sync())
        self._sync()

    def _sync(self):
        lc = self.session.draft.lora
        for w, v in ((self.rank, int(lc.rank)), (self.alpha, float(lc.alpha)), (self.dropout, float(lc.dropout)),
                     (self.rslora, bool(lc.rslora))):
            bind(w, v)
        bind(self.slider, min(range(len(RANKS)), key=lambda i: abs(RANKS[i] - lc.rank)))
        formula = f"α / √r = {lc.alpha:g} / √{lc.rank}" if lc.rslora else f"α / r = {lc.alpha:g} / {lc.rank}"
        self.scaling.setText(f"s = {formula} = {self.session.scaling():.3g}")
        factor = lc.rank ** 0.5  # (α / √r) / (α / r)
        self.rslora_hint.setText(f"rsLoRA multiplies the update by ×{factor:.2g} at r = {lc.rank} compared with "
                                 f"α / r = {lc.alpha / lc.rank:.3g}: lower the learning rate or α to match"
                                 if lc.rslora else "")
        self.rslora_hint.setVisible(bool(lc.rslora))
