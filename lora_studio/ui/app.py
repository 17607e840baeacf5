"""`lora-studio` with no arguments: the application object, the style, the main window.

torch is not imported here: the window shows first, then workers load the model skeleton and
preview the data (the first of them imports torch and transformers off the GUI thread).
"""

from __future__ import annotations

import os
import sys

ORG, APP, DOMAIN = "LoRA Studio", "LoRA Studio", "lorastudio.github.io"
DESKTOP_ID = "io.github.lorastudio.LoraStudio"  # packaging/<id>.desktop: the Wayland app id
WM_CLASS = "lora-studio"  # the .desktop file's StartupWMClass (X11 instance name)


def create_app(argv=None):
    from PySide6.QtCore import QCoreApplication, QSettings
    from PySide6.QtWidgets import QApplication

    from lora_studio.ui import style
    from lora_studio.ui.widgets import app_icon

    # The training thread runs Python between torch kernels; a 1 ms GIL switch interval (5 ms by
    # default) lets the GUI thread's many short Python callbacks (painting) get in sooner.
    sys.setswitchinterval(0.001)
    app = QApplication.instance()
    if app is None:
        os.environ.setdefault("RESOURCE_NAME", WM_CLASS)
        QCoreApplication.setOrganizationName(ORG)
        QCoreApplication.setOrganizationDomain(DOMAIN)
        QCoreApplication.setApplicationName(APP)
        app = QApplication(list(argv) if argv is not None else sys.argv[:1])
        app.setDesktopFileName(DESKTOP_ID)
    app.setWindowIcon(app_icon())
    style.apply(app, QSettings().value("appearance/theme", "system"))
    collect_in_gui_thread(app)
    return app


def collect_in_gui_thread(app):
    """Python's cyclic garbage collector runs in whichever thread happens to allocate when its
    threshold trips; if that is a worker thread (a model skeleton, a training step) and the garbage
    holds Qt objects, Qt crashes (seen: a segfault in the Will-it-fit worker). So automatic
    collection is off while the app runs, and the GUI thread collects on a timer instead (as
    pyqtgraph's GarbageCollector does)."""
    if getattr(app, "_lora_studio_gc", None) is not None:
        return
    import gc

    from PySide6.QtCore import QTimer

    gc.disable()
    timer = QTimer(app)
    timer.setInterval(500)

    def collect():
        t0, t1, t2 = gc.get_threshold()
        n0, n1, n2 = gc.get_count()
        if n2 > t2:
            gc.collect(2)
        elif n1 > t1:
            gc.collect(1)
        elif n0 > t0:
            gc.collect(0)

    timer.timeout.connect(collect)
    timer.start()
    app._lora_studio_gc = timer


def create_window(config_path: str | None = None):
    from lora_studio.ui.main_window import MainWindow

    return MainWindow(config_path=config_path)


def install_excepthook(window):
    """An exception escaping a slot in the GUI thread becomes a dialog on `window` (and the
    traceback goes to stderr); Qt would otherwise print it and carry on as if nothing happened.
    Returns the hook (tests call it directly)."""
    import traceback

    from lora_studio.ui.tasks import Failure, failure_of

    previous = sys.excepthook

    def hook(etype, value, tb):
        if not issubclass(etype, Exception):  # KeyboardInterrupt, SystemExit: the default
            return previous(etype, value, tb)
        detail = "".join(traceback.format_exception(etype, value, tb))
        try:
            f = failure_of(value)
            if f.kind == "bug":
                f = Failure(f.message, "bug", detail)
            window.error("Something went wrong", f)
        except Exception:  # noqa: BLE001 - never let the hook itself take the app down
            print(detail, file=sys.stderr)

    sys.excepthook = hook
    return hook


def main(config_path: str | None = None, argv=None) -> int:
    """Open the workbench (on the demo model and data, or on a saved RunConfig TOML)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app = create_app(argv)
    window = create_window(str(config_path) if config_path else None)
    install_excepthook(window)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
