"""Will it fit? (issue 15): engine.fit.will_it_fit for the current settings, as a table of bf16 /
int8 / NF4 bases × gradient checkpointing off / on against the GPU's memory, and after a run the
estimate next to the measured peak (engine.fit.read_peak).

Every engine call runs in a TaskRunner thread (the skeleton is built from the config on the meta
device: no weights). Results that arrive after a newer request was made are dropped.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QDoubleSpinBox, QHBoxLayout, QHeaderView, QSpinBox,
                               QTableWidget, QTableWidgetItem)

from lora_studio.config import RunConfig
from lora_studio.ui import style
from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.widgets import Section, label, size
from lora_studio.ui.bind import bind
from lora_studio.ui.parts import Part

COLUMNS = ("Base", "Grad. ckpt", "Peak", "Fits", "Max batch")
BASES = {"none": "bf16", "int8": "int8", "nf4": "NF4"}  # full names (engine CASES) in the tooltip


def detect_gpu(device: str = "auto") -> tuple[int, str] | None:
    """(bytes, name) of the GPU a run on `device` trains on, or None (worker thread: imports torch)."""
    from lora_studio.engine.fit import gpu_of

    return gpu_of(device)


def estimate_fit(config: RunConfig, gpu_bytes: int, batch: int, seq: int):
    """engine.fit.will_it_fit on the config's model skeleton and LoRA spec (worker thread)."""
    from lora_studio.engine.fit import will_it_fit
    from lora_studio.engine.models import skeleton
    from lora_studio.engine.runfolder import model_ref

    task = config.model.task
    model = skeleton(model_ref(config), task, trust_remote_code=config.model.trust_remote_code)
    precision = config.train.precision if config.train.precision in ("fp32", "fp16", "bf16") else "bf16"
    from lora_studio.engine.budget import sequences_per_example

    return will_it_fit(model, config.lora.to_spec(task), gpu_bytes, batch, seq, precision, config.train.optimizer,
                       sequences_per_example(task))


def measured_text(peak: dict) -> str:
    """A run's measured peak (memory.json) in words, compared with its estimate only on the same
    basis: GPU tensors against the tensor estimate; a CPU run's process RSS (Python, torch, Qt and
    the tensors) is never set against a tensor estimate."""
    measured = size(peak["measured_peak_bytes"])
    if str(peak.get("measured_by", "")).startswith("cuda"):
        est = int(peak["estimate_bytes"])
        diff = 100 * (est / max(1, int(peak["measured_peak_bytes"])) - 1)
        return (f"This run: peak GPU tensors {measured} · estimated {size(est)} "
                f"(batch {peak.get('batch', '?')} × {peak.get('seq', '?')} tokens, {diff:+.0f} %)")
    return (f"This run: peak process memory {measured} (RSS on the CPU: Python, torch and the app included, "
            "so not comparable with the tensor estimates above)")


def read_peak(run_dir: str):
    from lora_studio.engine.fit import read_peak as read

    return read(run_dir)


class FitPanel(Section, Part):
    """The "Will it fit?" table.

    Signals:
        computed(object): the engine.fit.FitTable shown
        failed(object): a tasks.Failure (bad model path, …), also shown as the hint
    """

    computed = Signal(object)
    failed = Signal(object)

    def __init__(self, config: RunConfig | None = None, runner: TaskRunner | None = None, parent=None,
                 detect: bool = True):
        super().__init__("Will it fit?", parent)
        self.runner = runner or TaskRunner(self)
        self.config: RunConfig | None = None
        self.table_data = None
        self._generation = 0
        self.gpu = QDoubleSpinBox()
        self.gpu.setRange(1, 4096)
        self.gpu.setDecimals(0)
        self.gpu.setValue(24)
        self.gpu.setSuffix(" GB")
        self.gpu.setToolTip("The GPU's memory (GiB); detected when a CUDA GPU is present")
        self.batch = QSpinBox()
        self.batch.setRange(1, 65536)
        self.batch.setToolTip("Examples per micro-batch")
        self.seq = QSpinBox()
        self.seq.setRange(1, 1 << 20)
        self.seq.setToolTip("Tokens per example (max length)")
        self.gpu_name = label("no CUDA GPU here: type its memory", "Hint")
        # numbers of a few digits: at 1920 px the fields stretched to 350 px each
        for field in (self.gpu, self.batch, self.seq):
            field.setMaximumWidth(field.fontMetrics().horizontalAdvance("0" * 9) + 40)
        row = QHBoxLayout()
        row.addWidget(self.batch, 1)
        row.addWidget(label("×"))
        row.addWidget(self.seq, 1)
        row.addWidget(label("tokens"))
        row.addStretch(1)
        self.form.addRow("GPU memory", self.gpu)
        self.form.addRow("", self.gpu_name)
        self.form.addRow("Batch", row)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeaderItem(0).setToolTip("precision of the frozen base weights")
        self.table.horizontalHeaderItem(1).setToolTip("gradient checkpointing: recompute activations in backward")
        self.table.horizontalHeaderItem(2).setToolTip("peak: weights + gradients + optimizer state + activations")
        self.table.horizontalHeaderItem(4).setToolTip("the largest batch whose peak fits in 90 % of the GPU's memory")
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.setFocusPolicy(Qt.NoFocus)
        self.table.setAlternatingRowColors(True)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        h = self.table.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.Stretch)
        for i in range(1, len(COLUMNS)):
            h.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        self.body.addWidget(self.table)
        self.hint = label("", "Hint", wrap=True)
        self.body.addWidget(self.hint)
        self.measured = label("", "Value", wrap=True, selectable=True)
        self.measured.hide()
        self.body.addWidget(self.measured)

        self._timer = QTimer(self, singleShot=True, interval=150)  # coalesce typing into one estimate
        self._timer.timeout.connect(self.compute)
        for sig in (self.gpu.valueChanged, self.batch.valueChanged, self.seq.valueChanged):
            sig.connect(lambda *_: self._timer.start())
        if detect:
            self.runner.start(detect_gpu, on_done=self._detected)
        if config is not None:
            self.set_config(config)

    # -- interface ----------------------------------------------------------------------------
    def set_config(self, config: RunConfig, seq: int | None = None):
        """Estimate for `config` (its model, LoRA settings, batch); `seq`: the tokens per example the
        Targets cards use (the data's longest example, capped at max length), else max length."""
        self.config = config
        for w, v in ((self.batch, config.train.batch_size), (self.seq, seq or config.data.max_length)):
            bind(w, v)
        self._timer.start()

    def shutdown(self):
        """Closing: no new estimate, and results still on their way are dropped."""
        self._timer.stop()
        self._generation += 1  # _show drops results of an older generation

    def apply_theme(self, theme: str):
        """Recolour the "fits" column after the application's theme changed."""
        if self.table_data is not None:
            self._show(self._generation, self.table_data)

    def gpu_bytes(self) -> int:
        return int(self.gpu.value() * 2**30)

    def compute(self):
        if self.config is None:
            return
        self._generation += 1
        gen = self._generation
        self.hint.setText("estimating…")
        self.runner.start(estimate_fit, self.config, self.gpu_bytes(), self.batch.value(), self.seq.value(),
                          on_done=lambda t: self._show(gen, t), on_failed=lambda f: self._failed(gen, f))

    def show_run(self, run_dir: str):
        """After a run: "estimated X · measured Y" from its memory.json (nothing when absent)."""
        self.runner.start(read_peak, str(run_dir), on_done=self._show_peak, on_failed=lambda f: None)

    # -- results, in the GUI thread -------------------------------------------------------------
    def _detected(self, found):
        if found is None:
            return
        total, name = found
        self.gpu.setValue(round(total / 2**30))
        self.gpu.setEnabled(False)
        self.gpu_name.setText(f"{name}: {size(total)}")

    def _failed(self, gen, failure):
        if gen != self._generation:
            return
        self.table.setRowCount(0)
        self.hint.setText(failure.message)
        self.failed.emit(failure)

    def _show(self, gen, t):
        if gen != self._generation:
            return
        self.table_data = t
        c = style.colors(style.current())
        self.table.setRowCount(len(t.rows))
        for r, row in enumerate(t.rows):
            cells = (BASES.get(row.quantize, row.label), "on" if row.checkpointing else "off", size(row.peak_bytes),
                     "✓" if row.fits else "✗", str(row.max_batch) if row.max_batch else "–")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 0:
                    item.setToolTip(row.label)
                if col > 1:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter if col != 3 else Qt.AlignCenter)
                if col == 3:
                    item.setForeground(QColor(c["ok" if row.fits else "bad"]))
                    item.setBackground(QColor(c["ok_soft" if row.fits else "bad_soft"]))
                    item.setToolTip("fits" if row.fits else "does not fit")
                if col == 2:
                    item.setToolTip(f"weights {size(row.weights_bytes)} · optimizer {size(row.optimizer_bytes)} · "
                                    f"activations {size(row.activation_bytes)}")
                self.table.setItem(r, col, item)
        self.table.setFixedHeight(self.table.horizontalHeader().height() + sum(
            self.table.rowHeight(i) for i in range(self.table.rowCount())) + 2 * self.table.frameWidth())
        self.hint.setText(f"Batch {t.batch} × {t.seq} tokens, {t.precision}, {t.optimizer}; "
                          f"a run may plan on 90 % of the GPU ({size(t.usable_bytes)}).")
        self.computed.emit(t)

    def _show_peak(self, peak):
        if not peak:
            self.measured.hide()
            return
        self.measured.setText(measured_text(peak))
        self.measured.setToolTip(f"measured by {peak.get('measured_by', '?')}")
        self.measured.show()
