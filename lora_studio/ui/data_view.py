"""The Data tab: the first rows of the data as a table, the detected format and column roles,
split sizes and token-length statistics (computed by tokenizing the data in a worker), and what is
trained: the data check's warnings above the table, the selected row's tokens (data_check.py)."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QHeaderView, QTableView, QVBoxLayout, QWidget

from lora_studio.ui.data_check import TrainedView, run_check
from lora_studio.ui.session import Session
from lora_studio.ui.widgets import Card, count, label


class DataView(QWidget):
    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(12)
        self.source = label("", "Hint", wrap=True, selectable=True)
        lay.addWidget(self.source)
        cards = QHBoxLayout()
        cards.setSpacing(12)
        self.examples = Card("Examples", small=True)
        self.tokens = Card("Tokens per example", small=True)
        self.truncated = Card("Truncated", small=True)
        self.labels = Card("Labels", small=True)
        for c in (self.examples, self.tokens, self.truncated, self.labels):
            cards.addWidget(c, 1)
        lay.addLayout(cards)
        self.problem = label("", "Error", wrap=True)
        lay.addWidget(self.problem)
        self.trained = TrainedView()
        lay.addWidget(self.trained)
        self._check_gen = 0
        self.model = QStandardItemModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setAlternatingRowColors(True)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideRight)
        self.table.verticalHeader().setDefaultSectionSize(26)
        self.table.horizontalHeader().setStretchLastSection(True)
        lay.addWidget(self.table, 1)
        self.table.selectionModel().currentRowChanged.connect(lambda cur, _: self.trained.show_row(cur.row() + 1))
        session.data_loading.connect(self._loading)
        session.data_ready.connect(self.show_preview)
        session.data_stats.connect(self.show_stats)
        session.data_failed.connect(self._failed)
        self._problem("")

    def _problem(self, text: str):
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    def _loading(self, path: str):
        self._problem("")
        self._reading = path or "the demo dataset"
        self.source.setText(f"Reading {self._reading} …")
        self._cards("…", "reading the file")

    def _cards(self, value: str, sub: str):
        for card in (self.examples, self.tokens, self.truncated, self.labels):
            card.set(value, sub)

    def _failed(self, failure):
        self._problem(failure.message)
        self._check_gen += 1
        self.trained.show_check(None)
        self._cards("–", "data not usable (see below)")  # never the previous data's numbers, nor "tokenizing"
        if getattr(self, "_reading", None):  # the file itself could not be read: no old rows under its name
            self.source.setText(f"Could not read {self._reading}")
            self._cards("–", "file not read (see below)")
            self.model.clear()
            self._reading = None

    def show_preview(self, p):
        self._reading = None
        self._problem(p.problem)
        roles = ", ".join(f"{role} ← {col}" for role, col in p.roles.items())
        demo = "" if self.session.draft.data.path else "demo dataset · "
        self.source.setText(f"{demo}{p.path}\n{p.num_rows:,} rows · format: {p.format or 'not detected'}"
                            + (f" · {roles}" if roles else ""))
        self.model.clear()
        by_column = {col: role for role, col in p.roles.items()}
        self.model.setHorizontalHeaderLabels([c if by_column.get(c, c) == c else f"{c} (as {by_column[c]})" for c in p.columns])
        for row in p.rows:
            items = []
            for c in p.columns:
                item = QStandardItem(row.get(c, ""))
                item.setToolTip(row.get(c, "")[:2000])
                items.append(item)
            self.model.appendRow(items)
        header = self.table.horizontalHeader()
        for i, c in enumerate(p.columns):
            short = by_column.get(c) == "label" or max((len(r.get(c, "")) for r in p.rows), default=0) < 24
            header.setSectionResizeMode(i, QHeaderView.ResizeToContents if short else QHeaderView.Interactive)
            if not short:
                self.table.setColumnWidth(i, 460)
        header.setStretchLastSection(True)
        self._cards("…", "tokenizing")

    def show_stats(self, s):
        tr, va = s.train, s.validation
        self.examples.set(f"{count(tr.examples)} / {count(va.examples)}", "train / validation"
                          + (f" · {tr.dropped + va.dropped} dropped" if tr.dropped + va.dropped else ""))
        self.tokens.set(f"{tr.mean_tokens:.0f} mean", f"median {tr.median_tokens:.0f} · p95 {tr.p95_tokens:.0f} · "
                                                      f"max {tr.max_tokens}")
        share = 100 * tr.truncated / max(tr.examples, 1)
        self.truncated.set(count(tr.truncated), f"{share:.1f} % cut at {tr.max_length} tokens")
        if s.label_names:
            names = ", ".join(s.label_names[:8]) + (" …" if len(s.label_names) > 8 else "")
            self.labels.set(str(len(s.label_names)), names)
        elif s.format.startswith("preference"):
            self.labels.set("pairs", f"{s.format}: the chosen answer over the rejected one, per prompt")
        else:
            self.labels.set("–", f"{s.format}: the model learns the text itself")
        self._start_check()

    def _start_check(self):
        """The data check (what is trained, warnings) with the model's tokenizer, in a worker."""
        self._check_gen += 1
        gen, session = self._check_gen, self.session
        if session.info is None or session.draft.model.task != "causal-lm":
            self.trained.show_check(None)
            return
        self.trained.show_check(None, "Checking what is trained …")
        session.tasks.start(run_check, dataclasses.replace(session.draft.data), session.draft.model.task,
                            session.info.resolved, session.draft.model.trust_remote_code,
                            on_done=lambda c: gen == self._check_gen and self.trained.show_check(c),
                            on_failed=lambda f: gen == self._check_gen and self.trained.show_check(None, f.message))
