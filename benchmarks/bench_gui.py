"""GUI responsiveness: time to a shown window, the GUI thread's longest stall while a real run
trains, and plot redraw time with 100k points.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--steps 30] [--points 100000] [--model PATH]

- shown: `lora-studio`'s window in a fresh interpreter, from process start to the first turn of
  the event loop after show() (median of 3); "interactive" adds the demo skeleton, i.e. when
  the targets grid and budget numbers are up (both measured by the child, from before its
  first import, plus interpreter start-up measured by the parent).
- stall: a 5 ms QTimer measures its own lateness while the window trains the demo model
  (MiniLM, batch 8 x 64 tokens) through the real Start button path; reported separately for
  the setup phase (worker imports and loads model and data) and the training steps.
- plot: TrainingPlots (1200 x 700) fed 100k steps; time of one full redraw (setData + paint)
  zoomed out and zoomed in, and of feeding the points.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHILD = textwrap.dedent("""
    import os, sys, time
    t0 = time.perf_counter()
    from PySide6.QtCore import QTimer, QCoreApplication
    from lora_studio.ui import app
    QCoreApplication.setOrganizationName("LoRA Studio Bench")
    qapp = app.create_app([])
    w = app.create_window()
    w.show()
    def shown():
        print("SHOWN", time.perf_counter() - t0, flush=True)
    def ready(info):
        print("READY", time.perf_counter() - t0, flush=True)
        os._exit(0)
    QTimer.singleShot(0, shown)
    w.session.model_ready.connect(ready)
    qapp.exec()
""")


def bench_shown(runs: int = 3) -> dict:
    startup = []
    shown, ready = [], []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        startup.append(time.perf_counter() - t)
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300).stdout
        values = dict(line.split() for line in out.splitlines() if line.startswith(("SHOWN", "READY")))
        shown.append(float(values["SHOWN"]))
        ready.append(float(values["READY"]))
    base = statistics.median(startup)
    return {"shown": base + statistics.median(shown), "interactive": base + statistics.median(ready)}


class Lateness:
    """A QTimer at `interval` ms that records how late each timeout fires, per phase."""

    def __init__(self, interval_ms: int = 5):
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.phase = "idle"
        self.samples: dict[str, list[float]] = {}
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setTimerType(self.timer.timerType().PreciseTimer)
        self.timer.timeout.connect(self.tick)
        self.timer.start(interval_ms)

    def tick(self):
        now = time.perf_counter()
        self.samples.setdefault(self.phase, []).append(max(0.0, now - self.last - self.interval))
        self.last = now

    def summary(self, phase: str) -> tuple[float, float, int]:
        s = sorted(self.samples.get(phase, [0.0]))
        return s[-1] * 1000, s[int(0.99 * (len(s) - 1))] * 1000, len(s)


def bench_stall(steps: int, model: str) -> dict:
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    from lora_studio.config import DataConfig, ModelConfig, TrainConfig
    from lora_studio.ui import app
    from lora_studio.ui.main_window import MainWindow
    from lora_studio.ui.session import Draft

    QCoreApplication.setOrganizationName("LoRA Studio Bench")
    qapp = app.create_app([])
    out = Path(tempfile.mkdtemp(prefix="bench-gui-")) / "run"
    draft = Draft(model=ModelConfig(path=model), data=DataConfig(max_length=64),
                  train=TrainConfig(max_steps=steps, batch_size=8, eval_every=0, save_every=0), out=str(out))
    w = MainWindow(draft, spectra_every=10)
    w.resize(1440, 900)
    w.show()
    loop = QEventLoop()
    s = w.session
    ready = QTimer(interval=50)  # the skeleton, the data statistics and the head sized for the labels
    ready.timeout.connect(lambda: s.info and s.stats and s.info.num_labels == max(2, len(s.stats.label_names))
                          and loop.quit())
    ready.start()
    loop.exec()
    ready.stop()
    probe = Lateness()
    result = {}
    w.controller.started.connect(lambda ev: (setattr(probe, "phase", "training"), result.update(device=ev.device_name)))
    w.controller.finished.connect(lambda ev: (setattr(probe, "phase", "done"), result.update(end=ev), loop.quit()))
    probe.phase = "setup"
    t0 = time.perf_counter()
    w.start()
    loop.exec()
    elapsed = time.perf_counter() - t0
    result["elapsed"] = elapsed
    for phase in ("setup", "training"):
        result[phase] = probe.summary(phase)
    w.close()
    qapp.processEvents()
    return result


def bench_plot(points: int) -> dict:
    import math

    from lora_studio.ui import app
    from lora_studio.ui.training.plots import TrainingPlots

    app.create_app([])
    plots = TrainingPlots()
    plots.timer.stop()
    plots.resize(1200, 700)
    plots.show()
    t = time.perf_counter()
    for i in range(1, points + 1):
        plots.add_step(i, 2.0 * math.exp(-i / 20000) + 0.1 * math.sin(i / 7.0), 1e-3 * (1 - i / points), 1.0)
        if i % 500 == 0:
            plots.add_eval(i, 2.0 * math.exp(-i / 20000) + 0.05, 0.5 + 0.4 * i / points)
    feed = time.perf_counter() - t

    def redraw() -> float:
        t = time.perf_counter()
        plots._dirty = True
        plots.flush()
        plots.view.grab()  # a full paint of the three plots into a pixmap (repaint() may be deferred)
        return (time.perf_counter() - t) * 1000

    redraw()
    zoomed_out = statistics.median(redraw() for _ in range(10))
    plots.loss.setXRange(points * 0.45, points * 0.55, padding=0)
    redraw()
    zoomed_in = statistics.median(redraw() for _ in range(10))
    return {"feed": feed, "out": zoomed_out, "in": zoomed_in}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30, help="training steps of the stall measurement")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--model", default="", help="model folder or hub id (default: the packaged demo)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["shown", "stall", "plot"])
    a = ap.parse_args()
    import platform

    import PySide6

    print(f"python {platform.python_version()}, PySide6 {PySide6.__version__}, {os.cpu_count()} CPUs, "
          f"QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM')}\n")
    print("| measurement | value |")
    print("|---|---|")
    if "shown" not in a.skip:
        s = bench_shown()
        print(f"| window shown after launch (median of 3) | {s['shown']:.2f} s |")
        print(f"| interactive: demo skeleton, targets grid and budget up | {s['interactive']:.2f} s |")
    if "plot" not in a.skip:
        p = bench_plot(a.points)
        print(f"| plot redraw, {a.points:,} points, zoomed out | {p['out']:.1f} ms |")
        print(f"| plot redraw, {a.points:,} points, 10 % in view | {p['in']:.1f} ms |")
        print(f"| feeding {a.points:,} steps into the plot buffers | {p['feed'] * 1000:.0f} ms |")
    if "stall" not in a.skip:
        r = bench_stall(a.steps, a.model)
        for phase, title in (("setup", "setup (worker loads model + data)"), ("training", f"{a.steps} training steps")):
            worst, p99, n = r[phase]
            print(f"| GUI thread stall during {title}: max / p99 | {worst:.1f} ms / {p99:.1f} ms ({n} ticks) |")
        print(f"| run: {type(r['end']).__name__} at step {r['end'].step}, {r['elapsed']:.1f} s on {r.get('device', '?')} | |")


if __name__ == "__main__":
    main()
