"""A run with several processes: `lora-studio train --config RUN.toml --nproc N` in a QProcess
(torchrun starts the N processes), followed through its run folder like any run written by
another process: metrics.jsonl and run_state.json are polled and turned into the engine's events,
so the views that show a run in this process show this one too.

Stop sends SIGINT to the process group (the child runs in a session of its own): every process
stops after the same step, one checkpoint is written, the command exits 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QTimer, Signal

# the child: a new session (its own process group, so a SIGINT reaches torchrun and every process
# it starts, and nothing else), then the CLI
CHILD = "import os, sys, runpy; os.setsid(); sys.argv = ['lora_studio', *sys.argv[1:]]; " \
        "runpy.run_module('lora_studio', run_name='__main__')"


def forced_nproc() -> int | None:
    """LORA_STUDIO_GUI_NPROC=N: the GUI trains with N processes whatever the GPUs (gloo on a CPU; tests)."""
    value = os.environ.get("LORA_STUDIO_GUI_NPROC", "")
    return int(value) if value.strip().isdigit() and int(value) >= 1 else None


class MetricsTail:
    """The records added to a run's metrics.jsonl since the last read (complete lines only)."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.offset = 0

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1  # a line being written stays for the next read
        self.offset += end
        out = []
        for line in chunk[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class RunProcess(QObject):
    """Signals:
        event(object): engine events (Status, Started, Step, Eval, Finished or Failed last), in the GUI thread
    """

    event = Signal(object)

    def __init__(self, config, nproc: int, resume: str | None = None, overwrite: bool = False, parent=None,
                 poll_ms: int = 300):
        super().__init__(parent)
        from lora_studio.engine import runfolder

        self.config, self.nproc = config, nproc
        self.out = str(resume or config.out)
        self.total = 0
        self.step = 0
        self.started = False
        self.output: list[str] = []  # the command's last lines (the error, when it fails)
        self.tail = MetricsTail(self.out)
        self.runfolder = runfolder
        old = runfolder.run_state(self.out)
        self.before = old.get("updated")  # a state written before this run
        # a resumed run: the records up to its checkpoint are shown by the window already
        self.skip_until = int(old.get("step") or 0) if resume else 0
        args = ["train", "--nproc", str(nproc), "--quiet"]
        if resume:
            args += ["--resume", str(resume)]
        else:
            self._toml = Path(tempfile.mkdtemp(prefix="lora-studio-")) / runfolder.RUN_FILE
            config.save(self._toml)
            args += ["--config", str(self._toml), "--out", self.out] + (["--overwrite"] if overwrite else [])
        self.proc = QProcess(self)
        self.proc.setProcessChannelMode(QProcess.MergedChannels)
        self.proc.readyReadStandardOutput.connect(self._read_output)
        self.proc.finished.connect(self._finished)
        self.proc.errorOccurred.connect(self._error)
        self.timer = QTimer(self, interval=poll_ms)
        self.timer.timeout.connect(self.poll)
        self.command = [sys.executable, "-c", CHILD, *args]
        self._done = False

    def start(self):
        from lora_studio.engine.events import Status

        self.event.emit(Status(f"starting {self.nproc} processes: lora-studio {' '.join(self.command[3:])}"))
        self.proc.start(self.command[0], self.command[1:])
        self.timer.start()

    @property
    def running(self) -> bool:
        return self.proc.state() != QProcess.NotRunning

    def interrupt(self):
        """SIGINT to the whole process group: every process stops after this step and saves."""
        pid = self.proc.processId()
        if pid and self.running:
            try:
                os.killpg(pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def wait(self, ms: int = 60_000) -> bool:
        return self.proc.state() == QProcess.NotRunning or self.proc.waitForFinished(ms)

    # -- the run folder -> events -----------------------------------------------------------
    def poll(self):
        from lora_studio.engine import events as E

        if not self.started:
            st = self.runfolder.run_state(self.out)
            if st.get("updated") == self.before or not st.get("total_steps"):  # not yet past the setup
                return
            self.started = True
            self.total = int(st["total_steps"])
            self.step = self.skip_until
            dev = "cpu" if forced_nproc() or self.config.train.device == "cpu" else "cuda"
            self.event.emit(E.Started(out=self.out, total_steps=self.total, start_step=self.step, device=dev,
                                      device_name=f"{self.nproc} processes ({'nccl' if dev == 'cuda' else 'gloo'})",
                                      precision=self.config.train.precision, trainable_params=0, total_params=0,
                                      train_examples=0, validation_examples=0, task=self.config.model.task))
        for r in self.tail.read():
            step = int(r.get("step", self.step))
            if step <= self.skip_until:
                continue
            for ev in E.events_of_row(r, self.total):  # the objective's stats included
                if isinstance(ev, E.Step):
                    self.step = step
                self.event.emit(ev)

    def _read_output(self):
        from lora_studio.engine.events import Status

        text = bytes(self.proc.readAllStandardOutput()).decode("utf-8", "replace")
        for line in text.splitlines():
            line = line.strip()
            if line:
                self.output = (self.output + [line])[-40:]
                if not line.startswith(("Traceback", "  ", "[")):
                    self.event.emit(Status(line[:200]))

    def _error(self, error):
        if error == QProcess.FailedToStart:
            self._end(None)

    def _finished(self, code: int, status):
        self._read_output()
        self._end(code if status == QProcess.NormalExit else -1)

    def _end(self, code):
        from lora_studio.engine import events as E
        from lora_studio.engine.errors import Failure

        if self._done:
            return
        self._done = True
        self.poll()
        self.timer.stop()
        if code in (0, 130):
            self.event.emit(E.Finished(step=self.step, out=self.out, stopped=code == 130))
            return
        errors = [line[len("error: "):] for line in self.output if line.startswith("error: ")]
        message = errors[-1] if errors else ("the training command could not start" if code is None else
                                             f"the training processes ended with code {code}: "
                                             + (self.output[-1] if self.output else "no output"))
        # the CLI's exit codes (DESIGN.md): 2 the user's input or a full disk, 1 a bug; anything
        # else (killed by a signal, torchrun's own failure, could not start) is no fault of the input
        kind = ("disk" if "the disk is full" in message else "user") if code == 2 else "bug"
        self.event.emit(Failure(message, kind, detail="\n".join(self.output), step=self.step))
