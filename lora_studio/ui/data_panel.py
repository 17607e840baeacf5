"""Data settings: the file, its format and column roles (detected, changeable), the validation
split and the token limit. The preview table and statistics are in data_view.py."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton,
                               QSpinBox)

from lora_studio.core import names
from lora_studio.ui.session import Session
from lora_studio.ui.widgets import Section, icon, label
from lora_studio.ui.bind import bind, quiet

FORMATS = names.FORMATS_BY_TASK
ROLES = names.ROLES
FILTER = "Data (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)"


class DataPanel(Section):
    """Signals: none; writes to session.draft.data through Session.set_data."""

    def __init__(self, session: Session, parent=None):
        super().__init__("Data", parent, collapsible=True)
        self.session = session
        self.path = self._file_row("Training data", "demo dataset of the task (leave empty)",
                                   lambda text: session.set_data(path=text))
        self.format = QComboBox()
        self.format.setToolTip("How examples are read: detected from the column names unless you choose")
        self.form.addRow("Format", self.format)
        self.roles: dict[str, QComboBox] = {}
        for role in ("text", "prompt", "completion", "messages", "label"):
            box = QComboBox()
            box.setToolTip(f"The column that holds the {role}")
            box.activated.connect(lambda _, r=role, b=box: session.set_data(**{f"{r}_column": b.currentData() or ""}))
            self.roles[role] = box
            self.form.addRow(f"{role.capitalize()} column", box)
        self.validation = self._file_row("Validation data", "a split of the training data",
                                         lambda text: session.set_data(validation_path=text))
        self.split = QDoubleSpinBox()
        self.split.setRange(0, 50)
        self.split.setSuffix(" %")
        self.split.setDecimals(1)
        self.split.setToolTip("Share of the training file held out for evaluation (when no validation file)")
        self.form.addRow("Held out", self.split)
        self.max_length = QSpinBox()
        self.max_length.setRange(8, 131072)
        self.max_length.setSingleStep(64)
        self.max_length.setSuffix(" tokens")
        self.max_length.setToolTip("Longer examples are truncated (the Data tab counts them)")
        self.form.addRow("Max length", self.max_length)
        self.state = label("", "Hint", wrap=True)
        self.body.addWidget(self.state)

        self.format.activated.connect(lambda _: session.set_data(format=self.format.currentData()))
        self.split.valueChanged.connect(lambda v: session.set_data(validation_split=round(v / 100, 4)))
        self.max_length.valueChanged.connect(lambda v: session.set_data(max_length=int(v)))
        session.changed.connect(lambda s: s in ("data", "model") and self._sync())
        session.data_ready.connect(lambda p: self._sync())
        session.data_loading.connect(lambda p: self.state.setText("Reading the data …"))
        session.data_stats.connect(lambda s: self.state.setText(""))
        session.data_failed.connect(lambda f: self.state.setText(f.message))
        self._sync()

    def _file_row(self, title: str, placeholder: str, apply) -> QLineEdit:
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        edit.setClearButtonEnabled(True)

        def finished():
            if edit.isModified():
                edit.setModified(False)
                apply(edit.text().strip())

        edit.editingFinished.connect(finished)
        browse = QPushButton(icon("folder", "#6a7385"), "")
        browse.setToolTip(f"Choose the {title.lower()} file")

        def pick():
            settings = QSettings()
            name, _ = QFileDialog.getOpenFileName(self, f"Choose the {title.lower()}", settings.value("folders/data", ""), FILTER)
            if name:
                settings.setValue("folders/data", str(Path(name).parent))
                edit.setText(name)
                apply(name)

        browse.clicked.connect(pick)
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(browse)
        self.form.addRow(title, row)
        return edit

    def _sync(self):
        d, task = self.session.draft.data, self.session.draft.model.task
        preview = self.session.preview
        for edit, value in ((self.path, d.path), (self.validation, d.validation_path)):
            if edit.text() != value and not edit.hasFocus():
                edit.setText(value)
        detected = preview.format if preview else ""
        with quiet(self.format):
            self.format.clear()
            for value in FORMATS.get(task, ("auto",)):
                text = f"Auto ({detected or 'not detected'})" if value == "auto" else value
                self.format.addItem(text, value)
            self.format.setCurrentIndex(max(0, self.format.findData(d.format)))
        picked = d.format if d.format in FORMATS.get(task, ()) and d.format != "auto" else ""  # preference: no choice
        fmt = picked or detected or {"classification": "classification", "preference": "preference"}.get(task, "text")
        columns = preview.columns if preview else []
        roles = preview.roles if preview else {}
        for role, box in self.roles.items():
            shown = role in ROLES.get(fmt, ())
            self.form.setRowVisible(box, shown)
            chosen = getattr(d, f"{role}_column")
            with quiet(box):
                box.clear()
                box.addItem(f"Auto ({roles.get(role) or '–'})", "")
                for c in columns:
                    box.addItem(c, c)
                box.setCurrentIndex(max(0, box.findData(chosen)) if chosen else 0)
        for w, v in ((self.split, d.validation_split * 100), (self.max_length, d.max_length)):
            if abs(w.value() - v) > 1e-9:
                bind(w, v)
        from lora_studio.engine.data import demo_path  # no torch in that module's imports

        demo_validation = not d.path and task in names.TASKS and bool(demo_path(task)[1])
        self.validation.setPlaceholderText("the demo's own validation file" if demo_validation
                                           else "a split of the training data")
        self.split.setEnabled(not d.validation_path and not demo_validation)
