"""The module picker: adapted matrices grouped by layer, ticked to be plotted, each ticked one
with a swatch of its curve colour, and its effective rank beside it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QFrame, QHeaderView, QTreeWidget, QTreeWidgetItem

from lora_studio.ui.bind import quiet

KEY = Qt.UserRole + 1  # the (name, target) of a module row


def swatch(color: str) -> QIcon:
    pm = QPixmap(24, 24)
    pm.fill(Qt.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.Antialiasing)
    p.setPen(Qt.NoPen)
    p.setBrush(QColor(color))
    p.drawRoundedRect(4, 4, 16, 16, 4, 4)
    p.end()
    return QIcon(pm)


class ModuleTree(QTreeWidget):
    """Signals:
        toggled(object, bool): the user ticked (True) or unticked a module, by its key
        focused(object): the key of the module row made current (None for a layer row)
    """

    toggled = Signal(object, bool)
    focused = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels(["Module", "Eff. rank"])
        self.header().setStretchLastSection(False)
        self.header().setSectionResizeMode(0, QHeaderView.Stretch)
        self.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.setUniformRowHeights(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setIndentation(14)
        self.itemChanged.connect(self._changed)
        self.currentItemChanged.connect(lambda item, _: self.focused.emit(item.data(0, KEY) if item else None))

    def rebuild(self, names: dict, tips: dict):
        """names: key -> (layer, projection), in display order; tips: key -> tooltip."""
        with quiet(self):
            self.clear()
            groups: dict = {}
            for key, (layer, proj) in names.items():
                parent = groups.get(layer)
                if parent is None:
                    parent = groups[layer] = QTreeWidgetItem(self, ["Other" if layer is None else f"Layer {layer}", ""])
                    parent.setFlags(parent.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsAutoTristate)
                    parent.setExpanded(True)
                leaf = key[0].rsplit(".", 1)[-1]
                short = leaf == proj or leaf.startswith(proj)  # q_proj, query: "q" says it all
                child = QTreeWidgetItem(parent, [proj if short else f"{proj} · {leaf}", ""])
                child.setData(0, KEY, key)
                child.setToolTip(0, tips[key])
                child.setFlags(child.flags() | Qt.ItemIsUserCheckable)
                child.setTextAlignment(1, Qt.AlignRight | Qt.AlignVCenter)
                child.setCheckState(0, Qt.Unchecked)

    def children(self):
        for i in range(self.topLevelItemCount()):
            parent = self.topLevelItem(i)
            for j in range(parent.childCount()):
                yield parent.child(j)

    def set_values(self, values: dict):
        """values: key -> text of the second column."""
        for child in self.children():
            text = values.get(child.data(0, KEY))
            if text is not None and child.text(1) != text:
                child.setText(1, text)

    def set_checked(self, colors: dict):
        """Tick exactly the keys of `colors` (key -> curve colour), without emitting `toggled`."""
        with quiet(self):
            for child in self.children():
                color = colors.get(child.data(0, KEY))
                child.setCheckState(0, Qt.Checked if color else Qt.Unchecked)
                child.setIcon(0, swatch(color) if color else QIcon())
            for i in range(self.topLevelItemCount()):  # auto-tristate parents follow only user clicks
                parent = self.topLevelItem(i)
                states = {parent.child(j).checkState(0) for j in range(parent.childCount())}
                parent.setCheckState(0, states.pop() if len(states) == 1 else Qt.PartiallyChecked)

    def checked(self) -> list:
        return [c.data(0, KEY) for c in self.children() if c.checkState(0) == Qt.Checked]

    def _changed(self, item, column):
        key = item.data(0, KEY)
        if key is not None and column == 0:
            self.toggled.emit(key, item.checkState(0) == Qt.Checked)
