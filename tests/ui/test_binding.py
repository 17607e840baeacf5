"""Guard against the Qt binding's None leak (PySide6-Essentials 6.12.0 on Python 3.11 drops a
reference to None on every void call, and a long-running app aborts with `deallocating None`)."""

import sys

import pytest


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 (PEP 683): its "
                    "reference count is constant, so a leak can neither be seen nor abort the app")
def test_void_calls_do_not_leak_none(qtbot):
    from PySide6.QtWidgets import QWidget

    w = QWidget()
    qtbot.addWidget(w)
    before = sys.getrefcount(None)
    for _ in range(2000):
        w.setEnabled(True)
    assert sys.getrefcount(None) >= before - 50
