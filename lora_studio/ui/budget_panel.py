"""Parameter savings, live: the numbers of engine.budget.estimate for the current ticks, redrawn
on every change (the estimate runs on the cached meta-device skeleton in a few milliseconds)."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QGridLayout, QHBoxLayout, QHeaderView, QProgressBar,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from lora_studio.ui.session import BudgetView, Session
from lora_studio.ui.widgets import Card, Section, count, label, size

NAMES = {"q": "q · query", "k": "k · key", "v": "v · value", "o": "o · output", "gate": "gate", "up": "up",
         "down": "down"}


MEMORY_ROWS = ("Weights", "Gradients", "Optimizer (AdamW)", "Activations", "Total")


def data_memory(session: Session, b) -> tuple:
    """(LoRA memory, full fine-tuning memory, sequence length, what that length is) with the
    activations at the length training really pads to. Batches are padded dynamically to their
    longest example, so the peak comes from the batch holding the data's longest example:
    min(longest, max_length), not max_length (when the data's lengths are not known yet)."""
    max_length = int(session.draft.data.max_length)
    stats = session.stats
    train = getattr(stats, "train", None)
    if not train or not train.max_tokens or session.info is None:
        return b.memory_lora, b.memory_full, max_length, f"max length {max_length}"
    from lora_studio.engine.budget import activation_bytes, sequences_per_example

    seq = min(int(train.max_tokens), max_length)
    t = session.draft.train
    sequences = int(t.batch_size) * sequences_per_example(session.draft.model.task)  # a preference pair: 2
    act = activation_bytes(session.info.skeleton.config, sequences, seq, session.budget_precision(),
                           bool(t.gradient_checkpointing))
    what = (f"longest example {seq}" if seq < max_length else f"max length {max_length}") + \
        f" · p95 {train.p95_tokens:.0f} tokens"
    return replace(b.memory_lora, activations=act), replace(b.memory_full, activations=act), seq, what


def percent(p: float) -> str:
    return f"{p:.3g} %" if p < 100 else "100 %"


class SavingsCards(QWidget):
    """The headline numbers: trainable vs total, share, adapter file, training memory."""

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(12)
        self.trainable = Card("Trainable parameters")
        self.share = Card("Share of the model trained")
        self.file = Card("Adapter file")
        self.memory = Card("Training memory (estimate)")
        self.bar_lora, self.bar_full = QProgressBar(), QProgressBar()
        self.bar_full.setObjectName("Bar2")
        for bar, text in ((self.bar_lora, "LoRA"), (self.bar_full, "Full FT")):
            bar.setRange(0, 1000)
            bar.setMaximumHeight(6)
            bar.setTextVisible(False)
            bar.setToolTip(text)
            self.memory.extra.addWidget(bar)
        for card in (self.trainable, self.share, self.file, self.memory):
            lay.addWidget(card, 1)
        self.session = session
        self.estimate_bytes: int | None = None  # LoRA total at the data's real length
        session.budget_changed.connect(self.show_budget)
        session.data_stats.connect(lambda _: self.show_budget(session.budget))
        self.show_budget(session.budget)

    def set_compact(self, on: bool):
        """A short window (a 1366 × 768 laptop): title and value only, so the plots below keep their
        height; the sub-lines move to the cards' tooltips."""
        for card in (self.trainable, self.share, self.file, self.memory):
            card.sub.setVisible(not on)
            card.setToolTip(card.sub.text() if on else "")
            card.layout().setContentsMargins(16, 7 if on else 12, 16, 7 if on else 12)
        for bar in (self.bar_lora, self.bar_full):
            bar.setVisible(not on)

    def show_budget(self, view: BudgetView):
        b = view.budget
        if b is None:
            self.estimate_bytes = None
            for card in (self.trainable, self.share, self.file, self.memory):
                card.set("–", "")
            self.trainable.sub.setText(view.message if len(view.message) < 70 else "see the Targets tab")
            self.trainable.sub.setToolTip(view.message)
            for bar in (self.bar_lora, self.bar_full):
                bar.setValue(0)
            return
        self.trainable.set(count(b.trainable_params), f"of {count(b.total_params)} in total")
        self.trainable.sub.setToolTip("")
        self.trainable.setToolTip(f"adapter {b.adapter_params:,} + trained head {b.head_params:,}")
        ratio = b.total_params / max(b.trainable_params, 1)
        self.share.set(percent(b.trainable_percent), f"1 in {ratio:,.0f} parameters · full fine-tuning: 100 %")
        self.file.set(size(b.adapter_file_bytes), f"fp32 safetensors · the model itself: {size(b.base_params * 4)}")
        self.file.setToolTip(f"{b.adapter_file_bytes:,} bytes")
        ml, mf, _, what = data_memory(self.session, b)
        lora, full = ml.total, mf.total
        self.estimate_bytes = lora
        saved = 100.0 * (1 - lora / full) if full else 0.0
        self.memory.set(size(lora), f"full fine-tuning: {size(full)} (−{saved:.0f} %)\nactivations at {what}")
        self.bar_lora.setValue(int(1000 * lora / max(full, 1)))
        self.bar_full.setValue(1000)


class BudgetDetails(QWidget):
    """Where the parameters go (per projection and per matrix) and the memory, LoRA vs full."""

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(12)
        self.per_target = Section("Trainable parameters per projection")
        self.rows = QGridLayout()
        self.rows.setHorizontalSpacing(10)
        self.rows.setVerticalSpacing(6)
        self.per_target.body.addLayout(self.rows)
        self.message = label("", "Hint", wrap=True)
        self.per_target.body.addWidget(self.message)
        lay.addWidget(self.per_target)

        mem = Section("Training memory · LoRA vs full fine-tuning")
        self.memory = QGridLayout()
        self.memory.setHorizontalSpacing(16)
        self.memory.setVerticalSpacing(5)
        self.memory_cells = {}
        for c, title in enumerate(("", "LoRA", "Full fine-tuning")):
            head = label(title, "CardTitle")
            head.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.memory.addWidget(head, 0, c)
        for r, title in enumerate(MEMORY_ROWS, start=1):
            self.memory.addWidget(label(title, "Value" if title == "Total" else ""), r, 0)
            for c in (1, 2):
                cell = label("–", "Value" if title == "Total" else "")
                cell.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.memory.addWidget(cell, r, c)
                self.memory_cells[(title, c)] = cell
        self.memory.setColumnStretch(0, 1)
        mem.body.addLayout(self.memory)
        self.memory_note = label("", "Hint", wrap=True)
        mem.body.addWidget(self.memory_note)
        lay.addWidget(mem)

        mods = Section("Adapted matrices")
        self.modules = QTableWidget(0, 5)
        self.modules.setHorizontalHeaderLabels(["Module", "Adapts", "Shape", "r", "Parameters"])
        self.modules.verticalHeader().hide()
        self.modules.setMinimumHeight(240)
        self.modules.horizontalHeaderItem(2).setToolTip("out × in of the base matrix W0")
        self.modules.setTextElideMode(Qt.ElideMiddle)  # keeps "layer.N" and the leaf name
        self.modules.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.modules.setAlternatingRowColors(True)
        h = self.modules.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.Stretch)
        for i in (1, 2, 3, 4):
            h.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        mods.body.addWidget(self.modules)
        lay.addWidget(mods, 1)
        session.budget_changed.connect(self.show_budget)
        session.data_stats.connect(lambda _: self.show_budget(session.budget))
        self.show_budget(session.budget)

    def _clear_rows(self):
        while self.rows.count():
            w = self.rows.takeAt(0).widget()
            if w is not None:
                w.hide()  # deleteLater() acts on the next event-loop turn: hide it now
                w.deleteLater()

    def show_budget(self, view: BudgetView):
        self._clear_rows()
        b = view.budget
        self.message.setText(view.message)
        if b is None:
            self.modules.setRowCount(0)
            for cell in self.memory_cells.values():  # no old numbers under a cleared selection
                cell.setText("–")
            self.memory_note.setText("")
            return
        items = list(view.by_target.items())
        if b.head_params:
            items.append(("head", b.head_params))
        top = max((n for _, n in items), default=1) or 1
        for r, (name, n) in enumerate(items):
            text = NAMES.get(name, "classifier head (trained in full)" if name == "head" else name)
            self.rows.addWidget(label(text), r, 0)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(1000 * n / top))
            bar.setTextVisible(False)
            bar.setMaximumHeight(8)
            if name == "head":
                bar.setObjectName("Bar2")
            self.rows.addWidget(bar, r, 1)
            num = label(count(n), "Value")
            num.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.rows.addWidget(num, r, 2)
        self.rows.setColumnStretch(1, 1)

        ml, mf, seq, what = data_memory(self.session, b)
        for title, attr in zip(MEMORY_ROWS, ("weights", "gradients", "optimizer", "activations", "total")):
            self.memory_cells[(title, 1)].setText(size(getattr(ml, attr)))
            self.memory_cells[(title, 2)].setText(size(getattr(mf, attr)))
        t = self.session.draft.train
        pairs = self.session.draft.model.task == "preference"
        batch = f"{t.batch_size} pairs (2 × {t.batch_size} sequences)" if pairs else f"{t.batch_size}"
        self.memory_note.setText(f"At batch {batch} × {seq} tokens ({what}; batches are padded to their "
                                 f"longest example), {self.session.budget_precision()}"
                                 f"{', gradient checkpointing' if t.gradient_checkpointing else ''}. "
                                 "Activations are an estimate (Korthikanti et al. 2022).")
        self.modules.setUpdatesEnabled(False)
        self.modules.setRowCount(len(b.modules))
        owner = {}  # module name -> logical projections (exact-name targets are regexes)
        if self.session.info:
            for (t, _), name in self.session.info.cells.items():
                owner.setdefault(name, []).append(t)
        prefix = _common_prefix([m.name for m in b.modules])
        for r, m in enumerate(b.modules):
            adapts = "+".join(owner.get(m.name) or m.targets)
            for c, text in enumerate((m.name[len(prefix):], adapts, f"{m.shape[0]} × {m.shape[1]}", str(m.rank),
                                      count(m.params))):
                item = QTableWidgetItem(text)
                item.setToolTip(m.name)
                if c > 1:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.modules.setItem(r, c, item)
        self.modules.setUpdatesEnabled(True)


def _common_prefix(names: list[str]) -> str:
    """"bert.encoder." for bert.encoder.layer.0…, bert.encoder.layer.1… (whole dotted parts only)."""
    if len(names) < 2:
        return ""
    parts = [n.split(".") for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if common and len(common) < min(len(p) for p in parts) and parts[0][len(common)].isdigit():
        common.pop()  # keep "layer." in front of the layer number
    return ".".join(common) + "." if common else ""
