"""Merge & export: write the merged Hugging Face model (dtype of choice), the PEFT adapter and/or
a GGUF of a run, with a progress bar and the verification figure (max |Δ logits|) when done.
Each export's outcome is added below the previous ones; "Open folder" shows what was written. The form
scrolls rather than the dialog growing past the screen (a 1366x768 laptop)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QRect, QSettings, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout,
                               QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QVBoxLayout,
                               QWidget)

from lora_studio.ui.gguf_section import GGUFSection, describe

from lora_studio.ui.failure_dialog import show_failure
from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.widgets import Section, icon, label

DTYPES = (("float32", "float32 (exact)"), ("bfloat16", "bfloat16 (half the size)"), ("float16", "float16"))
TITLE_BAR = 32  # px kept for the window frame while its real size is unknown (before the first show; offscreen)


def room(widget) -> QRect:
    """Where a window of `widget` may lie: its screen less panels and docks."""
    return widget.screen().availableGeometry()


class FormScroll(QScrollArea):
    """Asks for its whole form, so the dialog's sizeHint has every row at full height; it is shrunk
    (and scrolls) only where the screen is too short for that."""

    def sizeHint(self) -> QSize:
        hint = self.widget().sizeHint()
        return QSize(hint.width() + self.verticalScrollBar().sizeHint().width(), hint.height())


class Outcome(QPlainTextEdit):
    """Each export's result: at least HEIGHT px (the style sheet's min-height of inputs, set again at each
    polish, left 30) and asking for no more: it scrolls, and on a short screen the form keeps the rest."""

    HEIGHT = 90  # a few lines: the rest of a short screen goes to the form (it scrolls past that)

    def event(self, event) -> bool:
        handled = super().event(event)
        if event.type() in (QEvent.Polish, QEvent.StyleChange):
            self.setMinimumHeight(self.HEIGHT)
        return handled

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self.HEIGHT)


def run_export(run_dir: str, merged_dir: str, adapter_dir: str, dtype: str, progress, gguf=None,
               gguf_out: str = "") -> dict:
    """`gguf`: GGUFSection.job() (made in the GUI thread), writing `gguf_out`."""
    from lora_studio.engine.export import export_adapter, merge_and_export

    out = {}
    if adapter_dir:
        progress("copying the adapter", 0.02)
        out["adapter"] = (adapter_dir, export_adapter(run_dir, adapter_dir))
    if merged_dir:
        out["merged"] = merge_and_export(run_dir, merged_dir, dtype=dtype, progress=progress)
    if gguf is not None:
        out["gguf"] = gguf(run_dir, gguf_out, progress)
    progress("done", 1.0)
    return out


class ExportDialog(QDialog):
    def __init__(self, run_dir: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle("Merge & export")
        self.setMinimumWidth(620)
        self.tasks = TaskRunner(self)
        self.result = None
        lay = QVBoxLayout(self)
        lay.setSpacing(12)
        self.form = QWidget()  # the three sections, in self.scroll
        form = QVBoxLayout(self.form)
        form.setContentsMargins(0, 0, 0, 0)
        form.setSpacing(12)
        sec = Section("Run")
        self.run_dir = self._folder_row(sec, "Run folder", run_dir, "the run to export")
        form.addWidget(sec)

        out = Section("Outputs")
        self.merged_on = QCheckBox("Merged model: a Hugging Face folder, W = W0 + s·B·A, no adapter needed")
        self.merged_on.setChecked(True)
        out.form.addRow(self.merged_on)  # one form: each checkbox sits above its own rows
        self.merged_dir = self._folder_row(out, "Folder", "", "new folder for the merged model")
        self.dtype = QComboBox()
        for value, text in DTYPES:
            self.dtype.addItem(text, value)
        out.form.addRow("dtype", self.dtype)
        self.adapter_on = QCheckBox("PEFT adapter (a few MB, loads with peft.PeftModel)")
        out.form.addRow(self.adapter_on)
        self.adapter_dir = self._folder_row(out, "Folder", "", "new folder for the adapter")
        form.addWidget(out)
        self.gguf = GGUFSection(run_dir, runner=self.tasks)
        form.addWidget(self.gguf)
        form.addStretch(1)
        self.scroll = FormScroll()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.form)
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        self.scroll.setMinimumWidth(self.form.minimumSizeHint().width() + bar)  # scrolls down, never cuts sideways
        self.form.installEventFilter(self)  # a row grew (a longer hint): grow the dialog too
        lay.addWidget(self.scroll)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.state = label("", "Hint", wrap=True)
        self.outcome = Outcome()  # every export's result, newest last
        self.outcome.setObjectName("ExportOutcome")
        self.outcome.setReadOnly(True)
        self.outcome.hide()
        lay.addWidget(self.progress)
        lay.addWidget(self.state)
        lay.addWidget(self.outcome, 1)  # a taller dialog: room for more results
        self.buttons = QDialogButtonBox()
        self.open_folder = self.buttons.addButton("Open folder", QDialogButtonBox.ActionRole)
        self.open_folder.setIcon(icon("folder", "#6a7385"))
        self.open_folder.setEnabled(False)  # until an export has written something
        self.open_folder.clicked.connect(self._open_folder)
        self.written = ""
        self.export = self.buttons.addButton("Export", QDialogButtonBox.AcceptRole)
        self.export.setObjectName("Primary")
        self.export.setIcon(icon("export"))
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.export.clicked.connect(self.start)
        self.close_button.clicked.connect(self.reject)
        lay.addWidget(self.buttons)
        self.run_dir.textChanged.connect(self._defaults)
        self.merged_on.toggled.connect(self.merged_dir.parentWidget().setEnabled)  # the folder and its button
        self.merged_on.toggled.connect(self.dtype.setEnabled)
        self.adapter_on.toggled.connect(self.adapter_dir.parentWidget().setEnabled)
        self.adapter_dir.parentWidget().setEnabled(False)
        self.run_dir.textChanged.connect(self.gguf.set_run)
        self._defaults(run_dir)

    def _folder_row(self, section, title, value, placeholder) -> QLineEdit:
        edit = QLineEdit(value)
        edit.setPlaceholderText(placeholder)
        browse = QPushButton(icon("folder", "#6a7385"), "")

        def pick():
            settings = QSettings()
            folder = QFileDialog.getExistingDirectory(self, title, edit.text() or settings.value("folders/export", ""))
            if folder:
                settings.setValue("folders/export", str(Path(folder).parent))
                edit.setText(folder)

        browse.clicked.connect(pick)
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        row.addWidget(browse)
        section.form.addRow(title, box)
        return edit

    def _defaults(self, run_dir: str):
        run = Path(run_dir) if run_dir else None
        if run is None:
            return
        self.merged_dir.setText(str(run.parent / f"{run.name}-merged"))
        self.adapter_dir.setText(str(run.parent / f"{run.name}-adapter"))

    def start(self):
        run = self.run_dir.text().strip()
        merged = self.merged_dir.text().strip() if self.merged_on.isChecked() else ""
        adapter = self.adapter_dir.text().strip() if self.adapter_on.isChecked() else ""
        gguf = self.gguf.job() if self.gguf.enabled.isChecked() else None
        gguf_out = self.gguf.out.text().strip()
        if gguf is not None and not gguf_out:
            self.state.setText("Choose the GGUF file.")
            return
        if not run or not (merged or adapter or gguf):
            self.state.setText("Choose a run folder and at least one output.")
            return
        self.export.setEnabled(False)
        self.progress.setValue(0)
        self.tasks.start(run_export, run, merged, adapter, self.dtype.currentData(), gguf=gguf, gguf_out=gguf_out,
                         on_done=self._done, on_failed=self._failed, on_progress=self._progress, what="the export")

    def _progress(self, msg: str, frac: float):
        self.state.setText(msg[:1].upper() + msg[1:] + " …" if frac < 1 else "Done.")
        self.progress.setValue(int(1000 * frac))

    def _done(self, result: dict):
        self.result = result
        self.export.setEnabled(True)
        lines = []
        if "merged" in result:
            r = result["merged"]
            mark = "✓ verified" if r.ok else "✗ NOT verified"
            lines.append(f"Merged model ({r.dtype}) written to {r.path}\n"
                         f"{mark}: max |Δ logits| = {r.max_abs_diff:.3g} (tolerance {r.tolerance:.3g}) "
                         f"between the merged model and base + adapter.")
        if "adapter" in result:
            path, files = result["adapter"]
            lines.append(f"Adapter written to {path}: {', '.join(files)}")
        if "gguf" in result:
            lines.append(describe(result["gguf"]))
        self._wrote(result)
        self.state.setText("Done.")
        self.add_outcome("\n\n".join(lines))
        self._ended()

    def add_outcome(self, text: str):
        """Append an export's result; the earlier ones stay (the dialog grows up to the screen's height,
        then the form scrolls: its fields never shrink)."""
        if self.outcome.toPlainText():
            text = "\n" + "─" * 24 + "\n" + text
        self.outcome.appendPlainText(text)
        if self.outcome.isHidden():
            self.outcome.show()
            self._fit()

    def _wrote(self, result: dict):
        """What "Open folder" opens: the merged model's folder, else the adapter's, else the GGUF's."""
        if "merged" in result:
            self.written = str(result["merged"].path)
        elif "adapter" in result:
            self.written = str(result["adapter"][0])
        elif "gguf" in result:
            self.written = str(Path(result["gguf"].path).parent)
        self.open_folder.setEnabled(bool(self.written))
        self.open_folder.setToolTip(f"Open {self.written}")

    def _open_folder(self):
        QDesktopServices.openUrl(QUrl.fromLocalFile(self.written))

    def _fit(self):
        """Grow to the sizeHint (no row squashed) but keep the frame on the screen: past that, the form
        scrolls. Qt alone first shows a window at most 2/3 of the screen high, and never grows it when a
        row grows (the converter's hint arrives after the show)."""
        self.scroll.updateGeometry()  # the form's rows changed: the dialog's layout asks again
        area = room(self)
        frame = self.frameGeometry().height() - self.height() or TITLE_BAR
        height = min(max(self.height(), self.sizeHint().height()), area.height() - frame)
        self.resize(self.width(), height)
        below = self.y() + frame + height - (area.y() + area.height())  # y(): the frame's top
        if self.isVisible() and below > 0:
            self.move(self.x(), max(area.y(), self.y() - below))

    def showEvent(self, event):
        self._fit()  # before QDialog centres the dialog on its parent
        super().showEvent(event)

    def eventFilter(self, watched, event):
        if watched is self.form and event.type() == QEvent.LayoutRequest and self.isVisible():
            QTimer.singleShot(0, self._fit)  # once the form's layout has its new size
        return super().eventFilter(watched, event)

    def _failed(self, failure):
        self.export.setEnabled(True)
        self.progress.setValue(0)
        self.state.setText("")
        if getattr(self, "_close_pending", None) is None:
            show_failure(self, failure, "Export failed")
        else:
            self.error_after_close = failure  # the window asked to close: no dialog on a closing window
        self._ended()

    def done(self, code: int):
        """Close, or, while an export runs (a merge can take minutes), say so and close once it has
        ended: never block the window, never drop the running thread."""
        if self.tasks.busy:
            self._close_pending = code
            self.state.setText("The export is still running: this window closes when it has finished.")
            return
        super().done(code)

    def _ended(self):
        code = getattr(self, "_close_pending", None)
        if code is not None:
            self._close_pending = None
            QDialog.done(self, code)  # the task has returned; its thread only quits now (the runner keeps it)
