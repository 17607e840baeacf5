"""GGUF for llama.cpp / Ollama (issue 16): a section of the export dialog.

The adapter alone (engine.gguf.write_adapter_gguf, the `gguf` package) or the merged model
(engine.gguf.export_merged_gguf, llama.cpp's own converter, verified in llama.cpp). "Merged" is
offered only when engine.gguf.find_converter finds the converter (in the chosen llama.cpp folder,
else $LORA_STUDIO_LLAMA_CPP or the cache); otherwise its message says how to get one.

Use from the dialog's worker: `job = section.job()` in the GUI thread, then `job(run_dir, out,
progress)` in the worker; back in the GUI thread `section.show_result(result)`. Or let the section
run it itself: `section.export(run_dir)` (signals `exported` / `failed`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton,
                               QRadioButton, QWidget)

from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.widgets import Section, icon, label

TYPES = (("f16", "f16 (half the size)"), ("f32", "f32 (exact)"), ("q8_0", "q8_0 (8-bit, merged only)"))


def run(run_dir: str, out: str, progress=None, *, merged: bool = False, type: str = "f16",
        llama_cpp: str | None = None, overwrite: bool = False):
    """Write the GGUF (worker thread); returns engine.gguf.GGUFResult."""
    from lora_studio.engine import gguf

    say = progress or (lambda msg, frac: None)
    if merged:
        return gguf.export_merged_gguf(run_dir, out, type=type, llama_cpp=llama_cpp or None, overwrite=overwrite,
                                       progress=say)
    say("writing the adapter GGUF", 0.1)
    result = gguf.write_adapter_gguf(run_dir, out, type=type, overwrite=overwrite)
    say("done", 1.0)
    return result


def find_converter(folder: str | None):
    """The converter's path, or the engine's UserError (worker thread)."""
    from lora_studio.engine.gguf import find_converter as find

    return str(find(folder or None))


def describe(result) -> str:
    """The outcome in words: file, size, and the verification figure."""
    from lora_studio.ui.widgets import size

    head = f"GGUF ({result.type}) written to {result.path} · {size(result.size)} · {result.tensors} tensors"
    if result.verified is None:
        return f"{head}\n{result.note}" if result.note else head
    mark = "✓ verified in llama.cpp" if result.verified else "✗ NOT verified"
    return (f"{head}\n{mark}: max |Δ log p| of the next token = {result.max_diff:.3g} "
            f"(tolerance {result.tolerance:.3g}) between llama.cpp and the merged HF model."
            + (f"\n{result.note}" if result.note else ""))


def _not_for_gguf(run_dir) -> str:
    """Why a run cannot become a GGUF ("" when it can): llama.cpp runs language models, not classifiers."""
    from lora_studio.config import RunConfig
    from lora_studio.engine import runfolder

    try:
        task = RunConfig.load(Path(run_dir) / runfolder.RUN_FILE).model.task
    except Exception:  # noqa: BLE001 - not a run (yet): the export itself says what is wrong
        return ""
    if task == "classification":
        return ("GGUF is for language models (llama.cpp generates text); this run is a classifier: export the "
                "merged model or the PEFT adapter above.")
    return ""


class GGUFSection(Section):
    """Signals:
        exported(object): the engine.gguf.GGUFResult of `export`
        failed(object): a tasks.Failure of `export`
        converter_checked(bool): whether "merged" is available (after each llama.cpp folder check)
    """

    exported = Signal(object)
    failed = Signal(object)
    converter_checked = Signal(bool)

    def __init__(self, run_dir: str = "", runner: TaskRunner | None = None, parent=None):
        super().__init__("GGUF", parent)
        self.runner = runner or TaskRunner(self)
        self.converter: str | None = None
        self._check_gen = 0
        self.enabled = QCheckBox("GGUF for llama.cpp / Ollama")
        self.enabled.setToolTip("A .gguf file that llama.cpp, Ollama and LM Studio load")
        self.adapter_only = QRadioButton("Adapter only")
        self.adapter_only.setToolTip("llama.cpp's LoRA format (a few MB): apply it on a GGUF of the base (--lora)")
        self.merged = QRadioButton("Merged model")
        self.merged.setToolTip("W = W0 + s·B·A converted by llama.cpp's own converter, then verified in llama.cpp")
        self.adapter_only.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.adapter_only)
        group.addButton(self.merged)
        kinds = QHBoxLayout()
        kinds.addWidget(self.adapter_only)
        kinds.addSpacing(12)
        kinds.addWidget(self.merged)
        kinds.addStretch(1)
        self.type = QComboBox()
        for value, text in TYPES:
            self.type.addItem(text, value)
        self.type.setToolTip("Tensor type in the file; q8_0 quantizes, so only the merged model can use it")
        self.out = QLineEdit()
        self.out.setPlaceholderText("file ending in .gguf")
        self.llama_cpp = QLineEdit()
        self.llama_cpp.setPlaceholderText("needed for a merged GGUF")
        self.llama_cpp.setToolTip("A llama.cpp checkout, or a folder with a llama-cpp-python source archive")
        browse = QPushButton(icon("folder", "#6a7385"), "")
        browse.setToolTip("Choose the llama.cpp folder")
        browse.clicked.connect(self._browse)
        llama_row = QWidget()
        row = QHBoxLayout(llama_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.llama_cpp, 1)
        row.addWidget(browse)
        f = self.form
        f.addRow(self.enabled)
        f.addRow("Kind", kinds)
        f.addRow("Type", self.type)
        f.addRow("File", self.out)
        f.addRow("llama.cpp", llama_row)
        self.hint = label("", "Hint", wrap=True)
        self.body.addWidget(self.hint)
        self.outcome = label("", "CardAccent", wrap=True, selectable=True)
        self.outcome.hide()
        self.body.addWidget(self.outcome)
        self.fields = (self.adapter_only, self.merged, self.type, self.out, llama_row)
        self.enabled.toggled.connect(self._update)
        self.merged.toggled.connect(self._update)
        self.llama_cpp.editingFinished.connect(self.check_converter)
        self.set_run(run_dir)
        self.merged.setEnabled(False)
        self._update()
        self.check_converter()

    # -- interface ----------------------------------------------------------------------------
    def set_run(self, run_dir: str):
        if run_dir:
            run_dir = Path(run_dir)
            self.out.setText(str(run_dir.parent / f"{run_dir.name}.gguf"))
        self.not_for = _not_for_gguf(run_dir) if run_dir else ""
        if self.not_for:  # said up front, not after Export (GUI N12)
            self.enabled.setChecked(False)
            self.hint.setText(self.not_for)
        self.enabled.setEnabled(not self.not_for)
        self.enabled.setToolTip(self.not_for or "A .gguf file that llama.cpp, Ollama and LM Studio load")

    def options(self) -> dict:
        return {"merged": self.merged.isChecked(), "type": self.type.currentData(),
                "llama_cpp": self.llama_cpp.text().strip() or None}

    def job(self):
        """`run` bound to the current choices: call job(run_dir, out, progress) in a worker."""
        return partial(run, **self.options())

    def export(self, run_dir: str, out: str | None = None):
        """Write the GGUF of `run_dir` in a worker; `exported` or `failed` when done."""
        self.outcome.hide()
        self.runner.start(self.job(), str(run_dir), out or self.out.text().strip(),
                          on_done=self._exported, on_failed=self._failed, on_progress=self._progress)

    def show_result(self, result):
        self.outcome.setText(describe(result))
        self.outcome.show()

    def check_converter(self):
        """Ask the engine whether llama.cpp's converter is here; enables "merged" or says why not."""
        self._check_gen += 1
        gen = self._check_gen
        self.runner.start(find_converter, self.llama_cpp.text().strip(),
                          on_done=lambda path: self._converter(gen, path, ""),
                          on_failed=lambda f: self._converter(gen, None, f.message))

    # -- in the GUI thread ----------------------------------------------------------------------
    def _converter(self, gen, path, message):
        if gen != self._check_gen or getattr(self, "not_for", ""):
            return
        self.converter = path
        self.merged.setEnabled(path is not None)
        if path is None and self.merged.isChecked():
            self.adapter_only.setChecked(True)
        self.merged.setToolTip(f"llama.cpp's converter: {path}" if path else message)
        self.hint.setText(f"Merged GGUF: converted with {path}" if path else message)
        self._update()
        self.converter_checked.emit(path is not None)

    def _update(self, *_):
        on = self.enabled.isChecked()
        for w in self.fields:
            w.setEnabled(on)
        self.merged.setEnabled(on and self.converter is not None)
        q8 = self.type.model().item(self.type.findData("q8_0"))
        q8.setEnabled(self.merged.isChecked())
        if not self.merged.isChecked() and self.type.currentData() == "q8_0":
            self.type.setCurrentIndex(self.type.findData("f16"))

    def _browse(self):
        settings = QSettings()
        folder = QFileDialog.getExistingDirectory(self, "llama.cpp folder", self.llama_cpp.text()
                                                  or settings.value("folders/llama_cpp", ""))
        if folder:
            settings.setValue("folders/llama_cpp", folder)
            self.llama_cpp.setText(folder)
            self.check_converter()

    def _progress(self, msg: str, frac: float):
        self.hint.setText(msg[:1].upper() + msg[1:] + (" …" if frac < 1 else ""))

    def _exported(self, result):
        self.show_result(result)
        self.exported.emit(result)

    def _failed(self, failure):
        self.hint.setText(failure.message)
        self.failed.emit(failure)
