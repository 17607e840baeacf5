"""The sortable summary table: one row per adapted matrix (per slice of a fused module).

Rows are updated in place when the same modules come again (live training), so the user's sort
order, scroll position and selection survive a refresh.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

KEY = Qt.UserRole + 1  # the (name, target) of a row
SORT = Qt.UserRole + 2  # the number a column sorts by

COLUMNS = [
    ("Module", "Module path (and slice of a fused module)"),
    ("Rank", "r of the adapter"),
    ("Eff. rank", "Effective rank: exp of the entropy of σ/Σσ (Roy & Vetterli)"),
    ("r90", "Smallest k keeping 90% of the energy Σσ²"),
    ("r99", "Smallest k keeping 99% of the energy Σσ²"),
    ("Stable", "Stable rank ‖ΔW‖_F² / σ₁²"),
    ("‖ΔW‖_F", "Frobenius norm of the update s·B·A"),
    ("Ampl.", "Amplification factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F (paper §7.3); needs the base weights"),
]
WIDTHS = (0, 52, 82, 46, 46, 62, 78, 60)


def _fmt(v, kind: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if kind == "int":
        return str(int(v))
    if kind == "norm":
        return f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 else f"{v:.3e}"
    return f"{v:.2f}"


class SummaryTable(QTableView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.source = QStandardItemModel(0, len(COLUMNS), self)
        for i, (title, tip) in enumerate(COLUMNS):
            item = QStandardItem(title)
            item.setToolTip(tip)
            item.setTextAlignment((Qt.AlignLeft if i == 0 else Qt.AlignRight) | Qt.AlignVCenter)
            self.source.setHorizontalHeaderItem(i, item)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.source)
        self.proxy.setSortRole(SORT)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(-1, Qt.AscendingOrder)  # module order until the user sorts
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(24)
        h = self.horizontalHeader()
        h.setSectionResizeMode(QHeaderView.Interactive)
        h.setSectionResizeMode(0, QHeaderView.Stretch)
        h.setHighlightSections(False)
        h.setDefaultAlignment(Qt.AlignRight | Qt.AlignVCenter)
        for i, w in enumerate(WIDTHS[1:], 1):
            self.setColumnWidth(i, w)
        h.setMinimumSectionSize(40)
        self.setTextElideMode(Qt.ElideLeft)  # keep the informative end: …self_attn.q_proj
        self._keys: list[tuple] = []

    def set_rows(self, rows: list[tuple[tuple, str, object]]):
        """rows: (key, label, ModuleSpectrum), in module order."""
        keys = [r[0] for r in rows]
        if keys != self._keys:
            self.source.removeRows(0, self.source.rowCount())
            for i in range(len(rows)):
                self.source.appendRow([self._item(col) for col in range(len(COLUMNS))])
            self._keys = keys
        for i, (key, text, s) in enumerate(rows):
            cells = [
                (text, i, None),
                (s.rank, s.rank, "int"), (s.effective_rank, s.effective_rank, "float"),
                (s.rank90, s.rank90, "int"), (s.rank99, s.rank99, "int"),
                (s.stable_rank, s.stable_rank, "float"), (s.frobenius, s.frobenius, "norm"),
                (s.amplification, -1.0 if s.amplification is None else s.amplification, "float"),
            ]
            for col, (value, sort, kind) in enumerate(cells):
                item = self.source.item(i, col)
                shown = value if kind is None else _fmt(value, kind)
                if item.text() != shown:
                    item.setText(shown)
                if item.data(SORT) != sort:
                    item.setData(sort, SORT)
                item.setData(key, KEY)
            self.source.item(i, 0).setToolTip(key[0] + (f" [{key[1]}]" if key[1] else ""))

    @staticmethod
    def _item(col: int) -> QStandardItem:
        item = QStandardItem()
        item.setTextAlignment((Qt.AlignLeft if col == 0 else Qt.AlignRight) | Qt.AlignVCenter)
        return item

    def row_count(self) -> int:
        return self.source.rowCount()

    def key_at(self, proxy_row: int):
        return self.proxy.index(proxy_row, 0).data(KEY)

    def cell_text(self, key, column: str) -> str:
        i = self._keys.index(key)
        return self.source.item(i, [c for c, _ in COLUMNS].index(column)).text()
