"""The Runs tab (issue 13 item 6): every run with its state, continue only when resumable,
several runs' curves overlaid, a run written by another process followed live, trash."""

import json
import shutil

import pytest
from PySide6.QtCore import QFile, QSettings, Qt
from PySide6.QtWidgets import QMessageBox

from gui_helpers import make_draft
from lora_studio.engine import runfolder


@pytest.fixture
def runs(tmp_path, finished_run, tiny_model, tiny_data):
    """A runs folder with a finished run and a stopped (resumable) one, trained by the engine."""
    from lora_studio.engine.events import Control
    from lora_studio.engine.train import train

    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(finished_run, root / "done")
    control = Control()
    stopped = root / "stopped"
    config = make_draft(tiny_model, tiny_data, stopped, max_steps=50, eval_every=2, save_every=0).build()

    def on_event(ev):
        if type(ev).__name__ == "Step" and ev.step == 3:
            control.stop()

    train(config, on_event, control)
    return root


def test_runs_panel_lists_overlays_and_follows(qtbot, runs, monkeypatch, dialogs):
    QSettings().setValue("folders/runs_root", str(runs))
    from lora_studio.ui.runs_panel import RunsPanel

    panel = RunsPanel(runs, poll_ms=50)
    qtbot.addWidget(panel)
    panel.show()
    by_name = {r.name: r for r in panel.rows}
    assert by_name["done"].state == "finished" and not by_name["done"].resumable
    assert by_name["stopped"].state == "stopped" and by_name["stopped"].resumable
    assert by_name["done"].step == 8 and by_name["done"].rank == 8 and by_name["done"].targets == "q+v"
    done_evals = [r for r in runfolder.read_metrics(runs / "done") if "eval_loss" in r]
    assert by_name["done"].eval_loss == done_evals[-1]["eval_loss"]
    row = {panel.table.item(r, 0).text(): r for r in range(panel.table.rowCount())}

    panel.select([runs / "done"])
    assert panel.open_button.isEnabled() and not panel.continue_button.isEnabled()  # finished: nothing to continue
    panel.select([runs / "stopped"])
    assert panel.continue_button.isEnabled()
    asked = []
    panel.continue_requested.connect(asked.append)
    qtbot.mouseClick(panel.continue_button, Qt.LeftButton)
    assert asked == [str(runs / "stopped")]

    panel.select([runs / "done", runs / "stopped"])  # two runs: their curves overlaid, named
    items = panel.plot.getPlotItem().listDataItems()
    names = sorted(i.name() for i in items)
    # named by run, rank, targets and what else differs, not a timestamp alone (GUI N18)
    assert names == ["done · r 8 · q,v · 8 steps · eval", "done · r 8 · q,v · 8 steps · train",
                     "stopped · r 8 · q,v · 50 steps · eval", "stopped · r 8 · q,v · 50 steps · train"]
    pens = {i.name().split(" · ")[0]: i.opts["pen"].color().name() for i in items if i.name().endswith("train")}
    assert sorted(pens.values()) == ["#0072b2", "#e69f00"]  # blue and orange: never red beside green
    train_done = next(i for i in items if i.name() == "done · r 8 · q,v · 8 steps · train")
    assert list(train_done.xData) == list(range(1, 9))

    # another process appends to the stopped run: its curve grows without a click
    with open(runs / "stopped" / runfolder.METRICS_FILE, "a") as f:
        f.write(json.dumps({"step": 4, "loss": 0.123}) + "\n")

    def grown():
        it = [i for i in panel.plot.getPlotItem().listDataItems()
              if i.name() == "stopped · r 8 · q,v · 50 steps · train"]
        return bool(it) and list(it[0].yData)[-1] == 0.123

    qtbot.waitUntil(grown, timeout=5_000)
    assert row  # the table was filled

    # a run another process starts: the folder first, run.toml a moment later (GUI N9), listed unasked
    late = runs / "late"
    late.mkdir()
    qtbot.wait(200)
    shutil.copy(runs / "stopped" / runfolder.RUN_FILE, late / runfolder.RUN_FILE)
    qtbot.waitUntil(lambda: "late" in [r.name for r in panel.rows], timeout=5_000)
    shutil.rmtree(late)

    trash = runs.parent / "trash"
    trash.mkdir()
    monkeypatch.setattr(QFile, "moveToTrash", staticmethod(lambda p: shutil.move(p, trash) and True))
    dialogs.answer = QMessageBox.Yes
    panel.select([runs / "done"])
    qtbot.mouseClick(panel.trash_button, Qt.LeftButton)
    assert not (runs / "done").exists() and (trash / "done").is_dir()
    assert [r.name for r in panel.rows] == ["stopped"]


def test_window_has_a_runs_tab_that_opens_a_run(qtbot, window, runs):
    window.runs.set_root(runs)
    window.tabs.setCurrentWidget(window.runs.parentWidget())
    window.runs.select([runs / "done"])
    with qtbot.waitSignal(window.run_opened, timeout=30_000) as opened:
        qtbot.mouseClick(window.runs.open_button, Qt.LeftButton)
    assert opened.args == [str(runs / "done")]


def test_studies_live_in_the_runs_folder_are_listed_and_reopen(qtbot, window, finished_run, tmp_path):
    """GUI N8: a study's default folder is in the runs folder (not relative to the working
    directory), its runs are listed in Runs, and File ▸ Open study folder shows it again."""
    from pathlib import Path

    from lora_studio.ui.runs import runs_root
    from lora_studio.ui.runs_panel import scan

    window._study_config()
    folder = Path(window.study.setup.out.text())
    assert folder.is_absolute() and folder.parent == runs_root()
    root = tmp_path / "runs"
    study = root / "study-1"
    study.mkdir(parents=True)
    shutil.copytree(finished_run, study / "rank-8")
    (study / "sweep.json").write_text(json.dumps({"runs": [], "complete": True}))
    assert [r.name for r in scan(root)] == ["study-1/rank-8"]
    window.open_study(str(study))
    assert window.tabs.currentWidget() is window.study and window.study.setup.out.text() == str(study)


def test_a_failed_run_says_why(qtbot, tmp_path, finished_run):
    """GUI N18: a failed run showed "failed" and no reason."""
    from lora_studio.ui.runs_panel import RunsPanel

    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / "bad")
    runfolder.write_run_state(root / "bad", "failed", 0, 8, "AssertionError: quantized head")
    panel = RunsPanel(root)
    qtbot.addWidget(panel)
    assert panel.table.item(0, 1).text() == "failed · resumable: AssertionError: quantized head"


def test_continue_says_why_a_finished_run_cannot_be_continued(qtbot, tmp_path, finished_run):
    """Walkthrough: Continue was greyed out for a finished run with no reason (only the busy case said)."""
    from lora_studio.ui.runs_panel import RunsPanel

    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / "done")
    panel = RunsPanel(root)
    qtbot.addWidget(panel)
    panel.table.selectRow(0)
    assert not panel.continue_button.isEnabled()
    assert panel.continue_button.toolTip() == "it has finished: nothing is left to train"
    assert panel.open_button.isEnabled() and panel.open_button.toolTip() == ""
