"""Runs: reopen a run folder (settings, curves), save/load the configuration, try the adapter,
merge & export with the verification figure, and a bad model folder."""

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from lora_studio.config import RunConfig
from lora_studio.engine.train import read_metrics


def test_open_run_shows_its_curves_and_settings(window, qtbot, finished_run, monkeypatch):
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(finished_run)))
    with qtbot.waitSignal(window.run_opened, timeout=30_000):
        qtbot.mouseClick(window.header.open_run, Qt.LeftButton)
    plots = window.training.plots
    metrics = read_metrics(finished_run)
    assert list(plots.raw_curve.xData) == [m["step"] for m in metrics if "loss" in m] == list(range(1, 9))
    assert list(plots.raw_curve.yData) == [m["loss"] for m in metrics if "loss" in m]
    assert list(plots.eval_curve.xData) == [0, 4, 8]
    assert window.session.draft.train.max_steps == 8 and window.session.draft.train.save_every == 4
    assert window.session.draft.out == ""  # Start makes a new run; the opened one is not overwritten
    assert window.run_dir == str(finished_run)
    captions = [b.text() for b in (window.training.banner.first, window.training.banner.second) if not b.isHidden()]
    assert captions == ["Export…"]  # finished: nothing to continue
    assert window.tryit.run.isEnabled()


def test_save_and_load_configuration(window, qtbot, tmp_path, monkeypatch):
    path = tmp_path / "mine.toml"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "")))
    qtbot.mouseClick(window.grid.columns["o"], Qt.LeftButton)
    window.adapter_panel.rank.setValue(4)
    window.files.save_config()
    saved = RunConfig.load(path)
    assert saved.lora.targets == ["q", "v", "o"] and saved.lora.rank == 4
    assert saved.model.path == window.session.draft.model.path

    qtbot.mouseClick(window.grid.presets["All attention"], Qt.LeftButton)
    window.adapter_panel.rank.setValue(16)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    window.files.load_config()
    qtbot.waitUntil(lambda: window.session.draft.lora.rank == 4, timeout=20_000)
    assert window.adapter_panel.rank.value() == 4
    assert {c for c, b in window.grid.cells.items() if b.isChecked()} == {(t, l) for t in "qvo" for l in (0, 1)}


def test_try_it_classifies_with_base_and_adapter(window, qtbot, finished_run):
    with qtbot.waitSignal(window.run_opened, timeout=30_000):
        window.open_run(str(finished_run))
    view = window.tryit
    qtbot.mouseClick(view.run, Qt.LeftButton)
    qtbot.waitUntil(lambda: view.adapted.value.text() not in ("", "–"), timeout=60_000)
    labels = json.loads((finished_run / "labels.json").read_text())
    assert view.adapted.value.text() in labels and view.base.value.text() in labels
    assert "checkpoint step-8" in view.source.text() or "adapter in" in view.source.text()


def test_merge_and_export_shows_the_verification(window, qtbot, finished_run, tmp_path):
    with qtbot.waitSignal(window.run_opened, timeout=30_000):
        window.open_run(str(finished_run))
    qtbot.mouseClick(window.header.export, Qt.LeftButton)
    dialog = window.export_dialog
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    dialog.merged_dir.setText(str(merged))
    qtbot.mouseClick(dialog.adapter_on, Qt.LeftButton)
    dialog.adapter_dir.setText(str(adapter))
    qtbot.mouseClick(dialog.export, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=60_000)
    r = dialog.result["merged"]
    assert r.ok and (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert f"max |Δ logits| = {r.max_abs_diff:.3g}" in dialog.outcome.toPlainText()
    assert dialog.progress.value() == 1000
    written = sorted(p.name for p in adapter.iterdir())  # the model card (README.md, loss.png) may come too
    assert {"adapter_config.json", "adapter_model.safetensors", "labels.json", "lora_studio.json"} <= set(written)
    assert not any(p.endswith((".pt", ".jsonl", ".toml")) for p in written)  # no run files in an export
    dialog.close()


def test_bad_model_folder_gives_a_dialog_and_keeps_the_old_model(window, qtbot, dialogs, tmp_path):
    before = window.session.info
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    edit = window.model_panel.path.lineEdit()
    edit.selectAll()
    qtbot.keyClicks(edit, str(bad))
    qtbot.keyClick(edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: bool(dialogs.shown), timeout=20_000)
    assert dialogs.kinds() == ["warning"]
    assert "config.json" in dialogs.shown[0].text
    assert window.session.info is before and window.session.draft.model.path == before.ref
    assert window.header.start.isEnabled()


def test_opening_with_a_config_file_applies_it(qtbot, tiny_model, tiny_data, tmp_path):
    from gui_helpers import make_draft, shut

    path = tmp_path / "run.toml"
    config = make_draft(tiny_model, tiny_data, tmp_path / "out").build().replace(lora={"targets": ["k"], "rank": 2})
    config.save(path)
    from lora_studio.ui.main_window import MainWindow

    w = MainWindow(config_path=str(path))
    qtbot.addWidget(w)
    w.show()
    try:
        qtbot.waitUntil(lambda: w.session.info is not None and w.session.info.ref == str(tiny_model), timeout=60_000)
        assert w.session.draft.lora.rank == 2 and w.adapter_panel.rank.value() == 2
        assert {c for c, b in w.grid.cells.items() if b.isChecked()} == {("k", 0), ("k", 1)}
        assert w.train_settings.out.text() == str(tmp_path / "out")
    finally:
        shut(w)


def test_dropping_a_data_file_previews_it(window, qtbot, tmp_path):
    from gui_helpers import write_data

    other = write_data(tmp_path / "other.jsonl", n=12)
    window.open_path(str(other))  # what a drop of that file does
    qtbot.waitUntil(lambda: window.session.preview is not None and window.session.preview.path == str(other),
                    timeout=20_000)
    assert window.data_view.model.rowCount() == 12
    assert window.data_panel.path.text() == str(other)


def test_opening_a_folder_that_is_not_a_run_says_so(window, qtbot, dialogs, tmp_path):
    window.open_run(str(tmp_path))
    qtbot.waitUntil(lambda: bool(dialogs.shown), timeout=20_000)
    assert dialogs.kinds() == ["warning"] and "run.toml" in dialogs.shown[0].text
