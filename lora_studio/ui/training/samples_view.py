"""The Samples view of the Training tab: each sample prompt, the base model's answer (step 0) and
the answer at a chosen step, with the words that changed highlighted.

Fed by the engine's `Samples` events during a run (TrainingController.samples) and by a run
folder's samples.jsonl when a run is opened (`load`).
"""

from __future__ import annotations

import difflib
import html

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QTextBrowser, QVBoxLayout, QWidget

from lora_studio.ui.widgets import label
from lora_studio.ui.bind import quiet

CHANGED = "background-color: rgba(80, 170, 110, 0.35);"  # words of the answer that are not in the base answer


def highlight(base: str, text: str) -> str:
    """`text` as HTML with the words that differ from `base` highlighted (a word-level diff)."""
    a, b = base.split(), text.split()
    out = []
    for op, _i1, _i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        words = html.escape(" ".join(b[j1:j2]))
        if not words:
            continue
        out.append(words if op == "equal" else f'<span style="{CHANGED}">{words}</span>')
    return " ".join(out)


class SamplesView(QWidget):
    """rows: {step: {prompt: {"text", "stopped"}}}; the step shown is the newest unless the user picked one."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(label("Answer at step", "Hint"))
        self.step = QComboBox()
        self.step.setToolTip("Which evaluation's answers to compare with the base model's (step 0)")
        top.addWidget(self.step)
        self.hint = label("", "Hint", wrap=True)
        top.addWidget(self.hint, 1)
        lay.addLayout(top)
        self.table = QTextBrowser()
        self.table.setOpenLinks(False)
        lay.addWidget(self.table, 1)
        self.rows: dict[int, dict[str, dict]] = {}
        self.prompts: list[str] = []
        self._follow = True  # show the newest step as it arrives, until the user picks another
        self.step.activated.connect(self._picked)
        self.clear()

    def clear(self):
        self.rows, self.prompts, self._follow = {}, [], True
        self.step.clear()
        self.table.setHtml("")
        self.hint.setText("Greedy answers to a few held-out prompts appear here at step 0 and at each evaluation "
                          "(causal LMs).")

    def load(self, records: list[dict]):
        """A run folder's samples.jsonl rows."""
        self.clear()
        for r in records:
            self._put(r)
        self._steps_changed()

    def add(self, ev):
        """An engine `Samples` event."""
        for r in ev.rows:
            self._put(r)
        self._steps_changed()

    def _put(self, r: dict):
        self.rows.setdefault(int(r["step"]), {})[r["prompt"]] = r
        if r["prompt"] not in self.prompts:
            self.prompts.append(r["prompt"])

    def _steps_changed(self):
        steps = sorted(self.rows)
        current = self.step.currentData()
        with quiet(self.step):
            self.step.clear()
            for s in steps:
                self.step.addItem(f"{s:,}" + (" (base)" if s == 0 else ""), s)
            if steps:  # (a resumed run with no samples: a classifier, or samples turned off)
                pick = steps[-1] if self._follow or current not in steps else current
                self.step.setCurrentIndex(steps.index(pick))
        self.render()

    def _picked(self, _index: int):
        self._follow = self.step.currentIndex() == self.step.count() - 1
        self.render()

    def shown_step(self) -> int | None:
        return self.step.currentData()

    def render(self):
        step = self.shown_step()
        if step is None:
            return
        base, now = self.rows.get(0, {}), self.rows.get(step, {})
        self.hint.setText("changed words highlighted; [cut] = stopped at the token limit, not on its own")
        cells = []
        for p in self.prompts:
            b, n = base.get(p), now.get(p)
            b_text = html.escape(b["text"]) if b else "<i>–</i>"
            n_text = (highlight(b["text"], n["text"]) if b else html.escape(n["text"])) if n else "<i>–</i>"

            def cut(row):
                return "" if row is None or row.get("stopped") else ' <span style="color:#b07a1e">[cut]</span>'

            cells.append(f"<tr><td valign='top'><b>{html.escape(p)}</b></td><td valign='top'>{b_text}{cut(b)}</td>"
                         f"<td valign='top'>{n_text}{cut(n)}</td></tr>")
        head = (f"<tr><th align='left'>Prompt</th><th align='left'>Base (step 0)</th>"
                f"<th align='left'>Step {step:,}</th></tr>")
        self.table.setHtml(f"<table width='100%' cellspacing='0' cellpadding='6'>{head}{''.join(cells)}</table>")
