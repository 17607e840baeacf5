"""The README's picture: the main window on the demo, mid-training, on the Training tab.

    QT_QPA_PLATFORM=offscreen python docs/make_screenshot.py [--steps 180] [--theme light|dark]

Starts the app as a user would (demo model and data), clicks Start, grabs the window once
`--steps` steps (at most half the run) have run, then stops the run (its folder goes to a temp dir) and quits.
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
    a = ap.parse_args()
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


if __name__ == "__main__":
    main()
