"""Small building blocks shared by the panels: titled sections, number cards, icons, formatting."""

from __future__ import annotations

import html
import re

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QPainter, QPixmap, QValidator
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QDoubleSpinBox, QFormLayout, QFrame, QHBoxLayout,
                               QLabel, QLineEdit, QSizePolicy, QToolButton, QVBoxLayout, QWidget)

from lora_studio.core.units import human_bytes, human_count

# 24x24 outline icons (stroke = the colour passed to `icon`)
_PATHS = {
    "play": '<path d="M8 5.5v13l10-6.5z" fill="{c}" stroke="{c}" stroke-linejoin="round"/>',
    "pause": '<rect x="6.5" y="5" width="4" height="14" rx="1" fill="{c}"/><rect x="13.5" y="5" width="4" height="14" rx="1" fill="{c}"/>',
    "stop": '<rect x="6" y="6" width="12" height="12" rx="2" fill="{c}"/>',
    "folder": '<path d="M3.5 7.5a2 2 0 0 1 2-2h4l2 2h7a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-13a2 2 0 0 1-2-2z" fill="none" stroke="{c}" stroke-width="1.8"/>',
    "export": '<path d="M12 4v11M7.5 8.5 12 4l4.5 4.5M5 14.5V19h14v-4.5" fill="none" stroke="{c}" stroke-width="1.9" stroke-linecap="round" stroke-linejoin="round"/>',
    "resume": '<path d="M5 12a7 7 0 1 0 2.1-5" fill="none" stroke="{c}" stroke-width="1.9" stroke-linecap="round"/><path d="M6.5 3.5v4h4" fill="none" stroke="{c}" stroke-width="1.9" stroke-linecap="round" stroke-linejoin="round"/>',
}


def icon(name: str, color: str = "#ffffff", size: int = 24) -> QIcon:
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">{_PATHS[name].format(c=color)}</svg>'
    renderer = QSvgRenderer(QByteArray(svg.encode()))
    pm = QPixmap(QSize(size * 2, size * 2))
    pm.fill(Qt.transparent)
    p = QPainter(pm)
    renderer.render(p)
    p.end()
    return QIcon(pm)


def app_icon() -> QIcon:
    from importlib.resources import files

    path = files("lora_studio.resources") / "icons" / "lora-studio.svg"
    return QIcon(str(path)) if path.is_file() else QIcon()


def label(text: str = "", name: str | None = None, wrap: bool = False, selectable: bool = False) -> QLabel:
    w = QLabel(text)
    if name:
        w.setObjectName(name)
    w.setWordWrap(wrap)
    if selectable:
        w.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return w


NB_HYPHEN = "\u2011"  # a hyphen Qt never breaks a line after
LINE_KEY = "#8a8f98"  # a legend's "━━ train ╍╍ eval" key: a grey readable on both themes


def legend_label() -> QLabel:
    """A plot's legend as a wrapping label, placed under the plot: it never covers a curve."""
    legend = QLabel()
    legend.setObjectName("Hint")
    legend.setWordWrap(True)
    legend.setTextFormat(Qt.RichText)
    legend.setContentsMargins(8, 0, 4, 2)
    return legend


def legend_html(entries: list[tuple[str, str, bool]]) -> str:
    """entries: (name, colour, dashed); a line breaks only between two entries (a name's hyphens
    are non-breaking ones: Qt breaks after "-" even inside <nobr>)."""
    def entry(name: str, color: str, dashed: bool) -> str:
        text = html.escape(name).replace(" ", "&nbsp;").replace("-", NB_HYPHEN)
        return f'<nobr><span style="color:{color}">{"╍╍" if dashed else "━━"}</span>&nbsp;{text}</nobr>'

    return "&nbsp;&nbsp; ".join(entry(*e) for e in entries)


class ElidedLabel(QLabel):
    """One line of text that shortens with "…" when there is no room, instead of either clipping
    or forcing its parent wider. `text()` is the whole text; when shortened (and
    `tooltip_full`) the whole text is the tooltip."""

    def __init__(self, text: str = "", name: str | None = None, min_chars: int = 6, tooltip_full: bool = True):
        super().__init__()
        if name:
            self.setObjectName(name)
        self._full, self._min_chars, self._tooltip_full = "", min_chars, tooltip_full
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        self.setText(text)

    def text(self) -> str:
        return self._full

    def setText(self, text: str):
        self._full = str(text)
        self._elide()
        self.updateGeometry()

    def _elide(self):
        width = self.contentsRect().width() - 2 * self.margin()
        shown = self.fontMetrics().elidedText(self._full, Qt.ElideRight, width) if width > 0 else self._full
        if shown != QLabel.text(self):
            QLabel.setText(self, shown)
        if self._tooltip_full:
            self.setToolTip(self._full if shown != self._full else "")

    def _extra(self) -> int:  # frame, padding and margins around the text
        return QLabel.sizeHint(self).width() - self.fontMetrics().horizontalAdvance(QLabel.text(self))

    def sizeHint(self) -> QSize:
        h = QLabel.sizeHint(self)
        return QSize(self._extra() + self.fontMetrics().horizontalAdvance(self._full), h.height())

    def minimumSizeHint(self) -> QSize:
        full = self.sizeHint()
        short = self._extra() + self.fontMetrics().horizontalAdvance("M" * self._min_chars)
        return QSize(min(full.width(), short), full.height())

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self._elide()


class Section(QFrame):
    """A rounded panel with a small uppercase title; `body` is a QVBoxLayout, `form` a QFormLayout.
    `collapsible`: a click on the title folds the panel to its title (remembered per title)."""

    def __init__(self, title: str, parent=None, right: QWidget | None = None, collapsible: bool = False):
        super().__init__(parent)
        self.setObjectName("Section")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 12, 14, 14)
        outer.setSpacing(8)
        head = QHBoxLayout()
        self._title = title
        if collapsible:
            self.toggle = QToolButton()
            self.toggle.setObjectName("SectionTitle")
            self.toggle.setStyleSheet("QToolButton { border: none; background: transparent; padding: 0; }")
            self.toggle.setCursor(Qt.PointingHandCursor)
            self.toggle.setToolTip("Click to fold or unfold this section")
            self.toggle.clicked.connect(lambda: self.set_collapsed(not self.collapsed))
            head.addWidget(self.toggle)
        else:
            self.toggle = None
            head.addWidget(label(title.upper(), "SectionTitle"))
        head.addStretch(1)
        if right is not None:
            head.addWidget(right)
        outer.addLayout(head)
        self.content = QWidget()
        self.body = QVBoxLayout(self.content)
        self.body.setContentsMargins(0, 0, 0, 0)
        self.body.setSpacing(8)
        outer.addWidget(self.content)
        self._form = None
        self.collapsed = False
        if collapsible:
            self.set_collapsed(QSettings().value(f"sections/{title}/collapsed", False, type=bool))

    def set_collapsed(self, collapsed: bool):
        self.collapsed = bool(collapsed)
        self.content.setVisible(not self.collapsed)
        if self.toggle is not None:
            self.toggle.setText(("▸ " if self.collapsed else "▾ ") + self._title.upper())
            QSettings().setValue(f"sections/{self._title}/collapsed", self.collapsed)

    @property
    def form(self) -> QFormLayout:
        if self._form is None:
            self._form = QFormLayout()
            self._form.setLabelAlignment(Qt.AlignLeft | Qt.AlignVCenter)
            self._form.setHorizontalSpacing(12)
            self._form.setVerticalSpacing(8)
            self._form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
            self.body.addLayout(self._form)
        return self._form


class Card(QFrame):
    """A number that matters: small title, big value, a line of context under it."""

    def __init__(self, title: str, parent=None, small: bool = False, steady: bool = False, lines: int = 1):
        """`steady`: texts that never change the card's size (live readouts: a text change then
        repaints the label only, not the layout around it); the sub-line is one elided line, or
        with `lines` > 1 that many wrapped lines of fixed height (numbers that must show whole)."""
        super().__init__(parent)
        self.setObjectName("Card")
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 12, 16, 12)
        lay.setSpacing(2)
        self.title = label(title, "CardTitle", wrap=not steady)  # wraps rather than widen the window
        self.value = label("–", "CardValueSmall" if small else "CardValue", selectable=True)
        self.sub = ElidedLabel("", "CardSub") if steady and lines == 1 else label("", "CardSub", wrap=True)
        if steady:
            for w in (self.value, self.sub):
                w.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
                w.setMinimumWidth(40)
            if lines > 1:
                self.sub.ensurePolished()  # the stylesheet's font, before measuring it
                fm = self.sub.fontMetrics()
                self.sub.setFixedHeight(lines * fm.lineSpacing() + 2)
                self.sub.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        lay.addWidget(self.title)
        lay.addWidget(self.value)
        lay.addWidget(self.sub)
        self.extra = QVBoxLayout()
        self.extra.setSpacing(4)
        lay.addLayout(self.extra)
        lay.addStretch(1)

    def set(self, value: str, sub: str = ""):
        self.value.setText(value)
        self.sub.setText(sub)


def parse_number(text: str) -> float | None:
    """A number as typed, in any locale: "0,0003", "0.0003", "3e-4", "1.000,5" and "1,000.5" are all
    read; None when it is not a number (a comma is never silently dropped)."""
    t = str(text).strip().replace(" ", "").replace("\u00a0", "")
    if "," in t and "." in t:  # the later one is the decimal separator, the other groups digits
        group = "," if t.rfind(",") < t.rfind(".") else "."
        t = t.replace(group, "")
    t = t.replace(",", ".")
    try:
        return float(t)
    except ValueError:
        return None


class NumberValidator(QValidator):
    """Accepts what `parse_number` reads (and its intermediate states while typing)."""

    def validate(self, text, pos):
        if re.fullmatch(r"[0-9.,eE+\- \u00a0]*", text) is None:
            return QValidator.Invalid, text, pos
        return (QValidator.Acceptable if parse_number(text) is not None else QValidator.Intermediate), text, pos


class RangeSpin(QDoubleSpinBox):
    """A number field that says why a typed number was not taken. A plain spin box is silent: it
    drops a key that would go past the maximum (or a minus sign), and on Enter puts the last value
    back for a number under the minimum.

    Signals:
        refused(str): "<name> takes <span>, not <typed>" (the field kept its last value)
    """

    refused = Signal(str)

    def __init__(self, name: str, lo: float, hi: float, span: str, decimals: int = 2, step: float = 1.0):
        super().__init__()
        self.name, self.span = name, span
        self.setRange(lo, hi)
        self.setDecimals(decimals)
        self.setSingleStep(step)
        self.setKeyboardTracking(False)  # taken on Enter or leaving the field, not key by key ("15" of "150")

    def validate(self, text, pos):
        result = super().validate(text, pos)
        if result[0] == QValidator.Invalid and self._check(text):  # the key is dropped: say why now
            # and show the value kept: "150" left "15" in the field, which Enter then took silently
            QTimer.singleShot(0, self._show_kept)
        return result

    def _show_kept(self):
        self.lineEdit().setText(self.prefix() + self.textFromValue(self.value()) + self.suffix())
        self.selectAll()

    def fixup(self, text):
        self._check(text)  # under the minimum (typing was still allowed: "1" may become "12")
        return super().fixup(text)

    def _check(self, text: str) -> bool:
        """Say why `text` is not taken, if it is a number out of range (or negative). True if said."""
        typed = str(text).removeprefix(self.prefix()).removesuffix(self.suffix()).strip()
        value = parse_number(typed)
        if value is None and typed.startswith("-") and self.minimum() >= 0:
            self.refused.emit(f"{self.name} takes {self.span}, not a negative number")
        elif value is not None and not self.minimum() <= value <= self.maximum():
            self.refused.emit(f"{self.name} takes {self.span}, not {typed}")
        else:
            return False
        return True


def commit_edits():
    """Commit the field being typed in, as leaving it would: a shortcut (Ctrl+Enter, Ctrl+S) must
    use what is on screen."""
    focus = QApplication.focusWidget()
    if isinstance(focus, QLineEdit) and isinstance(focus.parent(), QAbstractSpinBox):
        focus = focus.parent()
    if isinstance(focus, QAbstractSpinBox):
        focus.interpretText()
    elif isinstance(focus, QLineEdit):
        focus.editingFinished.emit()


def padded(w: QWidget, top: int = 12) -> QWidget:
    """`w` in a box with a margin above it (a tab's page)."""
    box = QWidget()
    lay = QVBoxLayout(box)
    lay.setContentsMargins(0, top, 0, 0)
    lay.addWidget(w)
    return box


def hline() -> QFrame:
    f = QFrame()
    f.setFrameShape(QFrame.HLine)
    f.setObjectName("Rule")
    f.setStyleSheet("color: palette(mid);")
    return f


def count(n: int | float | None) -> str:
    """Exact counts with thousands separators: 74,498."""
    return "–" if n is None else f"{int(n):,}"


def short_count(n: float) -> str:
    return human_count(n, 1)


size = human_bytes  # bytes with their unit (core/units.py)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def ask_config_path(parent, title: str, name: str) -> str:
    """A TOML file name to save a run configuration to, starting in the folder used last time
    (remembered); "" when the user cancels."""
    from pathlib import Path

    from PySide6.QtWidgets import QFileDialog

    st = QSettings()
    path, _ = QFileDialog.getSaveFileName(parent, title, str(Path(st.value("folders/config", "")) / name),
                                          "Run configuration (*.toml);;All files (*)")
    if path:
        st.setValue("folders/config", str(Path(path).parent))
    return path
