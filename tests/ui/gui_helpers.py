"""Helpers of the GUI tests: tiny data, a draft configuration, opening and shutting a window."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PySide6.QtCore import QCoreApplication

from lora_studio.config import DataConfig, ModelConfig, TrainConfig

WORDS = {"pos": "great lovely excellent good happy fine superb", "neg": "awful bad terrible poor sad broken worse"}


def write_data(path: Path, n: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.sample(WORDS[label].split(), 3) + ["the", "service", "was"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_draft(model: Path, data: Path, out: Path, **train):
    from lora_studio.ui.session import Draft

    settings = dict(max_steps=6, batch_size=4, eval_every=3, save_every=0, lr=2e-3, warmup_ratio=0.0)
    settings.update(train)
    return Draft(model=ModelConfig(path=str(model), task="classification"),
                 data=DataConfig(path=str(data), max_length=32, validation_split=0.25),
                 train=TrainConfig(**settings), out=str(out))


def open_window(qtbot, draft, spectra_every: int = 0, ready=lambda s: s.info is not None and s.stats is not None):
    """A shown MainWindow on `draft`, once its model is inspected and its data tokenized."""
    from lora_studio.ui.main_window import MainWindow

    w = MainWindow(draft, spectra_every=spectra_every)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: ready(w.session), timeout=60_000)
    return w


def shut(w):
    if w.controller.running:
        w.controller.stop()
        w.controller.wait()
    QCoreApplication.processEvents()
    w.quiesce()
    from lora_studio.ui.tasks import TaskRunner

    for runner in w.findChildren(TaskRunner):
        runner.wait_all()


def typed(qtbot, field, text):
    """Type `text` into `field` as a user does: focus it, select what is there, type over it."""
    field.setFocus()
    qtbot.waitUntil(field.hasFocus, timeout=2_000)
    field.selectAll()
    qtbot.keyClicks(field, text)


def captured_start(w, monkeypatch) -> list:
    """The RunConfigs the window would start (its `_begin` replaced by a recorder)."""
    started = []
    monkeypatch.setattr(w, "_begin", lambda config, resume=None, overwrite=False: started.append(config))
    return started


def axis_labels(axis) -> list:
    """(rect in the axis' coordinates, text) of each tick label a pyqtgraph axis paints now."""
    from PySide6.QtGui import QImage, QPainter

    image = QImage(8, 8, QImage.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [(rect, text) for rect, _flags, text in specs[2]] if specs else []
