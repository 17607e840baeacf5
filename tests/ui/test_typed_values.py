"""A value typed in a field counts when the run starts by shortcut, without leaving the field,
in any locale (issue 13, item 1)."""

import pytest
from PySide6.QtCore import QLocale, Qt

from gui_helpers import captured_start, typed
from lora_studio.ui.widgets import parse_number


@pytest.mark.parametrize("text, value", [("0,0003", 3e-4), ("0.0003", 3e-4), ("3e-4", 3e-4), ("2E-4", 2e-4),
                                         ("1.000,5", 1000.5), ("1,000.5", 1000.5), ("abc", None), ("", None)])
def test_parse_number_reads_both_decimal_separators(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("locale, text, lr", [(QLocale(QLocale.German, QLocale.Germany), "0,0003", 3e-4),
                                                (QLocale(QLocale.English, QLocale.UnitedStates), "2e-4", 2e-4)])
def test_typed_learning_rate_counts_on_ctrl_enter(qtbot, window, monkeypatch, locale, text, lr):
    QLocale.setDefault(locale)
    try:
        started = captured_start(window, monkeypatch)
        s = window.train_settings
        typed(qtbot, s.lr, text)
        assert s.lr.text() == text  # the comma was not dropped while typing
        qtbot.keyClick(s.lr, Qt.Key_Return, Qt.ControlModifier)
        assert len(started) == 1 and started[0].train.lr == pytest.approx(lr, rel=1e-12)
        assert s.lr.hasFocus()
    finally:
        QLocale.setDefault(QLocale.c())


def test_typed_run_folder_and_steps_count_on_ctrl_enter(qtbot, window, monkeypatch, tmp_path):
    started = captured_start(window, monkeypatch)
    s = window.train_settings
    typed(qtbot, s.steps, "17")
    qtbot.keyClick(s.steps, Qt.Key_Enter, Qt.ControlModifier)
    assert started[-1].train.max_steps == 17
    folder = str(tmp_path / "typed-run")
    typed(qtbot, s.out, folder)
    qtbot.keyClick(s.out, Qt.Key_Return, Qt.ControlModifier)
    assert len(started) == 2 and started[-1].out == folder and started[-1].train.max_steps == 17
