"""Targets: projections (q k v o gate up down, those the model has) as columns against layers as
rows. Click a cell, a column header, a row header or a preset; the session turns the ticks into
LoraConfig.targets / layers and the budget follows."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QFrame, QGridLayout, QPushButton, QScrollArea,
                               QToolButton, QVBoxLayout, QWidget)

from lora_studio.core.names import ATTENTION, LOGICAL
from lora_studio.ui.session import Session
from lora_studio.ui.style import repolish
from lora_studio.ui.widgets import label
from lora_studio.ui.bind import bind

NAMES = {"q": "query", "k": "key", "v": "value", "o": "output", "gate": "gate", "up": "up", "down": "down"}
PRESETS = (("Paper default (q+v)", ("q", "v")), ("All attention", ATTENTION), ("Attention + MLP", LOGICAL))


class TargetsGrid(QWidget):
    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self.cells: dict[tuple[str, int], QCheckBox] = {}
        self.columns: dict[str, QToolButton] = {}
        self.rows: dict[int, QToolButton] = {}
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(10)

        presets = QGridLayout()  # two rows: the column stays narrow enough for a 1280 px window
        presets.setSpacing(6)
        self.presets: dict[str, QPushButton] = {}
        for i, (text, targets) in enumerate(PRESETS):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, t=targets: self.preset(t))
            presets.addWidget(b, i // 2, i % 2)
            self.presets[text] = b
        self.clear = QPushButton("Clear")
        self.clear.clicked.connect(lambda: session.set_cells(set()))
        presets.addWidget(self.clear, len(PRESETS) // 2, len(PRESETS) % 2)
        presets.setColumnStretch(2, 1)
        lay.addLayout(presets)

        self.summary = label("", "Hint", wrap=True)
        lay.addWidget(self.summary)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.viewport().setAutoFillBackground(False)
        lay.addWidget(self.scroll, 1)
        self._empty("Loading the model …")

        session.model_ready.connect(self._rebuild)
        session.cells_changed.connect(self._sync)
        session.model_failed.connect(lambda f, ref: self.session.info is None and self._empty(f.message))
        if session.info is not None:
            self._rebuild(session.info)

    def _empty(self, text: str):
        w = label(text, "Hint", wrap=True)
        w.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.scroll.setWidget(w)
        self.cells, self.columns, self.rows = {}, {}, {}

    def _rebuild(self, info):
        body = QWidget()
        body.setObjectName("GridBody")
        grid = QGridLayout(body)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(4)
        self.cells, self.columns, self.rows = {}, {}, {}
        col_of = {}
        col = 1
        for t in info.targets:
            if t in ("gate", "up", "down") and col_of and all(c in ATTENTION for c in col_of):
                grid.setColumnMinimumWidth(col, 8)  # a gap between attention and MLP
                col += 1
            col_of[t] = col
            b = QToolButton()
            b.setObjectName("GridHeader")
            b.setText(t)
            b.setToolTip(f"{NAMES.get(t, t)} projection: tick or untick it in every layer")
            b.setMinimumWidth(30)
            b.clicked.connect(lambda _=False, t=t: self.toggle_column(t))
            grid.addWidget(b, 0, col, Qt.AlignHCenter)
            self.columns[t] = b
            col += 1
        layers = sorted({l for _, l in info.cells})
        for r, layer in enumerate(layers, start=1):
            b = QToolButton()
            b.setObjectName("GridHeader")
            b.setText(f"layer {layer}")
            b.setToolTip(f"Tick or untick every projection of layer {layer}")
            b.clicked.connect(lambda _=False, l=layer: self.toggle_row(l))
            grid.addWidget(b, r, 0, Qt.AlignRight)
            self.rows[layer] = b
            for t in info.targets:
                if (t, layer) not in info.cells:
                    continue
                box = QCheckBox()
                box.setObjectName("Cell")
                box.setToolTip(f"{info.cells[(t, layer)]} ({NAMES.get(t, t)})")
                box.setCursor(Qt.PointingHandCursor)
                box.toggled.connect(lambda on, c=(t, layer): self._toggled(c, on))
                grid.addWidget(box, r, col_of[t], Qt.AlignHCenter)
                self.cells[(t, layer)] = box
        grid.setColumnStretch(col, 1)
        grid.setRowStretch(len(layers) + 1, 1)
        self.scroll.setWidget(body)
        for text, targets in PRESETS:
            self.presets[text].setVisible(any(t in info.targets for t in targets))
        self._sync()

    # -- actions (also what the tests click) ---------------------------------------------
    def cell(self, target: str, layer: int) -> QCheckBox:
        return self.cells[(target, layer)]

    def preset(self, targets):
        self.session.set_cells({c for c in self.cells if c[0] in targets})

    def toggle_column(self, target: str):
        column = {c for c in self.cells if c[0] == target}
        current = set(self.session.cells)
        self.session.set_cells(current - column if column <= current else current | column)

    def toggle_row(self, layer: int):
        row = {c for c in self.cells if c[1] == layer}
        current = set(self.session.cells)
        self.session.set_cells(current - row if row <= current else current | row)

    def _toggled(self, cell, on: bool):
        current = set(self.session.cells)
        self.session.set_cells(current | {cell} if on else current - {cell})

    # -- session -> view -----------------------------------------------------------------
    def _sync(self):
        chosen = self.session.cells
        for c, box in self.cells.items():
            bind(box, c in chosen)
        for t, b in self.columns.items():
            b.setProperty("full", all(c in chosen for c in self.cells if c[0] == t))
            repolish(b)
        for l, b in self.rows.items():
            b.setProperty("full", all(c in chosen for c in self.cells if c[1] == l))
            repolish(b)
        lc = self.session.draft.lora
        cells = self.session.info.cells if self.session.info else {}
        n_modules = len({cells[c] for c in chosen if c in cells})
        if self.session.cells_problem:
            self.summary.setText(self.session.cells_problem)
        elif chosen:
            exact = any(t not in NAMES for t in lc.targets)
            what = "chosen layers and projections (by module name)" if exact else \
                f"{' + '.join(lc.targets)} in {'every layer' if lc.layers == 'all' else 'layers ' + lc.layers}"
            self.summary.setText(f"{what} · {n_modules} matrices adapted")
        else:
            self.summary.setText("Nothing ticked: tick at least one projection.")
