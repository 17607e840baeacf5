"""The app opens fast (torch is imported by workers, not before the window shows) on the demo
model and the demo data, ready to train with one click."""

import subprocess
import sys
import textwrap

from gui_helpers import shut


def test_window_is_built_without_importing_torch():
    code = textwrap.dedent("""
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        from lora_studio.ui import app
        qapp = app.create_app([])
        window = app.create_window()
        window.show()
        heavy = sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules)
        print("HEAVY", heavy, flush=True)
        os._exit(0)  # workers start on the first event-loop turn: not here
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_default_window_is_the_demo_ready_to_train(qtbot):
    from lora_studio.engine.data import demo_path
    from lora_studio.ui.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    try:
        qtbot.waitUntil(lambda: w.session.info is not None and w.session.stats is not None, timeout=90_000)
        assert w.session.info.ref == "" and w.session.info.arch["model_type"] == "bert"
        assert w.session.preview.path == demo_path("classification")[0]
        assert w.session.draft.lora.targets == ["q", "v"]
        qtbot.waitUntil(w.header.start.isEnabled, timeout=30_000)  # a reload for the labels' count may follow
        assert "demo" in w.header.model.text()
        assert w.model_panel.path.currentText().startswith("Demo")
        # the head is sized for the demo's labels once they are counted
        qtbot.waitUntil(lambda: w.session.info.num_labels == len(w.session.stats.label_names) == 4, timeout=30_000)
        assert w.session.build().model.path == ""  # one click trains the packaged demo
        assert w.data_view.model.rowCount() > 0
    finally:
        shut(w)


def test_theme_switch_restyles_without_restart(window, qtbot):
    from PySide6.QtWidgets import QApplication

    window.set_theme("dark")
    assert QApplication.instance().property("lora_theme") == "dark"
    assert window.training.plots.view.backgroundBrush().color().name() == "#1c1f26"
    window.set_theme("light")
    assert window.training.plots.view.backgroundBrush().color().name() == "#ffffff"


def test_exception_in_a_gui_slot_becomes_a_dialog(window, dialogs, monkeypatch):
    import sys

    from lora_studio.engine import UserError
    from lora_studio.ui import app

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    hook = app.install_excepthook(window)
    try:
        raise KeyError("boom")
    except KeyError as e:
        hook(type(e), e, e.__traceback__)
    hook(UserError, UserError("rank must be a positive integer"), None)
    assert dialogs.kinds() == ["critical", "warning"]
    assert "KeyError" in dialogs.shown[0].text and "bug" in dialogs.shown[0].text
    assert dialogs.shown[1].text == "rank must be a positive integer"
    assert window.isVisible()


def test_window_fits_a_1280_pixel_screen_and_long_names_elide(window, qtbot):
    window.header.model.setText("a-very-long-model-name-from-a-deeply-nested-folder " * 3)
    assert window.minimumSizeHint().width() <= 1240  # 1280 minus a window frame
    window.resize(1240, 760)
    qtbot.waitUntil(lambda: window.width() == 1240)
    chip = window.header.model
    assert chip.text().startswith("a-very-long") and chip.width() < chip.sizeHint().width()
    from PySide6.QtWidgets import QLabel

    shown = QLabel.text(chip)
    assert shown.endswith("…") and len(shown) < len(chip.text())


def test_garbage_is_collected_in_the_gui_thread_only(qapp):
    """Automatic collection is off (a worker thread could otherwise free Qt objects) and the GUI
    thread's timer collects instead."""
    import gc

    from lora_studio.ui import app

    app.create_app()
    assert not gc.isenabled()
    timer = qapp._lora_studio_gc
    assert timer.isActive() and timer.thread() is qapp.thread()
