"""What a resize wrote, per matrix: rank before → after and the share of ‖ΔW‖_F it kept."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout

from lora_studio.ui.widgets import label


class ResizeReport(QDialog):
    """What `resize` wrote: ranks before → after and the fraction of ‖ΔW‖_F kept, per matrix.

    Signals:
        open_requested(str): the user wants to see the resized adapter's spectra
    """

    open_requested = Signal(str)

    def __init__(self, report: dict, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Adapter resized")
        self.report = report
        v = QVBoxLayout(self)
        before, after = report.get("params_before") or 0, report.get("params_after") or 0
        rows = report.get("modules", [])
        kept = [r["retained_frobenius"] for r in rows]
        head = label(f"Wrote {report.get('out')}", "Value", selectable=True)
        sub = (f"{before:,} → {after:,} adapter parameters ({after / before:.0%})" if before else "") + \
              (f" · ‖ΔW‖_F kept: {min(kept):.1%} worst, {sum(kept) / len(kept):.1%} mean" if kept else "")
        v.addWidget(head)
        v.addWidget(label(sub, "Hint", wrap=True))
        if report.get("note"):
            v.addWidget(label(report["note"], "Hint", wrap=True))
        self.table = QTableWidget(len(rows), 4)
        self.table.setHorizontalHeaderLabels(["Module", "Rank", "‖ΔW‖_F kept", "Energy kept"])
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setFocusPolicy(Qt.NoFocus)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        for i, r in enumerate(rows):
            name = r["name"] + (f" [{r['target']}]" if r.get("target") else "")
            cells = [name, f"{r['rank_before']} → {r['rank']}", f"{r['retained_frobenius']:.2%}",
                     f"{r['retained_energy']:.2%}"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment((Qt.AlignLeft if j == 0 else Qt.AlignRight) | Qt.AlignVCenter)
                if r.get("note"):
                    item.setToolTip(r["note"])
                self.table.setItem(i, j, item)
        h = self.table.horizontalHeader()
        h.setDefaultAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.table.horizontalHeaderItem(0).setTextAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        h.setSectionResizeMode(0, QHeaderView.Stretch)
        for j in (1, 2, 3):
            h.setSectionResizeMode(j, QHeaderView.ResizeToContents)
        v.addWidget(self.table, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        show = buttons.addButton("Show its spectra", QDialogButtonBox.ActionRole)
        show.clicked.connect(lambda: (self.open_requested.emit(str(report.get("out"))), self.accept()))
        buttons.rejected.connect(self.reject)
        v.addWidget(buttons)
        self.resize(640, 420)
