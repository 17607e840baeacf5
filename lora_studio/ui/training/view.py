"""The Training tab: readouts (step/total, loss, tokens/s, ETA, memory, device), a banner for
what happened (stopped, done, failed) with the next action, and the live plots; beside them, the
Samples view (answers to a few prompts at step 0 and each evaluation, causal LMs)."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QTabWidget, QVBoxLayout, QWidget, QFrame

from lora_studio.ui.style import repolish
from lora_studio.ui.wording import short_paths
from lora_studio.ui.training.plots import TrainingPlots
from lora_studio.ui.training.samples_view import SamplesView
from lora_studio.ui.training.worker import TrainingController
from lora_studio.ui.widgets import Card, duration, label, size
from lora_studio.ui.parts import Part


def evaluating_text(ev) -> str:
    """What an evaluation pass in progress says (engine.events.Evaluating)."""
    what = "base model" if ev.step == 0 else f"step {ev.step}"
    return f"Evaluating {what}… {ev.done:,}/{ev.total:,}"


def eval_line(step: int, loss, accuracy) -> str:
    """The Loss card's eval line: the step-0 evaluation is the base model's, and says so."""
    if loss is None or not math.isfinite(loss):
        return ""
    text = ("base eval " if step == 0 else "eval ") + f"{loss:.4f}"
    return text + (f"\nacc. {accuracy:.1%}" if accuracy is not None else "")


READY = "ready: press Start (Ctrl+Enter)"
WAITING = "Start waits · "


class Banner(QFrame):
    """One line about the run with up to two actions."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("Banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(14, 6, 10, 6)
        self.text = label("", wrap=True, selectable=True)
        lay.addWidget(self.text, 1)
        self.first = QPushButton()
        self.second = QPushButton()
        lay.addWidget(self.first)
        lay.addWidget(self.second)
        self.hide()

        self._slots = [None, None]
        self.first.clicked.connect(lambda: self._slots[0] and self._slots[0]())
        self.second.clicked.connect(lambda: self._slots[1] and self._slots[1]())

    def show_message(self, text: str, kind: str = "info", *actions):
        """`actions`: up to two (caption, slot) pairs, shown as buttons in that order."""
        self.setProperty("kind", kind)
        repolish(self)
        self.text.setText(text)
        actions = [a for a in actions if a] + [None, None]
        for i, button in enumerate((self.first, self.second)):
            caption, slot = actions[i] or ("", None)
            self._slots[i] = slot
            button.setText(caption)
            button.setVisible(bool(caption))
        self.show()


class TrainingView(QWidget, Part):
    """Signals:
        sig_continue(str): the user asked to continue this stopped run (the folder the banner names)
        sig_export(str): the user asked to export this run (the folder the banner names)
        sig_try(): the user asked to try the adapted model
        sig_open(str): the user asked to open this run (the interrupted run a relaunch found)
    """

    sig_continue = Signal(str)
    sig_export = Signal(str)
    sig_try = Signal()
    sig_open = Signal(str)

    def __init__(self, controller: TrainingController, parent=None):
        super().__init__(parent)
        self.controller = controller
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(12)
        cards = QHBoxLayout()
        cards.setSpacing(12)
        # two fixed lines: "epoch · lr", "eval · accuracy" and progress texts show whole at 1280 px
        self.step = Card("Step", small=True, steady=True, lines=2)
        self.progress = QProgressBar()
        self.progress.setMaximumHeight(6)
        self.progress.setTextVisible(False)
        self.step.extra.addWidget(self.progress)
        self.loss = Card("Loss (smoothed)", small=True, steady=True, lines=2)
        self.speed = Card("Throughput", small=True, steady=True)
        self.eta = Card("Time left", small=True, steady=True)
        self.memory = Card("Memory", small=True, steady=True, lines=2)
        for c in (self.step, self.loss, self.speed, self.eta, self.memory):
            cards.addWidget(c, 1)
        lay.addLayout(cards)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.plots = TrainingPlots()
        # the card shows the curve's last point: another smoothing changes it at once
        self.plots.smoothing_changed.connect(
            lambda _w: self.plots.ema.n and self.loss.value.setText(f"{self.plots.ema.y[self.plots.ema.n - 1]:.4f}"))
        frame = QFrame()
        frame.setObjectName("Card")
        fl = QVBoxLayout(frame)
        fl.setContentsMargins(8, 10, 12, 8)
        fl.addWidget(self.plots)
        self.samples = SamplesView()
        self.views = QTabWidget()
        self.views.setDocumentMode(True)
        self.views.addTab(frame, "Curves")
        self.views.addTab(self.samples, "Samples")
        lay.addWidget(self.views, 1)
        self.views.tabBar().hide()  # until a run that writes samples (a causal LM) is shown
        self.reset()

        self._last = None
        self._eval = None
        self._device = ""
        self.run_dir = ""  # the run the cards and the banner describe; its actions act on it alone
        # bytes the planner expects for this run; main_window may set its own callable
        self.memory_estimate = self._session_estimate
        self.timer = QTimer(self, interval=100)
        self.timer.timeout.connect(self._refresh)
        self.timer.start()
        c = controller
        c.status.connect(lambda ev: self.step.sub.setText(short_paths(ev.message)))
        c.started.connect(self._started)
        c.stepped.connect(self._stepped)
        c.evaluated.connect(self._evaluated)
        c.evaluating.connect(self._evaluating)
        c.samples.connect(self.samples.add)
        c.samples.connect(lambda ev: self.views.tabBar().show())
        c.paused.connect(lambda ev: self.banner.show_message(
            f"Paused after step {ev.step}. Try the adapter as it is now in the Try it tab, or resume (Space).",
            "info", self._try))
        c.resumed.connect(lambda ev: self.banner.hide())
        c.finished.connect(self._finished)

    def apply_theme(self, name: str):
        self.plots.apply_theme(name)

    def set_waiting(self, why: str):
        """Before a run, the Step card says what Start waits for (model, data, targets), or that it
        is ready: it said "press Start" while Start was disabled. A run's own text is left alone."""
        if self.step.sub.text().startswith((READY, WAITING)):
            self.step.sub.setText(f"{WAITING}{why}" if why else READY)

    def reset(self):
        self.step.set("–", READY)
        self.loss.set("–", "")
        self.speed.set("–", "tokens / s")
        self.eta.set("–", "")
        self.memory.set("–", "")
        self.progress.setValue(0)
        self.banner.hide()
        self._last, self._eval = None, None
        self.samples.clear()

    @property
    def _try(self):
        return ("Try it", self.sig_try.emit)

    def _continue(self, run_dir: str):
        """A banner action bound to `run_dir`, never to whatever run is shown when it is clicked."""
        return ("Continue run", lambda: self.sig_continue.emit(run_dir))

    def _export(self, run_dir: str):
        return ("Export…", lambda: self.sig_export.emit(run_dir))

    def set_task(self, task: str):
        """The plots of `task`; the Samples tab only for runs that write samples (not a classifier),
        so a classifier's curves keep the height on a laptop screen."""
        self.plots.set_task(task)
        samples = task != "classification"
        self.views.tabBar().setVisible(samples)
        if not samples:
            self.views.setCurrentIndex(0)

    # -- events --------------------------------------------------------------------------
    def _started(self, ev):
        from lora_studio.engine.samples import read_samples

        self.run_dir = ev.out
        self.banner.hide()
        if ev.start_step > 0:  # resumed: the samples written up to the checkpoint
            self.samples.load(read_samples(ev.out))
        self.progress.setRange(0, max(1, ev.total_steps))
        self.progress.setValue(ev.start_step)
        self.set_task(ev.task)
        self.plots.set_total(ev.total_steps)
        self.step.set(f"{ev.start_step} / {ev.total_steps}",
                      f"{ev.train_examples:,} train · {ev.validation_examples:,} validation examples")
        self.eta.set("–", f"elapsed {duration(ev.elapsed_before)}" if ev.elapsed_before else "")
        self.memory.set("–", "")
        self._device = ev.device
        self.memory.setToolTip("GPU memory held by tensors (the basis of the Targets tab's estimate)" if ev.device == "cuda"
                               else "resident memory of the whole process (Python, torch, the app and the tensors)")
        self._speed_sub = f"{ev.precision} · {ev.device_name}"
        self.speed.set("–", self._speed_sub)
        self.speed.setToolTip(f"{ev.device_name}, {ev.precision}, {ev.trainable_params:,} trainable parameters")

    def _evaluating(self, ev):
        self.step.sub.setText(evaluating_text(ev))

    def _stepped(self, ev):
        self._last = ev
        self.plots.add_step(ev.step, ev.loss, ev.lr, ev.grad_norm, ev.epoch)
        if getattr(ev, "stats", None):  # the objective's numbers (a preference run's rewards)
            self.plots.add_stats(ev.step, ev.stats)

    def _evaluated(self, ev):
        self._eval = ev
        self.plots.add_eval(ev.step, ev.eval_loss, ev.accuracy)
        if self.plots.ema.n and self._eval_text():  # the newest eval shows now, not at the next step
            self.loss.sub.setText(self._eval_text())

    def _eval_text(self) -> str:
        evl = self._eval
        return "" if evl is None else eval_line(evl.step, evl.eval_loss, evl.accuracy)

    def _refresh(self):
        ev = self._last
        if ev is None:
            return
        self._last = None
        self.progress.setMaximum(max(1, ev.total_steps))
        self.progress.setValue(ev.step)
        self.step.value.setText(f"{ev.step:,} / {ev.total_steps:,}")
        self.step.sub.setText(f"epoch {ev.epoch:.2f}\nlr {ev.lr:.2e}")
        ema = self.plots.ema.y[self.plots.ema.n - 1] if self.plots.ema.n else ev.loss
        self.loss.set(f"{ema:.4f}", self._eval_text() or f"last step {ev.loss:.4f}")
        self.speed.value.setText(f"{ev.tokens_per_s:,.0f} tok/s")
        if ev.padding is not None:  # tok/s counts real tokens; the padding share is what the step also computed
            mfu = f" · MFU {ev.mfu:.0%}" if ev.mfu is not None else ""
            self.speed.sub.setText(f"{ev.padding:.0%} padding{mfu}\n{getattr(self, '_speed_sub', '')}".rstrip())
        self.eta.set(duration(ev.eta), f"elapsed {duration(ev.elapsed)}")
        self.memory.value.setText(size(ev.mem_allocated))
        self.memory.sub.setText(f"peak {size(ev.mem_peak)} · {'GPU tensors' if self._device == 'cuda' else 'process RSS'}")

    def _finished(self, ev):
        from lora_studio.engine.events import Failed

        self._refresh()
        self.eta.value.setText("–")  # nothing is left to run; "elapsed" stays
        run_dir = getattr(ev, "out", "") or self.run_dir
        self._show_peak(ev)
        if isinstance(ev, Failed):
            self.step.sub.setText(f"failed at step {ev.step}")  # never a stale "Evaluating …"
            self._failed_banner(ev, run_dir)
            return
        self.step.sub.setText(f"stopped at step {ev.step:,} · resumable" if ev.stopped else f"done · {ev.step:,} steps")
        result = ""
        evl = self._eval  # the result is an evaluation of the trained weights, never the step-0 baseline
        fresh = ev.step > 0 and (not ev.stopped or (evl is not None and evl.step == ev.step))
        if fresh and ev.eval_loss is not None and math.isfinite(ev.eval_loss):
            result = f" Eval loss {ev.eval_loss:.4f}" + (f", accuracy {ev.accuracy:.1%}." if ev.accuracy is not None else ".")
        elif evl is not None and evl.step > 0 and evl.eval_loss is not None and math.isfinite(evl.eval_loss):
            result = f" Last eval (step {evl.step}): loss {evl.eval_loss:.4f}."
        if ev.stopped:
            self.banner.show_message(f"Stopped at step {ev.step}; a checkpoint is saved in {run_dir}.{result}",
                                     "info", self._continue(run_dir), self._export(run_dir))
        else:
            self.progress.setValue(self.progress.maximum())
            self.banner.show_message(f"Done: {ev.step} steps, adapter saved in {run_dir}.{result}", "info",
                                     self._try, self._export(run_dir))

    def _failed_banner(self, ev, run_dir: str):
        """The failure, with what to do about it (GUI #46: it had no action and stayed up): the
        dialog again ("Details…"), and Continue where the run can go on from its last checkpoint
        as it is (a full disk, once space is freed), else Dismiss."""
        from lora_studio.engine.runfolder import latest_checkpoint
        from lora_studio.ui.failure_dialog import show_failure
        from lora_studio.ui.wording import run_failure

        title, failure = run_failure(ev, run_dir)
        details = ("Details…", lambda: show_failure(self.window(), failure, title))
        resumable = ev.kind == "disk" and run_dir and latest_checkpoint(run_dir) is not None
        self.banner.show_message(f"Training failed at step {ev.step}: {ev.message}", "bad", details,
                                 self._continue(run_dir) if resumable else ("Dismiss", self.banner.hide))

    def _session_estimate(self) -> int | None:
        """The Targets tab's estimate (activations at the data's real length) of the window's session."""
        session = getattr(self.window(), "session", None)
        view = getattr(session, "budget", None)
        if view is None or view.budget is None:
            return None
        from lora_studio.ui.budget_panel import data_memory

        return data_memory(session, view.budget)[0].total

    def _show_peak(self, ev):
        """The measured peak, named by what it measures. On a GPU: tensors, set against the Targets
        tab's tensor estimate (same basis: training precision, batch × the data's longest example).
        On a CPU: the process's peak RSS (Python, torch, Qt and the tensors), never set against a
        tensor estimate."""
        from lora_studio.engine.fit import read_peak

        record = read_peak(ev.out) if getattr(ev, "out", "") else None
        measured = int(record["measured_peak_bytes"]) if record else int(getattr(ev, "mem_peak", 0) or 0)
        if not measured:
            return
        self.memory.value.setText(size(measured))
        if self._device != "cuda":
            self.memory.sub.setText("peak process RSS\nincl. Python, torch, Qt")
            return
        estimate = self.memory_estimate() if self.memory_estimate else None
        if estimate is None and record:
            estimate = int(record["estimate_bytes"])
        if estimate:
            self.memory.sub.setText(f"peak GPU tensors\nestimate {size(estimate)} ({100 * (estimate / measured - 1):+.0f} %)")
        else:
            self.memory.sub.setText("peak GPU tensors")

    def show_history(self, records: list[dict], run_dir: str, resumable_step: int | None):
        """A reopened run folder: its curves, and how to continue it."""
        from lora_studio.engine.samples import read_samples

        self.reset()
        self.run_dir = run_dir
        self.plots.load_metrics(records)
        self.samples.load(read_samples(run_dir))
        steps = [r["step"] for r in records if "loss" in r]
        last = steps[-1] if steps else 0
        self.step.set(f"{last:,}", f"steps logged in {Path(run_dir).name}")  # the whole path in the tooltip
        self.step.setToolTip(run_dir)
        evals = [r for r in records if "eval_loss" in r]
        e = evals[-1] if evals else None
        sub = eval_line(e["step"], e["eval_loss"], e.get("accuracy")) if e else ""
        if self.plots.ema.n:  # the card's own number (the smoothed training loss), as during the run
            self.loss.set(f"{self.plots.ema.y[self.plots.ema.n - 1]:.4f}", sub)
        elif sub:
            self.loss.set("–", sub)
        self._history_cards(records, run_dir)
        if resumable_step is not None:
            self.banner.show_message(f"Run opened: {run_dir} (checkpoint at step {resumable_step}).", "info",
                                     self._continue(run_dir), self._export(run_dir))
        else:
            self.banner.show_message(f"Run opened: {run_dir}.", "info", self._export(run_dir))

    def _history_cards(self, records: list[dict], run_dir: str):
        """An opened run's throughput, time and memory, from its metrics.jsonl and memory.json (they
        stayed "–" before)."""
        from lora_studio.engine.fit import read_peak

        speeds = [r["tokens_per_s"] for r in records if isinstance(r.get("tokens_per_s"), (int, float))]
        if speeds:
            self.speed.set(f"{sum(speeds) / len(speeds):,.0f} tok/s", "mean over the run")
        times = [r["time"] for r in records if isinstance(r.get("time"), (int, float))]  # wall clock, seconds
        if times:
            import time

            last = f"last logged {time.strftime('%Y-%m-%d %H:%M', time.localtime(max(times)))}"
            # training time as the live card counted it (pauses left out); runs before it was logged: none
            took = [r["elapsed"] for r in records if isinstance(r.get("elapsed"), (int, float))]
            self.eta.set("–", f"elapsed {duration(took[-1])}\n{last}" if took else last)
        peak = read_peak(run_dir)
        if peak:
            gpu = str(peak.get("measured_by", "")).startswith("cuda")
            self.memory.set(size(int(peak["measured_peak_bytes"])),
                            "peak GPU tensors" if gpu else "peak process RSS\nincl. Python, torch, Qt")

    def show_interrupted(self, run_dir: str, step: int, how: str):
        """After a relaunch: the newest run did not finish and can be continued."""
        if self.controller.running or self.run_dir:
            return
        self.banner.show_message(f"The last run, {run_dir}, {how} at step {step:,} and can be continued from "
                                 "its checkpoint.", "info", self._continue(run_dir),
                                 ("Open", lambda: self.sig_open.emit(run_dir)))
