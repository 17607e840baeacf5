"""Model: a local folder or hub id (recent ones remembered), the task, and the architecture readout."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLineEdit, QPushButton

from lora_studio.core import names
from lora_studio.ui.download_dialog import DownloadDialog, needs_download
from lora_studio.ui.session import Session
from lora_studio.ui.style import repolish
from lora_studio.ui.widgets import Section, icon, label, short_count
from lora_studio.ui.bind import bind, quiet

DEMO = "Demo model (all-MiniLM-L6-v2)"
TASK_TEXT = {"classification": "Classification", "causal-lm": "Causal LM", "preference": "Preference (DPO/ORPO/SimPO)"}
TASKS = [(t, TASK_TEXT.get(t, t)) for t in names.TASKS]  # every task the engine trains
FROM_TASKS = ("causal-lm", "preference")  # tasks that may start from a trained run's adapter (--from)
CHAT_DEMO = "Chat demo (SmolLM2-135M-Instruct)"  # a preset: model, chat data and settings (Session.use_chat_demo)
CHAT_DEMO_KEY = ":chat-demo:"
RECENT_KEY, MAX_RECENT = "models/recent", 8


class ModelPanel(Section):
    """Signals:
        sig_failed(object, str): a model could not be inspected (Failure, reference) - the window shows it
    """

    sig_failed = Signal(object, str)

    def __init__(self, session: Session, parent=None):
        super().__init__("Model", parent, collapsible=True)
        self.session = session
        self.browse = QPushButton(icon("folder", "#6a7385"), "")
        self.browse.setToolTip("Choose a local model folder (with config.json and safetensors)")
        row = QHBoxLayout()
        self.path = QComboBox()
        self.path.setEditable(True)
        self.path.setInsertPolicy(QComboBox.NoInsert)
        self.path.lineEdit().setPlaceholderText("folder or hub id, e.g. HuggingFaceTB/SmolLM2-135M")
        self.path.setToolTip("A Hugging Face model: a local folder or a hub id. Press Enter to load it.")
        self.path.setMinimumContentsLength(12)
        self.path.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        row.addWidget(self.path, 1)
        row.addWidget(self.browse)
        self.body.addLayout(row)

        self.task = QComboBox()
        for value, text in TASKS:
            self.task.addItem(text, value)
        self.form.addRow("Task", self.task)
        self.start_from = QLineEdit()
        self.start_from.setPlaceholderText("a new adapter")
        self.start_from.setClearButtonEnabled(True)
        self.start_from.setToolTip("Train on the adapter of a finished run (e.g. an SFT run before DPO): its base "
                                   "model and LoRA settings are taken; for DPO it is also the reference")
        self.browse_run = QPushButton(icon("folder", "#6a7385"), "")
        self.browse_run.setToolTip("Choose a finished run folder")
        from_row = QHBoxLayout()
        from_row.addWidget(self.start_from, 1)
        from_row.addWidget(self.browse_run)
        self.form.addRow("From", from_row)  # a short label: the Task combo keeps its width
        self.from_row = from_row

        self.readout = QGridLayout()
        self.readout.setHorizontalSpacing(14)
        self.readout.setVerticalSpacing(3)
        self.facts = {}
        for i, (key, title) in enumerate((("model_type", "Type"), ("params", "Parameters"), ("layers", "Layers"),
                                          ("hidden_size", "Hidden"), ("heads", "Heads"), ("dtype", "dtype"))):
            self.readout.addWidget(label(title, "Hint"), i // 2, (i % 2) * 2)
            self.facts[key] = label("–", "Value", selectable=True)
            self.readout.addWidget(self.facts[key], i // 2, (i % 2) * 2 + 1)
        self.body.addLayout(self.readout)
        self.projections = label("", "Hint", wrap=True)
        self.body.addWidget(self.projections)
        self.state = label("", "Hint", wrap=True)
        self.body.addWidget(self.state)

        flags = QHBoxLayout()
        self.trust = QCheckBox("Trust remote code")
        self.trust.setToolTip("Run Python code shipped with the model. Only for sources you trust.")
        self.pickle = QCheckBox("Allow .bin weights")
        self.pickle.setToolTip("Accept pickled weights (.bin/.pt), which can run code when loaded.")
        flags.addWidget(self.trust)
        flags.addWidget(self.pickle)
        flags.addStretch(1)
        self.body.addLayout(flags)

        self._fill_recent()
        self.path.activated.connect(self._chosen)
        self.path.lineEdit().returnPressed.connect(self._entered)
        self.browse.clicked.connect(self._browse)
        self.task.activated.connect(lambda _: session.load_model(task=self.task.currentData()))
        self.start_from.editingFinished.connect(self._start_from_typed)
        self.browse_run.clicked.connect(self._browse_run)
        self.trust.toggled.connect(lambda on: session.set_model_flag(trust_remote_code=on))
        self.pickle.toggled.connect(lambda on: session.set_model_flag(allow_pickle=on))
        session.model_loading.connect(self._loading)
        session.model_ready.connect(self._ready)
        session.model_failed.connect(self._failed)
        session.changed.connect(lambda s: s == "model" and self._sync())
        self._sync()

    # -- choosing ------------------------------------------------------------------------
    def _fill_recent(self):
        with quiet(self.path):
            self.path.clear()
            self.path.addItem(DEMO, "")
            self.path.addItem(CHAT_DEMO, CHAT_DEMO_KEY)
            for ref in recent_models():
                self.path.addItem(ref, ref)

    def _ref_of_text(self, text: str) -> str:
        if text.strip() == CHAT_DEMO:
            return CHAT_DEMO_KEY
        return "" if text.strip() in ("", DEMO) else text.strip()

    def _chosen(self, index: int):
        self.load(self.path.itemData(index) if index >= 0 else self.path.currentText())

    def _entered(self):
        self.load(self._ref_of_text(self.path.currentText()))

    def _browse(self):
        settings = QSettings()
        start = settings.value("folders/model", "")
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder", start)
        if folder:
            settings.setValue("folders/model", folder)
            self.load(folder)

    def _start_from_typed(self):
        if self.start_from.isModified():
            self.start_from.setModified(False)
            self.session.start_from(self.start_from.text())

    def _browse_run(self):
        from lora_studio.ui.runs import runs_root

        folder = QFileDialog.getExistingDirectory(self, "Choose the run to start from", str(runs_root()))
        if folder:
            self.start_from.setText(folder)
            self.session.start_from(folder)

    def load(self, ref: str):
        """Inspect `ref` ("" = the demo); the task is inferred from the model. A hub id that is not
        in the cache is downloaded first, in a dialog with progress and Cancel."""
        if ref == CHAT_DEMO_KEY:
            self.path.setEditText(CHAT_DEMO)
            self.session.use_chat_demo()
            return
        self.path.setEditText(ref or DEMO)
        task = "keep" if ref == self.session.draft.model.path else None
        if ref and needs_download(ref):
            self._download(ref, task)
            return
        self.session.load_model(ref, task=task)

    def _download(self, ref: str, task):
        dialog = DownloadDialog(ref, self.session.draft.model.allow_pickle, self)
        dialog.sig_done.connect(lambda folder: self.session.load_model(ref, task=task))
        dialog.sig_cancelled.connect(lambda: self._show_state(
            f"Download of {ref} cancelled; what was fetched is kept: choose it again to continue"))
        dialog.sig_failed.connect(lambda failure: self._failed(failure, ref))
        self.download = dialog
        self._show_state(f"Downloading {ref} …")
        dialog.open()

    # -- session -> view -----------------------------------------------------------------
    def _sync(self):
        m = self.session.draft.model
        text = m.path or DEMO
        if self.path.currentText() != text and not self.path.lineEdit().hasFocus():
            self.path.setEditText(text)
            self.path.lineEdit().setCursorPosition(0)
        self.task.setCurrentIndex(max(0, self.task.findData(m.task)))
        self.task.setEnabled(bool(m.path))
        self.form.setRowVisible(self.from_row, m.task in FROM_TASKS)
        if not self.start_from.hasFocus():
            bind(self.start_from, m.start_from)
        for box, on in ((self.trust, m.trust_remote_code), (self.pickle, m.allow_pickle)):
            bind(box, on)

    def _show_state(self, text: str, error: bool = False):
        self.state.setObjectName("Error" if error else "Hint")
        repolish(self.state)
        self.state.setText(text)

    def _loading(self, ref: str):
        self._show_state(f"Reading {ref or 'the demo model'} …")

    def _ready(self, info):
        a = info.arch
        self.facts["model_type"].setText(str(a.get("model_type", "?")))
        self.facts["params"].setText(short_count(a.get("params") or 0))
        self.facts["params"].setToolTip(f"{a.get('params', 0):,} parameters")
        for key in ("layers", "hidden_size", "heads", "dtype"):
            self.facts[key].setText(str(a.get(key) if a.get(key) is not None else "–"))
        fused = " (q/k/v fused in one matrix, adapted per slice)" if info.fused else ""
        self.projections.setText("Projections: " + " ".join(info.targets) + fused)
        self._show_state("")
        if info.ref:
            remember_model(info.ref)
            self._fill_recent()
        self._sync()

    def _failed(self, failure, ref):
        self._show_state(failure.message, error=True)
        self._sync()
        self.sig_failed.emit(failure, ref)


def recent_models() -> list[str]:
    value = QSettings().value(RECENT_KEY, [])
    if isinstance(value, str):
        value = [value]
    return [v for v in (value or []) if v]


def remember_model(ref: str):
    items = [ref] + [r for r in recent_models() if r != ref]
    QSettings().setValue(RECENT_KEY, items[:MAX_RECENT])
