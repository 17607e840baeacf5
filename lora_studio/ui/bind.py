"""Showing a value in a widget without firing its change signals: the one home of signal blocking.

A panel's `_sync` copies the session into its widgets; the widgets' change signals are wired back
to the session, so those copies must not fire them (a loop, or an edit the user did not make).
`quiet(*widgets)` blocks the signals of a block of code (a list being refilled); `bind(widget, value)`
sets one value. Both use QSignalBlocker, which restores each widget's earlier blocked state.
"""

from __future__ import annotations

from contextlib import contextmanager

from PySide6.QtCore import QSignalBlocker
from PySide6.QtWidgets import QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit


@contextmanager
def quiet(*objects):
    """No signal from `objects` inside the block; each gets its earlier blocked state back after it."""
    blockers = [QSignalBlocker(o) for o in objects]
    try:
        yield
    finally:
        for b in reversed(blockers):
            b.unblock()


def bind(widget, value) -> bool:
    """Show `value` in `widget` (a check box or button: checked; a spin box or slider: value; a combo
    box: the item whose data is `value`, else the first; a line edit: text) without firing its change
    signals. Returns whether the widget changed."""
    if isinstance(widget, QAbstractButton):
        get, put, value = widget.isChecked, widget.setChecked, bool(value)
    elif isinstance(widget, (QAbstractSpinBox, QAbstractSlider)) and hasattr(widget, "setValue"):
        get, put = widget.value, widget.setValue
    elif isinstance(widget, QComboBox):
        get, put, value = widget.currentIndex, widget.setCurrentIndex, max(0, widget.findData(value))
    elif isinstance(widget, QLineEdit):
        get, put, value = widget.text, widget.setText, str(value)
    else:
        raise TypeError(f"bind: no value to set on a {type(widget).__name__}")
    if get() == value:
        return False
    with quiet(widget):
        put(value)
    return True
