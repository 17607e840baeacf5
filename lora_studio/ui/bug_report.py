"""A bug's details where a desktop user can find them (GUI N17): appended to a log file in the
app's data folder and copied to the clipboard; the dialog says both. A user who started the app
from a launcher has no console to read a traceback from."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QApplication


def log_path() -> Path:
    folder = QStandardPaths.writableLocation(QStandardPaths.AppLocalDataLocation) or str(Path.home())
    return Path(folder) / "logs" / "lora-studio.log"


def keep_details(title: str, message: str, detail: str) -> str:
    """Write the details (traceback) to the log and the clipboard; returns the sentence that says where."""
    import lora_studio

    text = (f"LoRA Studio {lora_studio.__version__} · Python {sys.version.split()[0]} · "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n{title}: {message}\n{detail or '(no traceback)'}\n")
    print(text, file=sys.stderr)
    said = []
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")
        said.append(f"The details are saved in {path}")
    except OSError:
        pass
    app = QApplication.instance()
    if app is not None:
        app.clipboard().setText(text)
        said.append("copied to the clipboard" if said else "The details are copied to the clipboard")
    return (" and ".join(said) + ".") if said else "The details are printed on the console."
