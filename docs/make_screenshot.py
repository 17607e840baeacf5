"""The README's picture: the main window on the demo, mid-training, on the Training tab.

    QT_QPA_PLATFORM=offscreen python docs/make_screenshot.py [--steps 180] [--theme light|dark]
    QT_QPA_PLATFORM=offscreen python docs/make_screenshot.py --tour docs/tour --size 1280x800 --steps 20

Starts the app as a user would (demo model and data), clicks Start, grabs the window once
`--steps` steps (at most half the run) have run, then stops the run (its folder goes to a temp dir) and quits.
With --tour DIR: one PNG per tab into DIR (targets, data, training mid-run, spectra, then after
Stop: try-it with an answer, runs), reduced to 256 colours so each stays small.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=180)
    ap.add_argument("--out", default=str(Path(__file__).with_name("screenshot.png")))
    ap.add_argument("--theme", default="light", choices=["light", "dark"])
    ap.add_argument("--size", default="1440x900")
    ap.add_argument("--tour", default="", help="folder: one screenshot per tab instead of the README's")
    a = ap.parse_args()
    if a.tour:
        return tour(a)
    out = os.path.abspath(a.out)
    os.chdir(tempfile.mkdtemp(prefix="lora-shot-"))  # the run folder ("runs/...") lands here

    from PySide6.QtCore import QTimer

    from lora_studio.ui.app import create_app, create_window

    app = create_app([sys.argv[0]])
    w = create_window()
    w.resize(*(int(x) for x in a.size.split("x")))
    w.show()
    w.set_theme(a.theme)
    c = w.controller
    state = {"clicked": False, "grabbed": False, "at": a.steps}
    # mid-training: --steps, or half the run when the run is shorter than that
    c.started.connect(lambda ev: state.update(at=min(a.steps, max(1, ev.total_steps // 2))))

    def tick():
        if not state["clicked"] and w.header.start.isEnabled():
            w.header.start.click()
            state["clicked"] = True
        elif state["clicked"] and not state["grabbed"] and c.last_step >= state["at"]:
            state["grabbed"] = True
            w.tabs.setCurrentWidget(w.training.parentWidget())
            QTimer.singleShot(600, grab)  # let the plots catch up with the last step

    def grab():
        w.grab().save(out)
        print(f"{out}: step {c.last_step}, run folder {os.getcwd()}")
        c.finished.connect(lambda _ev: app.quit())
        c.stop()

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(100)
    app.exec()


def save_small(widget, path: str):
    """The widget as a 256-colour PNG (UI pictures have few colours; a third of the bytes)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format_RGB32)
    image.convertToFormat(QImage.Format_Indexed8, Qt.ThresholdDither | Qt.PreferDither).save(path)
    print(f"{path}: {os.path.getsize(path) // 1024} KB")


def tour(a):
    out = Path(a.tour).resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="lora-tour-"))
    os.chdir(home)

    from PySide6.QtCore import QCoreApplication, QSettings, QTimer

    from lora_studio.ui.app import create_app, create_window

    QSettings.setDefaultFormat(QSettings.IniFormat)  # own settings: the runs land in the temp folder
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(home / "settings"))
    app = create_app([sys.argv[0]])
    QCoreApplication.setApplicationName("LoRA Studio Tour")
    QSettings().setValue("folders/runs_root", str(home / "runs"))
    w = create_window()
    w.resize(*(int(x) for x in a.size.split("x")))
    w.show()
    w.set_theme(a.theme)
    c = w.controller
    tabs = {w.tabs.tabText(i).lower().replace(" ", "-"): i for i in range(w.tabs.count())}

    def shot(tab: str, name: str, then, wait: int = 800):
        w.tabs.setCurrentIndex(tabs[tab])
        QTimer.singleShot(wait, lambda: (save_small(w, str(out / f"{name}.png")), then()))

    def ready():
        if not (w.header.start.isEnabled() and w.session.stats is not None):
            return QTimer.singleShot(200, ready)
        shot("targets", "1-targets", lambda: shot("data", "2-data", start))

    def start():
        w.header.start.click()
        watch()

    def watch():
        if c.last_step < a.steps:
            return QTimer.singleShot(200, watch)
        shot("training", "3-training", lambda: shot("spectra", "4-spectra", stop, wait=2500), wait=1200)

    def stop():
        c.finished.connect(lambda _ev: QTimer.singleShot(500, try_it))
        c.stop()

    def try_it():
        w.tabs.setCurrentIndex(tabs["try-it"])
        w.tryit.prompt.setPlainText("I was charged twice for my last order, please refund the second payment.")
        w.tryit.run.click()
        QTimer.singleShot(6000, lambda: shot("try-it", "5-try-it", runs, wait=100))

    def runs():
        w.runs.refresh()
        w.runs.table.selectRow(0)  # its curves in the overlay plot
        shot("runs", "6-runs", app.quit, wait=1500)

    QTimer.singleShot(500, ready)
    app.exec()


if __name__ == "__main__":
    main()
