"""Where the GUI thread stalls between Start and the first training step.

    QT_QPA_PLATFORM=offscreen python benchmarks/trace_gui_setup.py [--runs 3]

The real main window on the demo (3 steps). Prints how long `MainWindow.start()` takes in the
GUI thread, then a timeline (seconds after Start) of the worker's status events as the GUI thread
receives them and of every stall over 25 ms (a 5 ms QTimer firing late), so each stall can be
placed against what the worker was doing. Run it in a fresh process per run (--runs spawns them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def trace() -> None:
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    from bench_gui import Lateness
    from lora_studio.config import DataConfig, ModelConfig, TrainConfig
    from lora_studio.ui import app
    from lora_studio.ui.main_window import MainWindow
    from lora_studio.ui.session import Draft

    QCoreApplication.setOrganizationName("LoRA Studio Bench")
    app.create_app([])
    out = Path(tempfile.mkdtemp(prefix="trace-gui-")) / "run"
    draft = Draft(model=ModelConfig(path=""), data=DataConfig(max_length=64),
                  train=TrainConfig(max_steps=3, batch_size=8, eval_every=0, save_every=0), out=str(out))
    w = MainWindow(draft, spectra_every=10)
    w.resize(1440, 900)
    w.show()
    loop, s = QEventLoop(), w.session
    ready = QTimer(interval=50)
    ready.timeout.connect(lambda: s.info and s.stats and s.info.num_labels == max(2, len(s.stats.label_names))
                          and loop.quit())
    ready.start()
    loop.exec()
    ready.stop()

    probe, events, t0 = Lateness(), [], [0.0]

    def tick():
        late = time.perf_counter() - probe.last - probe.interval
        if late > 0.025:
            events.append((time.perf_counter() - t0[0], f"stall {late * 1000:.1f} ms"))
        Lateness.tick(probe)

    probe.timer.timeout.disconnect()
    probe.timer.timeout.connect(tick)
    c = w.controller
    c.status.connect(lambda ev: events.append((time.perf_counter() - t0[0], f"status: {ev.message[:50]}")))
    c.started.connect(lambda ev: events.append((time.perf_counter() - t0[0], "started")))
    c.finished.connect(lambda ev: loop.quit())
    t0[0] = time.perf_counter()
    w.start()
    print(f"MainWindow.start(): {(time.perf_counter() - t0[0]) * 1000:.1f} ms")
    loop.exec()
    for t, what in events:
        print(f"  {t:6.3f} s  {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return trace()
    for i in range(a.runs):
        print(f"run {i + 1}")
        p = subprocess.run([sys.executable, __file__, "--one"], capture_output=True, text=True)
        print("\n".join(line for line in p.stdout.splitlines()), flush=True)
        if p.returncode:
            print(p.stderr[-2000:])


if __name__ == "__main__":
    main()
