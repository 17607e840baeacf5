"""Ticking the real grid widgets changes the numbers shown to exactly engine.budget's."""

import re

from PySide6.QtCore import Qt

from lora_studio.engine.budget import estimate, human_bytes
from lora_studio.engine.lora import LoraSpec
from lora_studio.engine.models import skeleton
from lora_studio.engine.targets import resolve


def expected(window, targets, layers=None, rank=8, alpha=16.0):
    """The budget computed here, independently of the window's session."""
    d = window.session.draft
    spec = LoraSpec(targets=targets, rank=rank, alpha=alpha, layers=layers, modules_to_save=["classifier", "score"])
    model = skeleton(d.model.path, "classification", 2)
    return estimate(model, spec, "fp32", d.train.batch_size, d.data.max_length, False)


def shown(window) -> dict:
    cards = window.cards
    return {"trainable": int(cards.trainable.value.text().replace(",", "")),
            "total": int(re.search(r"of ([\d,]+)", cards.trainable.sub.text()).group(1).replace(",", "")),
            "percent": cards.share.value.text(),
            "file": cards.file.value.text()}


def assert_shows(window, b):
    s = shown(window)
    assert s["trainable"] == b.trainable_params
    assert s["total"] == b.total_params
    assert s["percent"] == f"{b.trainable_percent:.3g} %"
    assert s["file"] == human_bytes(b.adapter_file_bytes)
    per_target = {t: n for t, n in window.session.budget.by_target.items()}
    assert sum(per_target.values()) == b.adapter_params


def test_grid_columns_are_the_models_projections(window):
    assert list(window.grid.columns) == ["q", "k", "v", "o", "up", "down"]  # BERT has no gate
    assert sorted(window.grid.rows) == [0, 1]
    assert {c for c, box in window.grid.cells.items() if box.isChecked()} == {("q", 0), ("q", 1), ("v", 0), ("v", 1)}


def test_ticks_update_the_budget_exactly(window, qtbot):
    grid = window.grid
    b = expected(window, ["q", "v"])
    assert_shows(window, b)
    assert b.trainable_params == 2 * 2 * 8 * (32 + 32) + (32 * 2 + 2)  # 2 layers x (q, v) x r(in+out) + head

    qtbot.mouseClick(grid.columns["k"], Qt.LeftButton)  # a whole column
    assert window.session.draft.lora.targets == ["q", "k", "v"]
    assert_shows(window, expected(window, ["q", "k", "v"]))

    qtbot.mouseClick(grid.rows[1], Qt.LeftButton)  # a whole row: layer 1 gets every projection
    cells = {c for c, box in grid.cells.items() if box.isChecked()}
    assert {("o", 1), ("up", 1), ("down", 1)} <= cells and ("o", 0) not in cells
    skel = skeleton(window.session.draft.model.path, "classification", 2)
    names = [s.name for t in ("q", "k", "v") for s in resolve(skel, [t])] + \
            [s.name for t in ("o", "up", "down") for s in resolve(skel, [t], [1])]
    assert_shows(window, expected(window, [re.escape(n) for n in names]))

    qtbot.mouseClick(grid.cell("up", 1), Qt.LeftButton)  # a single cell
    assert not grid.cell("up", 1).isChecked()
    names.remove("bert.encoder.layer.1.intermediate.dense")
    assert_shows(window, expected(window, [re.escape(n) for n in names]))

    qtbot.mouseClick(grid.presets["All attention"], Qt.LeftButton)
    assert window.session.draft.lora.targets == ["q", "k", "v", "o"]
    assert_shows(window, expected(window, ["q", "k", "v", "o"]))

    qtbot.mouseClick(grid.presets["Paper default (q+v)"], Qt.LeftButton)
    qtbot.mouseClick(grid.rows[0], Qt.LeftButton)  # a partly ticked row gets ticked in full …
    assert all(grid.cell(t, 0).isChecked() for t in grid.columns)
    qtbot.mouseClick(grid.rows[0], Qt.LeftButton)  # … and a full one unticked: q, v in layer 1 only
    assert window.session.draft.lora.layers == "1"
    assert_shows(window, expected(window, ["q", "v"], layers=[1]))


def test_rank_and_alpha_update_budget_and_scaling(window, qtbot):
    rank = window.adapter_panel.rank
    rank.setFocus()
    qtbot.keyClick(rank, Qt.Key_Up)  # 8 -> 9
    assert window.session.draft.lora.rank == 9
    assert_shows(window, expected(window, ["q", "v"], rank=9))
    assert window.adapter_panel.scaling.text().endswith(f"= {16 / 9:.3g}")
    qtbot.mouseClick(window.adapter_panel.twice, Qt.LeftButton)
    assert window.session.draft.lora.alpha == 18.0
    qtbot.mouseClick(window.adapter_panel.rslora, Qt.LeftButton)
    assert window.session.draft.lora.rslora
    assert window.adapter_panel.scaling.text().endswith(f"= {18 / 9 ** 0.5:.3g}")


def test_clearing_every_tick_says_what_to_do(window, qtbot):
    qtbot.mouseClick(window.grid.clear, Qt.LeftButton)
    assert window.cards.trainable.value.text() == "–"
    assert "tick at least one" in window.cards.trainable.sub.text()
