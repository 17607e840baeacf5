"""ui/bind.py: the one home of "show a value without firing the widget's change signals"."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSlider, QSpinBox

from lora_studio.ui.bind import bind, quiet


def _recorder(signal) -> list:
    seen = []
    signal.connect(lambda *a: seen.append(a))
    return seen


def test_bind_sets_the_value_and_fires_no_signal(qtbot):
    spin, dspin, check, combo, edit, slider = QSpinBox(), QDoubleSpinBox(), QCheckBox(), QComboBox(), QLineEdit(), QSlider()
    spin.setRange(0, 100)
    slider.setRange(0, 10)
    for data in ("a", "b", "c"):
        combo.addItem(data.upper(), data)
    fired = [_recorder(spin.valueChanged), _recorder(dspin.valueChanged), _recorder(check.toggled),
             _recorder(combo.currentIndexChanged), _recorder(edit.textChanged), _recorder(slider.valueChanged)]
    assert bind(spin, 42) and spin.value() == 42
    assert bind(dspin, 0.5) and dspin.value() == 0.5
    assert bind(check, True) and check.isChecked()
    assert bind(combo, "c") and combo.currentData() == "c"
    assert bind(edit, "hello") and edit.text() == "hello"
    assert bind(slider, 7) and slider.value() == 7
    assert fired == [[], [], [], [], [], []]
    assert not bind(spin, 42)  # unchanged: nothing to do
    assert bind(combo, "not there") and combo.currentIndex() == 0  # unknown data: the first item
    spin.setValue(3)  # the signals are connected again afterwards
    assert fired[0] == [(3,)]


def test_quiet_blocks_a_block_and_restores_an_earlier_block(qtbot):
    a, b = QComboBox(), QSpinBox()
    seen_a, seen_b = _recorder(a.currentIndexChanged), _recorder(b.valueChanged)
    b.blockSignals(True)  # someone else blocked it already: quiet must not unblock it
    with quiet(a, b):
        a.addItems(["x", "y"])
        a.setCurrentIndex(1)
        b.setValue(5)
    assert seen_a == [] and seen_b == []
    assert not a.signalsBlocked() and b.signalsBlocked()
    a.setCurrentIndex(0)
    assert seen_a == [(0,)]


def test_a_panel_shows_the_session_without_editing_it_back(qtbot):
    """The adapter panel shows the session's rank through bind(): showing it is no edit, so the
    session hears nothing back (a blocked-signals copy; unblocked, the spin box and the slider would
    each call set_lora again)."""
    from lora_studio.ui.adapter_panel import RANKS, AdapterPanel
    from lora_studio.ui.session import Session

    session = Session()
    panel = AdapterPanel(session)
    qtbot.addWidget(panel)
    changes = _recorder(session.changed)
    session.set_lora(rank=16, rslora=True)
    assert panel.rank.value() == 16 and panel.rslora.isChecked() and RANKS[panel.slider.value()] == 16
    assert changes == [("lora",)]
    panel.rank.setValue(8)  # the user's edit still reaches the session
    assert session.draft.lora.rank == 8
