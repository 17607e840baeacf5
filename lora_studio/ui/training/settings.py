"""Training settings: length (steps or epochs), learning rate, batch and accumulation,
precision, device (GPUs by name and memory), one or all GPUs (a torchrun subprocess), the
command for a cluster, evaluation/checkpoint cadence, run folder; folded under Advanced: warmup,
weight decay, gradient clipping and the checkpoints kept."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLineEdit,
                               QMessageBox, QPushButton, QSpinBox, QStackedWidget, QToolButton)

from lora_studio.core import names
from lora_studio.ui.session import Session
from lora_studio.ui.widgets import ElidedLabel, NumberValidator, RangeSpin, Section, icon, label, parse_number
from lora_studio.ui.bind import bind
from lora_studio.ui.failure_dialog import show_failure

LOSS_TEXT = {"dpo": "DPO", "orpo": "ORPO", "simpo": "SimPO"}
LOSS_TIPS = {"dpo": "Direct Preference Optimization: chosen over rejected, measured against the run's start "
                    "(the base, or the adapter it starts from)",
             "orpo": "ORPO: the chosen answer's language-model loss plus an odds-ratio penalty; no reference",
             "simpo": "SimPO: length-normalised log-probs with a target margin gamma; no reference"}
PRECISIONS = tuple((p, "Auto (bf16; CPU fp32)" if p == "auto" else p) for p in names.PRECISIONS)
SCHEDULES = names.SCHEDULES
ADVANCED_KEY = "sections/Training/advanced/collapsed"  # the Advanced fold starts folded


def spin(lo: int, hi: int, tip: str, step: int = 1, suffix: str = "") -> QSpinBox:
    w = QSpinBox()
    w.setRange(lo, hi)
    w.setSingleStep(step)
    w.setToolTip(tip)
    w.setSuffix(suffix)
    return w


class TrainingSettings(Section):
    def __init__(self, session: Session, parent=None):
        super().__init__("Training", parent, collapsible=True)
        self.session = session
        self._preference_rows()
        self.length_kind = QComboBox()
        self.length_kind.addItem("Steps", "steps")
        self.length_kind.addItem("Epochs", "epochs")
        self.steps = spin(1, 10_000_000, "Optimizer steps to run", 10)
        self.epochs = QDoubleSpinBox()
        self.epochs.setRange(0.01, 10000)
        self.epochs.setDecimals(2)
        self.epochs.setToolTip("Passes over the training data")
        self.length = QStackedWidget()
        self.length.addWidget(self.steps)
        self.length.addWidget(self.epochs)
        self.length.setMaximumHeight(self.steps.sizeHint().height() + 4)
        row = QHBoxLayout()
        row.addWidget(self.length_kind)
        row.addWidget(self.length, 1)
        self.form.addRow("Length", row)

        self.lr = QLineEdit()
        self.lr.setValidator(NumberValidator(self.lr))
        self.lr.setToolTip("Peak learning rate (AdamW); LoRA usually takes 1e-4 to 2e-3")
        self.schedule = QComboBox()
        for s in SCHEDULES:
            self.schedule.addItem(s, s)
        lr_row = QHBoxLayout()
        lr_row.addWidget(self.lr, 1)
        lr_row.addWidget(self.schedule)
        self.form.addRow("Learning rate", lr_row)
        self.batch = spin(1, 65536, "Examples per micro-batch")
        self.accum = spin(1, 4096, "Micro-batches per optimizer step (same memory, bigger effective batch)")
        br = QHBoxLayout()
        br.addWidget(self.batch, 1)
        br.addWidget(label("×", "Hint"))
        br.addWidget(self.accum, 1)
        self.packing = QCheckBox("Pack")
        self.packing.setToolTip("Causal LM and preference pairs: lay each micro-batch's examples end to end in one "
                                "row, with no padding (positions restart and attention stays within each example: the same loss)")
        self.form.addRow("Batch × accum", br)
        self.form.addRow("", self.packing)  # its own row: the sidebar stays narrow enough for a 1024 px window
        self.effective = label("", "Hint", wrap=True)
        self.form.addRow("", self.effective)
        self.precision = QComboBox()
        for value, text in PRECISIONS:
            self.precision.addItem(text, value)
        self.precision.setToolTip("Auto: bf16 on a GPU with native bf16, fp16 on other GPUs, fp32 on a CPU")
        self.form.addRow("Precision", self.precision)
        self.device = QComboBox()
        self.device.setToolTip("Where to train; GPUs are listed with their memory")
        self.form.addRow("Device", self.device)
        self.gpus = 0  # CUDA devices on this machine (from the model probe's device list)
        self.devices = QComboBox()
        self.devices.setToolTip("All GPUs: one process per GPU under torchrun (DDP or FSDP2), the batch per GPU")
        self.form.addRow("Devices", self.devices)
        self.cluster = QPushButton(icon("export", "#6a7385"), "Copy command for a cluster")
        self.cluster.setToolTip("Saves this configuration as TOML and copies a torchrun line and a Slurm "
                                "sbatch script that train it")
        self.cluster.clicked.connect(self.copy_cluster_command)
        self.form.addRow(self.cluster)
        self.checkpointing = QCheckBox("Gradient checkpointing")
        self.checkpointing.setToolTip("Recompute activations in the backward pass: less memory, about 30 % slower")
        self.form.addRow("", self.checkpointing)
        self.eval_every = spin(0, 1_000_000, "Steps between evaluations (0 = only at the end)", 10)
        self.save_every = spin(0, 1_000_000, "Steps between checkpoints (0 = only at stop/end)", 50)
        self.eval_every.setSuffix(" steps")
        self.save_every.setSuffix(" steps")
        self.form.addRow("Evaluate every", self.eval_every)
        self.form.addRow("Save every", self.save_every)
        self.seed = spin(0, 2**31 - 1, "Random seed (same seed, same run on a CPU)")
        self.form.addRow("Seed", self.seed)
        self.out = QLineEdit()
        self.out.setPlaceholderText("new folder under runs/ (automatic)")
        self.out.setClearButtonEnabled(True)
        self.out.setToolTip("The run folder: adapter, run.toml, metrics.jsonl, checkpoints/")
        browse = QPushButton(icon("folder", "#6a7385"), "")
        browse.clicked.connect(self._browse)
        orow = QHBoxLayout()
        orow.addWidget(self.out, 1)
        orow.addWidget(browse)
        self.form.addRow("Run folder", orow)
        self._advanced_rows()
        self._wire(session)

    def _advanced_rows(self):
        """Warmup, weight decay, gradient clipping and kept checkpoints, in rows of the same form (their
        labels align with the others) behind a fold that says their values while folded."""
        self.advanced = QToolButton()
        self.advanced.setObjectName("Link")
        self.advanced.setToolTip("Warmup, weight decay, gradient clipping and the checkpoints kept")
        self.advanced.clicked.connect(lambda: self.set_advanced_folded(not self.advanced_folded))
        self.advanced_summary = ElidedLabel("", "Hint")
        fold = QHBoxLayout()
        fold.addWidget(self.advanced)
        fold.addWidget(self.advanced_summary, 1)
        self.form.addRow(fold)
        self.warmup = RangeSpin("Warmup", 0.0, 99.9, "0 to 99.9 % of the steps", decimals=1)
        self.warmup.setSuffix(" % of steps")
        self.warmup.setToolTip("Linear warmup of the learning rate over this share of the steps (warmup_ratio), "
                               "then the schedule. A configuration with warmup_steps above 0 (File ▸ Load, or the "
                               "chat demo) overrides it; a share typed here replaces those steps.")
        self.warmup_steps = label("", "Hint", wrap=True)
        self.decay = RangeSpin("Weight decay", 0.0, 10.0, "0 (off) to 10", decimals=4, step=0.01)
        self.decay.setSpecialValueText("off")
        self.decay.setToolTip("AdamW's decoupled weight decay on the trained parameters (A, B, a head); "
                              "0 = off, 0.01 to 0.1 is common")
        self.clip = RangeSpin("Gradient clipping", 0.0, 1000.0, "a norm of 0 (off) to 1000", decimals=2, step=0.1)
        self.clip.setSpecialValueText("off")
        self.clip.setPrefix("norm ≤ ")
        self.clip.setToolTip("Gradient clipping (max_grad_norm): each step's gradients are scaled down to this "
                             "global L2 norm when above it; 0 = off (the norm is still plotted)")
        self.keep = RangeSpin("Keep", 1, 10000, "1 to 10000 checkpoints", decimals=0)
        self.keep.setSuffix(" checkpoints")
        self.keep.setToolTip("The newest checkpoints kept in the run folder's checkpoints/ (older ones are deleted "
                             "as new ones are saved); a run continues from the newest")
        self.advanced_problem = label("", "Error", wrap=True)  # why a typed number was not taken
        rows = (("Warmup", self.warmup), ("", self.warmup_steps), ("Weight decay", self.decay),
                ("Grad clipping", self.clip), ("Keep", self.keep), ("", self.advanced_problem))
        for name, w in rows:
            self.form.addRow(name, w)
        for w in (self.warmup, self.decay, self.clip, self.keep):
            w.refused.connect(self._refused)
        self.set_advanced_folded(QSettings().value(ADVANCED_KEY, True, type=bool))

    def set_advanced_folded(self, folded: bool):
        self.advanced_folded = bool(folded)
        QSettings().setValue(ADVANCED_KEY, self.advanced_folded)
        self.advanced.setText(("▸ " if folded else "▾ ") + "Advanced")
        self._advanced_visibility()

    def _advanced_visibility(self):
        """Unfolded: the four fields, and the two notes when they say something; folded: the summary."""
        shown = not self.advanced_folded
        for w in (self.warmup, self.decay, self.clip, self.keep):
            self.form.setRowVisible(w, shown)
        for note in (self.warmup_steps, self.advanced_problem):
            self.form.setRowVisible(note, shown and bool(note.text()))
        self.advanced_summary.setVisible(self.advanced_folded)

    def _refused(self, message: str):
        self.advanced_problem.setText(message)
        self._advanced_visibility()
        if message:  # below the last row: scrolled into view, not half under the sidebar's edge
            from PySide6.QtCore import QTimer
            from PySide6.QtWidgets import QScrollArea

            area = self.parentWidget()
            while area is not None and not isinstance(area, QScrollArea):
                area = area.parentWidget()
            if area is not None:
                QTimer.singleShot(0, lambda: area.ensureWidgetVisible(self.advanced_problem, 0, 8))

    def _preference_rows(self):
        """Loss, beta and SimPO's gamma: shown for the preference task only (gamma for SimPO only)."""
        self.loss = QComboBox()
        for i, loss in enumerate(names.PREFERENCE_LOSSES):
            self.loss.addItem(LOSS_TEXT.get(loss, loss), loss)
            self.loss.setItemData(i, LOSS_TIPS.get(loss, ""), Qt.ToolTipRole)
        self.loss.setToolTip("The preference loss")
        self.beta = QDoubleSpinBox()
        self.beta.setRange(0.0, 1000.0)
        self.beta.setDecimals(3)
        self.beta.setSingleStep(0.05)
        self.beta.setToolTip("How strongly the preference pulls (DPO: the KL weight; ORPO: lambda; SimPO: the "
                             "reward scale); at its minimum it is the loss's default")
        self.gamma = QDoubleSpinBox()
        self.gamma.setRange(-100.0, 100.0)
        self.gamma.setDecimals(2)
        self.gamma.setSingleStep(0.1)
        self.gamma.setToolTip("SimPO's target reward margin between the chosen and the rejected answer")
        self.form.addRow("Loss", self.loss)
        self.form.addRow("Beta", self.beta)
        self.form.addRow("Gamma", self.gamma)

    def _wire(self, s: Session):
        """Each field writes its setting to the Session; the Session's changes refill the fields."""
        self.length_kind.activated.connect(self._length_kind)
        self.steps.valueChanged.connect(lambda v: s.set_train(max_steps=int(v)))
        self.epochs.valueChanged.connect(lambda v: s.set_train(epochs=float(v)))
        self.lr.editingFinished.connect(self._lr)
        self.schedule.activated.connect(lambda _: s.set_train(schedule=self.schedule.currentData()))
        self.batch.valueChanged.connect(lambda v: s.set_train(batch_size=int(v)))
        self.accum.valueChanged.connect(lambda v: s.set_train(grad_accum=int(v)))
        self.precision.activated.connect(lambda _: s.set_train(precision=self.precision.currentData()))
        self.device.activated.connect(lambda _: s.set_train(device=self.device.currentData()))
        self.checkpointing.toggled.connect(lambda on: s.set_train(gradient_checkpointing=bool(on)))
        self.packing.toggled.connect(lambda on: s.set_train(packing=bool(on)))
        self.eval_every.valueChanged.connect(lambda v: s.set_train(eval_every=int(v)))
        self.save_every.valueChanged.connect(lambda v: s.set_train(save_every=int(v)))
        self.seed.valueChanged.connect(lambda v: s.set_train(seed=int(v)))
        self.out.editingFinished.connect(lambda: s.set_out(self.out.text()))
        self.loss.activated.connect(lambda _: s.set_train(loss=self.loss.currentData()))
        self.beta.valueChanged.connect(lambda v: s.set_train(beta=float(v)))
        self.gamma.valueChanged.connect(lambda v: s.set_train(simpo_gamma=float(v)))
        # a share typed here is the warmup: steps of a loaded configuration would override it
        self.warmup.valueChanged.connect(lambda v: s.set_train(warmup_ratio=round(v / 100, 4), warmup_steps=0))
        self.decay.valueChanged.connect(lambda v: s.set_train(weight_decay=float(v)))
        self.clip.valueChanged.connect(lambda v: s.set_train(max_grad_norm=float(v)))
        self.keep.valueChanged.connect(lambda v: s.set_train(keep_checkpoints=int(v)))
        for w in (self.warmup, self.decay, self.clip, self.keep):  # a value taken: the refusal is old news
            w.valueChanged.connect(lambda _: self._refused(""))
        s.changed.connect(lambda sec: sec in ("train", "out", "model") and self._sync())
        s.model_ready.connect(self._devices)
        self._devices(None)
        self._sync()

    def nproc(self) -> int:
        """Processes to train with: 1, or every GPU (LORA_STUDIO_GUI_NPROC=N forces N, gloo on a CPU)."""
        from lora_studio.ui.training.process import forced_nproc

        forced = forced_nproc()
        if forced:
            return forced
        return self.gpus if self.gpus > 1 and self.devices.currentData() == "all" else 1

    def copy_cluster_command(self, path: str | None = None):
        """Save the configuration as TOML (asks where) and copy the torchrun line and an sbatch script."""
        from lora_studio.engine.errors import UserError
        from lora_studio.launch import cluster_text
        from lora_studio.ui.widgets import commit_edits

        commit_edits()
        try:
            config = self.session.build()
        except UserError as e:
            show_failure(self, e, "Cannot write the command")
            return
        if not path:
            from lora_studio.ui.widgets import ask_config_path

            path = ask_config_path(self, "Save the configuration the command trains", "cluster-run.toml")
            if not path:
                return
        try:
            config.save(path)
        except OSError as e:
            show_failure(self, f"{path}: {e.strerror or e}", "Cannot write the command")
            return
        text = cluster_text(path, max(1, self.gpus))
        if self.gpus < 1:  # this machine has no GPU: the count is the cluster's, to be set there
            text = text.replace("# one machine, 1 GPU(s):", "# one machine with GPUs (set --nproc-per-node to its GPU count):")
        from lora_studio.ui.runs import runs_root

        runs = Path(config.out).parent if config.out else runs_root()  # absolute: sbatch runs from anywhere (N15)
        text = text.replace("--out runs/$SLURM_JOB_ID", f'--out "{runs}/$SLURM_JOB_ID"')
        QGuiApplication.clipboard().setText(text)
        QMessageBox.information(self, "Command copied", f"The torchrun line and a Slurm (sbatch) script are on the "
                                f"clipboard. They train the configuration saved in {path}; runs go to {runs}.")
        return text

    def _length_kind(self):
        if self.length_kind.currentData() == "steps":
            self.session.set_train(max_steps=max(1, self.steps.value()))
        else:
            self.session.set_train(max_steps=0, epochs=max(0.01, self.epochs.value()))

    def _lr(self):
        value = parse_number(self.lr.text())
        if value is None or not 0 < value <= 10:
            return self._sync()
        self.session.set_train(lr=value)

    def _browse(self):
        settings = QSettings()
        folder = QFileDialog.getExistingDirectory(self, "Choose the run folder", settings.value("folders/runs", ""))
        if folder:
            settings.setValue("folders/runs", folder)
            self.out.setText(folder)
            self.session.set_out(folder)

    def _devices(self, info):
        devs = info.devices if info else []
        current = self.session.draft.train.device
        self.device.clear()
        if not devs:
            self.device.addItem("Auto", "auto")
            self.device.addItem("CPU", "cpu")
        for d in devs:
            self.device.addItem(d.label, d.value)
        if self.device.findData(current) < 0:
            self.device.addItem(current, current)
        self.device.setCurrentIndex(self.device.findData(current))
        self.gpus = sum(1 for d in devs if d.value.startswith("cuda"))
        choice = self.devices.currentData() or "one"
        self.devices.clear()
        self.devices.addItem("This GPU", "one")
        self.devices.addItem(f"All {self.gpus} GPUs", "all")
        self.devices.setCurrentIndex(self.devices.findData(choice))
        self.form.setRowVisible(self.devices, self.gpus > 1)  # one GPU or none: nothing to choose

    def _sync(self):
        t = self.session.draft.train
        steps = t.max_steps > 0
        values = ((self.steps, t.max_steps if steps else self.steps.value()), (self.epochs, t.epochs),
                  (self.batch, t.batch_size), (self.accum, t.grad_accum), (self.eval_every, t.eval_every),
                  (self.save_every, t.save_every), (self.seed, t.seed))
        for w, v in values:
            bind(w, v)
        self.length_kind.setCurrentIndex(0 if steps else 1)
        self.length.setCurrentIndex(0 if steps else 1)
        if not self.lr.hasFocus():
            self.lr.setText(f"{t.lr:g}")
        for box, value in ((self.schedule, t.schedule), (self.precision, t.precision), (self.device, t.device)):
            box.setCurrentIndex(max(0, box.findData(value)))
        bind(self.checkpointing, t.gradient_checkpointing)
        prefer = self.session.draft.model.task == "preference"
        for w, v in ((self.loss, t.loss), (self.beta, t.beta), (self.gamma, t.simpo_gamma)):
            bind(w, v)
            self.form.setRowVisible(w, prefer and (w is not self.gamma or t.loss == "simpo"))
        default = f"default ({names.PREFERENCE_BETA.get(t.loss, 0.1):g})"  # beta 0: the loss's own
        if self.beta.specialValueText() != default:  # (setting it again would redraw a value being typed)
            self.beta.setSpecialValueText(default)
        bind(self.packing, t.packing)
        # a classifier's example is one label: nothing to pack (still untickable if a configuration ticked it)
        self.packing.setEnabled(self.session.draft.model.task != "classification" or t.packing)
        self.effective.setText(f"effective batch {t.batch_size * t.grad_accum} {'pairs' if prefer else 'examples'} "
                               "per step")
        if self.out.text() != self.session.draft.out and not self.out.hasFocus():
            self.out.setText(self.session.draft.out)
        self._sync_advanced(t)

    def _sync_advanced(self, t):
        for w, v in ((self.warmup, round(t.warmup_ratio * 100, 6)), (self.decay, t.weight_decay),
                     (self.clip, t.max_grad_norm), (self.keep, t.keep_checkpoints)):
            bind(w, v)
        self.warmup_steps.setText(f"{t.warmup_steps} warmup steps from the configuration override the share; "
                                  "typing a share replaces them" if t.warmup_steps > 0 else "")
        warmup = f"{t.warmup_steps} steps" if t.warmup_steps > 0 else f"{t.warmup_ratio * 100:g} %"
        decay, clip = (f"{v:g}" if v > 0 else "off" for v in (t.weight_decay, t.max_grad_norm))
        self.advanced_summary.setText(f"warmup {warmup} · decay {decay} · clip {clip} · keep {t.keep_checkpoints}")
        self._advanced_visibility()
