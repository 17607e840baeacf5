"""The Try it tab: one input through the base model and through the adapted model, side by side
(generated text for causal LMs; predicted label and probabilities for classifiers). Usable while
training is paused and after it ends; the model is loaded from the run folder in a worker."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QGridLayout, QHBoxLayout, QPlainTextEdit, QProgressBar, QPushButton,
                               QSpinBox, QVBoxLayout, QWidget)

from lora_studio.engine import tryit as compare
from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.widgets import Card, icon, label
from lora_studio.ui.parts import Part

EMPTY_HINT = "Train a run (or open one) to try its adapter here."
EXAMPLES = {"classification": "I was charged twice for my subscription this month.",
            "causal-lm": "Low-rank adaptation is"}


class ResultCard(Card):
    def __init__(self, title: str):
        super().__init__(title)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMinimumHeight(120)
        self.extra.addWidget(self.text)
        self.bars = QGridLayout()
        self.bars.setHorizontalSpacing(8)
        self.extra.addLayout(self.bars)

    def show_output(self, out, task: str):
        while self.bars.count():
            w = self.bars.takeAt(0).widget()
            if w:
                w.hide()
                w.deleteLater()
        if task == "classification":
            self.text.hide()
            best = max(p for _, p in out.probabilities)
            self.set(out.label, f"probability {best:.1%}")
            for r, (name, p) in enumerate(out.probabilities):
                bar = QProgressBar()
                bar.setRange(0, 1000)
                bar.setValue(int(1000 * p))
                bar.setTextVisible(False)
                bar.setMaximumHeight(8)
                if name != out.label:
                    bar.setObjectName("Bar2")
                self.bars.addWidget(label(name), r, 0)
                self.bars.addWidget(bar, r, 1)
                self.bars.addWidget(label(f"{p:.1%}", "Value"), r, 2, Qt.AlignRight)
            self.bars.setColumnStretch(1, 1)
        else:
            self.text.show()
            self.set("", "")
            self.value.hide()
            self.text.setPlainText(out.text)


class TryItView(QWidget, Part):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.run_dir = ""
        self.task = "classification"
        self.paused_at: int | None = None  # the step a running run is paused at
        self._result_source = ""  # the caption of the result shown: which adapter produced it
        # while paused: fn(setup) -> Future, run in the training thread on the live model
        self.call_paused = None
        self.tasks = TaskRunner(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(12)
        self.source = label(EMPTY_HINT, "Hint", wrap=True)
        lay.addWidget(self.source)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Type a prompt or a sentence to classify")
        self.prompt.setMaximumHeight(110)
        lay.addWidget(self.prompt)
        row = QHBoxLayout()
        self.max_new = QSpinBox()
        self.max_new.setRange(1, 2048)
        self.max_new.setValue(48)
        self.max_new.setPrefix("max new tokens ")
        self.chat = QCheckBox("Use the chat template")
        self.run = QPushButton(icon("play"), "Run both")
        self.run.setObjectName("Primary")
        self.state = label("", "Hint")
        row.addWidget(self.max_new)
        row.addWidget(self.chat)
        row.addWidget(self.state, 1)
        row.addWidget(self.run)
        lay.addLayout(row)
        cards = QHBoxLayout()
        cards.setSpacing(12)
        self.base = ResultCard("Base model")
        self.adapted = ResultCard("With the LoRA adapter")
        cards.addWidget(self.base, 1)
        cards.addWidget(self.adapted, 1)
        lay.addLayout(cards)
        lay.addStretch(1)
        self.run.clicked.connect(self.go)
        self.max_new.hide()  # no generation options until a causal LM is tried
        self.chat.hide()
        self.set_available(False)

    def set_run(self, run_dir: str, task: str):
        if run_dir != self.run_dir:
            compare.forget()
            self._result_source = ""  # the result shown was another run's
        self.run_dir, self.task = run_dir, task
        classify = task == "classification"
        self.max_new.setVisible(not classify)
        self.chat.setVisible(not classify)
        from lora_studio.engine.runfolder import is_chat_run

        self.chat.setChecked(not classify and bool(run_dir) and is_chat_run(run_dir))  # a chat run answers as one
        self.run.setText("Classify with both" if classify else "Generate with both")
        self.base.title.setText("Base model" + (" (untrained head)" if classify else ""))
        for card in (self.base, self.adapted):
            card.text.setVisible(not classify)
        if not self.prompt.toPlainText().strip():
            self.prompt.setPlainText(EXAMPLES.get(task, ""))

    def set_run_state(self, state):
        """Try it runs on a run that is shown and not training (paused: on the live weights)."""
        ok = state.state in ("idle", "paused") and bool(state.shown_run)
        self.paused_at = state.paused_step
        self.set_available(ok, "" if ok or not state.shown_run else "Pause or stop training to try the adapter.")

    def set_available(self, ok: bool, why: str = ""):
        """Called on every state change of the window: the caption of a result shown (which adapter
        produced it) stays until the run or the availability changes."""
        self.run.setEnabled(ok and bool(self.run_dir))
        if why:
            self.source.setText(why)
        else:
            self.source.setText(getattr(self, "_result_source", "") or (f"Run: {self.run_dir}" if self.run_dir
                                                                         else EMPTY_HINT))

    def go(self):
        text = self.prompt.toPlainText().strip()
        if not self.run_dir:
            return
        if not text:
            self.state.setText("Type a text to try first.")
            self.prompt.setFocus()
            return
        self.run.setEnabled(False)
        max_new, chat = self.max_new.value(), self.chat.isChecked()
        if self.paused_at is not None and self.call_paused is not None:
            self.state.setText("Running on the live model …")
            try:
                future = self.call_paused(lambda setup: compare.compare_live(setup, text, max_new, chat))
            except RuntimeError:  # resumed or stopped in the meantime
                self.run.setEnabled(True)
                self.state.setText("Pause or stop training to try the adapter.")
                return
            self.tasks.start(future.result, on_done=self._done, on_failed=self._failed)
            return
        self.state.setText("Loading the model and running …")
        self.tasks.start(compare.compare, self.run_dir, text, max_new, chat, on_done=self._done, on_failed=self._failed)

    def _done(self, result):
        self.run.setEnabled(True)
        self.state.setText("")
        note = f" (paused at step {self.paused_at})" if self.paused_at is not None and "live" in result.source else ""
        self._result_source = f"Adapter: {result.source}{note}"
        self.source.setText(self._result_source)
        self.base.show_output(result.base, result.task)
        self.adapted.show_output(result.adapted, result.task)

    def _failed(self, failure):
        self.run.setEnabled(True)
        self.state.setText("")
        self.source.setText(f"Could not run the model: {failure.message}")
