"""GUI tests: a tiny BERT (hidden 32, 2 layers, the MiniLM tokenizer) and tiny jsonl data, the
settings in a temp folder, and every QMessageBox answered and recorded instead of shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtWidgets import QMessageBox

import tiny
from gui_helpers import make_draft, open_window, shut, write_data


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny.model_folder(tmp_path_factory.mktemp("models") / "tiny-bert", "bert")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data") / "reviews.jsonl")


@pytest.fixture(autouse=True)
def isolated_settings(qapp, tmp_path_factory):
    QSettings.setDefaultFormat(QSettings.IniFormat)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(tmp_path_factory.mktemp("settings")))
    QCoreApplication.setOrganizationName("LoRA Studio Tests")
    QCoreApplication.setApplicationName("LoRA Studio Tests")
    # the runs folder too: a developer's own ~/Documents/LoRA Studio/runs showed up in tests as
    # "the last run … was stopped" banners
    QSettings().setValue("folders/runs_root", str(tmp_path_factory.mktemp("runs-root")))
    from lora_studio.ui import app

    app.create_app()  # style and palette, as the real app
    yield


@dataclass
class Shown:
    kind: str
    title: str
    text: str


class Dialogs:
    """Stands in for QMessageBox's static functions: records each dialog, answers `answer`."""

    def __init__(self):
        self.shown: list[Shown] = []
        self.answer = QMessageBox.Yes

    def kinds(self) -> list[str]:
        return [s.kind for s in self.shown]


@pytest.fixture(autouse=True)
def dialogs(monkeypatch) -> Dialogs:
    d = Dialogs()
    for kind in ("warning", "critical", "information", "question"):
        def fake(parent, title, text, *args, _kind=kind, **kwargs):
            d.shown.append(Shown(_kind, title, text))
            return d.answer if _kind == "question" else QMessageBox.Ok

        monkeypatch.setattr(QMessageBox, kind, staticmethod(fake))
    return d


@pytest.fixture
def window(qtbot, tiny_model, tiny_data, tmp_path):
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, tmp_path / "run"))
    yield w
    shut(w)


@pytest.fixture(scope="session")
def finished_run(tiny_model, tiny_data, tmp_path_factory) -> Path:
    """A run folder trained to its end by the engine itself (no GUI): 8 steps, eval every 4."""
    from lora_studio.engine.train import Finished, train

    out = tmp_path_factory.mktemp("runs") / "done"
    config = make_draft(tiny_model, tiny_data, out, max_steps=8, eval_every=4, save_every=4).build()
    assert isinstance(train(config), Finished)
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than 10 s (deselect with -m 'not slow')")
