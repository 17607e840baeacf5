"""The Study tab: a 2-run sweep (ranks 1 and 2, 2 steps each) on the tiny BERT, started and shown
as a user sees it: one live curve per run holding the run's own losses, the runs listed with
Open buttons, loss vs rank and φ from sweep.json."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PySide6.QtCore import Qt

from gui_helpers import make_draft


def type_text(qtbot, edit, text):
    edit.selectAll()
    edit.clear()
    qtbot.keyClicks(edit, text)


@pytest.mark.slow
def test_two_rank_study(qtbot, tiny_model, tiny_data, tmp_path):
    from lora_studio.ui.study import StudyTab

    config = make_draft(tiny_model, tiny_data, tmp_path / "run", max_steps=2, eval_every=2).build()
    w = StudyTab(config)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    assert w.setup.out.text() == str(tmp_path / "run-study")
    type_text(qtbot, w.setup.ranks, "2,1")
    type_text(qtbot, w.setup.targets, "q,v")
    with qtbot.waitSignal(w.finished, timeout=120_000) as got:
        qtbot.mouseClick(w.start_button, Qt.LeftButton)
        assert w.running and not w.start_button.isEnabled() and w.stop_button.isEnabled()
    doc = got.args[0]
    assert isinstance(doc, dict), getattr(doc, "message", doc)
    assert doc["complete"] and doc["ranks"] == [1, 2] and doc["targets_sets"] == [["q", "v"]]
    on_disk = json.loads((tmp_path / "run-study" / "sweep.json").read_text())
    names = [r["name"] for r in on_disk["runs"]]
    assert names == ["q-v_r1_s42", "q-v_r2_s42"]
    assert set(w.loss.curves) == set(names)
    for name in names:  # each curve is its run's metrics.jsonl, step for step
        rows = [json.loads(line) for line in (tmp_path / "run-study" / name / "metrics.jsonl").read_text().splitlines()]
        want = [(m["step"], m["loss"]) for m in rows if m.get("loss") is not None]
        x, y = w.loss.data(name)
        np.testing.assert_allclose(np.column_stack([x, y]), np.array(want, dtype=float), rtol=0, atol=1e-12)
    assert w.runs.rowCount() == 2
    assert [w.runs.item(r, 0).text() for r in range(2)] == names
    assert [w.runs.item(r, 2).text() for r in range(2)] == [f"{r['final_loss']:.4f}" for r in on_disk["runs"]]
    assert w.loss_vs_rank.points["q,v · train"] == ([1, 2], [r["final_loss"] for r in on_disk["runs"]])
    # φ between r=1 and r=2 for each module kind, shown as a 2 x 1 heatmap (the larger rank down the side)
    assert w.phi.choice.count() == sum(len(s["phi"]) for s in on_disk["similarity"]) > 0
    np.testing.assert_allclose(w.phi.heatmap.data, np.array(next(iter(on_disk["similarity"][0]["phi"].values()))).T)
    assert w.phi.heatmap.data.shape == (2, 1)
    with qtbot.waitSignal(w.open_run) as opened:
        qtbot.mouseClick(w.runs.cellWidget(1, 4), Qt.LeftButton)
    assert opened.args == [on_disk["runs"][1]["run_dir"]]
    assert w.start_button.isEnabled() and not w.stop_button.isEnabled()
    # the same study loaded from its folder: the runs, and the curves read from their files
    again = StudyTab()
    qtbot.addWidget(again)
    again.load(str(tmp_path / "run-study"))
    qtbot.waitUntil(lambda: set(again.loss.curves) == set(names), timeout=10_000)
    for name in names:
        np.testing.assert_array_equal(np.column_stack(again.loss.data(name)), np.column_stack(w.loss.data(name)))
    assert again.runs.rowCount() == 2
    assert (again.setup.ranks.text(), again.setup.targets.text()) == ("1,2", "q,v")
    again.shutdown()
    if os.environ.get("LORA_STUDIO_SHOTS"):
        qtbot.wait(300)
        w.grab().save(os.path.join(os.environ["LORA_STUDIO_SHOTS"], "study.png"))


def test_bad_ranks_say_what_to_type(qtbot, tiny_model, tiny_data, tmp_path):
    from lora_studio.ui.study import StudyTab

    w = StudyTab(make_draft(tiny_model, tiny_data, tmp_path / "run").build())
    qtbot.addWidget(w)
    type_text(qtbot, w.setup.ranks, "1,two")
    qtbot.mouseClick(w.start_button, Qt.LeftButton)
    assert not w.running
    assert "positive integers separated by commas" in w.status.text()


def test_stop_keeps_a_resumable_study(qtbot, tiny_model, tiny_data, tmp_path):
    from lora_studio.engine.events import Step
    from lora_studio.engine.runfolder import latest_checkpoint
    from lora_studio.ui.study import StudyTab

    w = StudyTab(make_draft(tiny_model, tiny_data, tmp_path / "run", max_steps=200, eval_every=0).build())
    qtbot.addWidget(w)
    type_text(qtbot, w.setup.ranks, "1")
    with qtbot.waitSignal(w.controller.event, timeout=60_000, check_params_cb=lambda e: isinstance(e, Step)):
        qtbot.mouseClick(w.start_button, Qt.LeftButton)
    with qtbot.waitSignal(w.finished, timeout=60_000) as got:
        qtbot.mouseClick(w.stop_button, Qt.LeftButton)
    doc = got.args[0]
    assert isinstance(doc, dict) and doc["complete"] is False and doc["runs"] == []
    assert "Start resumes" in w.status.text()
    assert latest_checkpoint(tmp_path / "run-study" / "q-v_r1_s42") is not None  # stopped runs save one
    assert w.start_button.isEnabled() and not w.stop_button.isEnabled()
