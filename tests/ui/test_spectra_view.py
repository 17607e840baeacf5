"""The Spectra tab shows exactly what engine.spectra computed: live updates keep the user's
selection, runs load in a worker, φ between two adapters, resize writes a folder, errors speak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

import tiny
from lora_studio import LoraSpec, inject, save_adapter
from lora_studio.engine.adapters import read_adapter
from lora_studio.engine.spectra import ModuleSpectrum, analyse, similarity, suggest_rank
from lora_studio.ui.spectra.tree import KEY
from lora_studio.ui.spectra.view import SpectraView

TARGETS = ["q", "k", "v", "o"]


def adapted(seed: int = 2, rank: int = 4, arch: str = "llama", targets=TARGETS):
    model = tiny.build(arch)
    inject(model, LoraSpec(targets=list(targets), rank=rank, alpha=2 * rank))
    return tiny.randomize_adapters(model, seed=seed)


def adapter_dir(path: Path, seed: int = 2, rank: int = 4, arch: str = "llama", targets=TARGETS) -> Path:
    save_adapter(adapted(seed, rank, arch, targets), path)
    return path


def fake(name: str, sigma: list[float], layer: int, rank: int = 4, target=None) -> ModuleSpectrum:
    """A spectrum with chosen numbers (the view must show them, not recompute them)."""
    return ModuleSpectrum(name=name, target=target, layer=layer, rank=rank, singular_values=sigma,
                          effective_rank=float(len([s for s in sigma if s > 0])) - 0.5, rank90=1, rank99=len(sigma),
                          stable_rank=1.25, frobenius=float(np.sqrt(np.sum(np.square(sigma)))), amplification=None)


@pytest.fixture
def view(qtbot):
    v = SpectraView()
    qtbot.addWidget(v)
    v.resize(1300, 800)
    v.show()
    yield v
    v.shutdown()


def curves(v: SpectraView) -> int:
    return len([c for c in v.sigma.curves.values() if c.isVisible()])


def test_empty_state_explains_what_appears(view):
    assert view.stack.currentIndex() == 0
    assert "Spectra appear as training runs, or open a run folder" in view.empty_title.text()
    assert not view.resize_button.isEnabled() and not view.compare_button.isEnabled()


def test_set_spectra_shows_the_engines_numbers(view, qtbot):
    modules = analyse(adapted())
    view.set_spectra(3, modules)
    assert view.stack.currentIndex() == 1
    assert view.step_chip.text() == "live · step 3"
    assert view.table.row_count() == len(modules) == 8  # 2 layers x q k v o
    for m in modules:
        key = (m.name, m.target)
        assert view.table.cell_text(key, "Rank") == "4"
        assert view.table.cell_text(key, "Eff. rank") == f"{m.effective_rank:.2f}"
        assert view.table.cell_text(key, "r90") == str(m.rank90)
        assert view.table.cell_text(key, "Ampl.") == "–"
    # effective rank over layers (rows) x projections (columns), in the paper's order
    assert view.eff.data.shape == (2, 4)
    assert view.eff.col_labels == ["q", "k", "v", "o"] and view.eff.row_labels == ["0", "1"]
    q0 = next(m for m in modules if m.name.endswith("layers.0.self_attn.q_proj"))
    v1 = next(m for m in modules if m.name.endswith("layers.1.self_attn.v_proj"))
    assert view.eff.data[0, 0] == pytest.approx(q0.effective_rank)
    assert view.eff.data[1, 2] == pytest.approx(v1.effective_rank)
    assert view.eff.image.image.shape == (2, 4)
    assert len(view.eff.cells) == 8 and view.eff.cells[0].textItem.toPlainText() == f"{q0.effective_rank:.1f}"
    # the readout names the cell under the mouse (cell centres sit on integer coordinates)
    qtbot.wait(20)
    v0 = next(m for m in modules if m.name.endswith("layers.0.self_attn.v_proj"))
    at = view.eff.getPlotItem().getViewBox().mapViewToScene(QPointF(2.3, 0.2))
    assert view.eff.cell_at(at) == (0, 2)
    view.eff._moved(at)
    assert view.eff_readout.text() == f"layer 0 · v: {v0.effective_rank:.2f} of r = 4"
    # eight modules: all plotted by default, σ and energy curves alike, with the engine's σ
    assert curves(view) == 8 and len(view.cumulative.curves) == 8
    c = view.sigma.curves[(q0.name, None)]
    x, y = c.xData, c.yData  # as given (getData is in log10 on a log axis)
    np.testing.assert_allclose(y, q0.singular_values, rtol=1e-12)
    np.testing.assert_array_equal(x, np.arange(1, 5))
    assert view.suggested.text() == str(suggest_rank(modules, 0.9))
    assert view.suggested_rank() == suggest_rank(modules, 0.9)


def test_energy_threshold_changes_the_suggested_rank(view):
    mods = [fake("model.layers.0.self_attn.q_proj", [1.0, 0.5, 0.1, 0.0], 0),
            fake("model.layers.0.self_attn.v_proj", [1.0, 1.0, 1.0, 1.0], 0)]
    view.set_spectra(1, mods)
    assert view.suggested.text() == "4"  # flat spectrum of v: 90% of its energy needs all 4
    view.set_spectra(2, mods[:1])
    assert view.suggested.text() == "2"  # 1 + 0.25 = 1.25 of 1.26
    view.energy.setValue(0.5)
    assert view.suggested.text() == "1"
    view.energy.setValue(0.999)
    assert view.suggested.text() == str(suggest_rank(mods[:1], 0.999)) == "3"
    assert view.cumulative.suggested.isVisible() and view.cumulative.suggested.value() == 3
    # the energy curve: the engine's σ squared and accumulated, from k = 0
    y = view.cumulative.curves[(mods[0].name, None)].yData
    np.testing.assert_allclose(y, [0, 1 / 1.26, 1.25 / 1.26, 1, 1])
    # zeros have no logarithm: σ plot leaves them out
    x = view.sigma.curves[(mods[0].name, None)].xData
    np.testing.assert_array_equal(x, [1, 2, 3])


def test_live_update_keeps_the_selection_and_updates_in_place(view, qtbot):
    modules = analyse(adapted())
    view.set_spectra(10, modules)
    keys = list(view.modules)
    view.set_selected([keys[5], keys[2]])
    assert curves(view) == 2 and view.selected() == [keys[5], keys[2]]
    view.table.sortByColumn(2, Qt.DescendingOrder)  # the user sorts by effective rank
    item = view.sigma.curves[keys[2]]
    later = analyse(adapted(seed=9))
    view.set_spectra(20, later)
    assert view.step_chip.text() == "live · step 20"
    assert view.selected() == [keys[5], keys[2]] and curves(view) == 2
    assert view.sigma.curves[keys[2]] is item  # updated, not recreated
    new = {(m.name, m.target): m for m in later}
    np.testing.assert_allclose(item.yData, new[keys[2]].singular_values, rtol=1e-12)
    assert sorted(view.tree.checked()) == sorted([keys[5], keys[2]])
    shown = [view.table.key_at(r) for r in range(view.table.row_count())]
    ranks = [new[k].effective_rank for k in shown]
    assert ranks == sorted(ranks, reverse=True)  # still sorted the user's way, with the new numbers


def test_ticking_modules_in_the_tree_plots_them(view, qtbot):
    view.set_spectra(1, analyse(adapted()))
    view.set_selected([])
    assert curves(view) == 0
    layer1 = view.tree.topLevelItem(1)
    layer1.setCheckState(0, Qt.Checked)  # a layer ticks its four projections
    qtbot.waitUntil(lambda: curves(view) == 4)
    assert all(view.names[k][0] == 1 for k in view.selected())
    layer1.child(0).setCheckState(0, Qt.Unchecked)
    qtbot.waitUntil(lambda: curves(view) == 3)
    # a click on a heatmap cell plots that module (row: layer 0, column: v)
    view._eff_clicked(0, 2)
    assert curves(view) == 4 and view.names[view.selected()[-1]] == (0, "v")


def test_load_run_analyses_in_a_worker(view, qtbot, tmp_path):
    run = adapter_dir(tmp_path / "run")
    adapter_dir(run / "checkpoints" / "step-5", seed=3)
    adapter_dir(run / "checkpoints" / "step-10", seed=4)
    import os
    import time

    later = time.time() + 60  # the run's final adapter is written after its checkpoints: the newest
    for f in run.iterdir():
        if f.is_file():
            os.utime(f, (later, later))
    with qtbot.waitSignal(view.loaded, timeout=30_000) as sig:
        view.load_run(str(run))
    assert sig.args == [str(run)]
    expected = analyse(read_adapter(run))
    assert view.table.row_count() == len(expected)
    for m in expected:
        assert view.table.cell_text((m.name, m.target), "‖ΔW‖_F") == f"{m.frobenius:.4f}"
    assert view.step_chip.text() == "adapter" and view.title.text() == "run"
    # its checkpoints are offered for comparison, by step
    offered = [view.compare_combo.itemText(i) for i in range(1, view.compare_combo.count())]
    assert offered == ["checkpoint step 5", "checkpoint step 10"]
    assert view.resize_button.isEnabled() and view.compare_button.isEnabled()


def test_fused_module_shows_one_row_per_slice(view, qtbot, tmp_path):
    run = adapter_dir(tmp_path / "gpt2", arch="gpt2", targets=["q", "v"])
    with qtbot.waitSignal(view.loaded, timeout=30_000):
        view.load_run(str(run))
    assert view.table.row_count() == 4  # 2 layers x (q, v) slices of c_attn
    assert view.eff.col_labels == ["q", "v"] and view.eff.data.shape == (2, 2)


def test_compare_two_adapters_draws_phi(view, qtbot, tmp_path):
    a = adapter_dir(tmp_path / "a", rank=4)
    b = adapter_dir(tmp_path / "b", seed=7, rank=8)
    with qtbot.waitSignal(view.loaded, timeout=30_000):
        view.load_run(str(a))
    with qtbot.waitSignal(view.compared, timeout=30_000) as sig:
        view.compare_with(str(b))
    assert sig.args == [str(b)]
    phi = similarity(read_adapter(a), read_adapter(b))
    assert view.phi_module.count() == len(phi) == 8
    key = view.phi_module.currentData()
    assert view.phi.data.shape == (4, 8)  # i <= r1 on rows, j <= r2 on columns
    np.testing.assert_allclose(view.phi.data, phi[key].numpy(), rtol=1e-6)
    assert view.phi.image.image.shape == (4, 8)
    assert 0 <= view.phi.data.min() and view.phi.data.max() <= 1 + 1e-6
    # φ follows the module the user picks in the tree
    child = view.tree.topLevelItem(1).child(2)
    other = child.data(0, KEY)
    assert view.names[other] == (1, "v")
    view.tree.setCurrentItem(child)
    assert view.phi_module.currentData() == other
    np.testing.assert_allclose(view.phi.data, phi[other].numpy(), rtol=1e-6)


def test_compare_with_a_checkpoint_from_the_combo(view, qtbot, tmp_path, monkeypatch):
    run = adapter_dir(tmp_path / "run")
    adapter_dir(run / "checkpoints" / "step-5", seed=3)
    with qtbot.waitSignal(view.loaded, timeout=30_000):
        view.load_run(str(run))
    with qtbot.waitSignal(view.compared, timeout=30_000) as sig:
        view.compare_combo.setCurrentIndex(1)
        view.compare_combo.activated.emit(1)
    assert Path(sig.args[0]) == run / "checkpoints" / "step-5"
    assert "step 5" in view.phi_readout.text()
    # the Compare with… button asks for a folder
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(run)))
    with qtbot.waitSignal(view.compared, timeout=30_000):
        view.compare_button.click()
    np.testing.assert_allclose(np.diag(view.phi.data), 1.0, rtol=1e-5)  # an adapter against itself


def test_resize_writes_an_adapter_and_reports(view, qtbot, tmp_path, monkeypatch):
    run = adapter_dir(tmp_path / "run", rank=8)
    with qtbot.waitSignal(view.loaded, timeout=30_000):
        view.load_run(str(run))
    out = tmp_path / "small"
    out.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(out)))
    view.energy.setValue(0.8)
    with qtbot.waitSignal(view.resized, timeout=30_000) as sig:
        view.resize_button.click()
    report = sig.args[0]
    resized = read_adapter(out)
    assert set(resized.modules) == set(read_adapter(run).modules)
    assert report["energy"] == 0.8 and len(report["modules"]) == 8
    dialog = view.resize_dialog
    assert dialog.isVisible() and dialog.table.rowCount() == 8
    first = report["modules"][0]
    assert dialog.table.item(0, 1).text() == f"{first['rank_before']} → {first['rank']}"
    assert dialog.table.item(0, 2).text() == f"{first['retained_frobenius']:.2%}"
    assert all(r["retained_energy"] >= 0.8 - 1e-9 for r in report["modules"])
    # "Show its spectra" opens the resized adapter
    dialog.close()
    with qtbot.waitSignal(view.loaded, timeout=30_000):
        dialog.open_requested.emit(str(out))
    assert max(int(view.table.cell_text(k, "Rank")) for k in view.modules) < 8


def test_not_an_adapter_folder_is_an_error_dialog(view, qtbot, tmp_path, dialogs):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    with qtbot.waitSignal(view.failed, timeout=30_000) as sig:
        view.load_run(str(folder))
    assert sig.args[0].kind == "user"
    assert dialogs.kinds() == ["warning"]
    assert "photos" in dialogs.shown[0].text
    assert view.stack.currentIndex() == 0  # still the empty state, and still alive
    view.set_spectra(1, analyse(adapted()))
    assert view.table.row_count() == 8


def test_resize_never_overwrites_the_source(view, qtbot, tmp_path, dialogs):
    run = adapter_dir(tmp_path / "run")
    adapter_dir(run / "checkpoints" / "step-5", seed=3)
    with qtbot.waitSignal(view.loaded, timeout=30_000):
        view.load_run(str(run / "checkpoints" / "step-5"))
    before = (run / "adapter_model.safetensors").read_bytes()
    for own in (run, run / "checkpoints" / "step-5"):  # the checkpoint shown, or its run folder
        with qtbot.waitSignal(view.failed, timeout=30_000):
            view.resize_adapter(str(own))
    assert dialogs.kinds() == ["warning", "warning"] and "own folder" in dialogs.shown[0].text
    assert (run / "adapter_model.safetensors").read_bytes() == before
    assert view.resize_button.isEnabled()
    # another adapter folder: asked first, kept when the user says no
    other = adapter_dir(tmp_path / "other", seed=5)
    dialogs.answer = QMessageBox.No
    view.resize_adapter(str(other))
    assert dialogs.kinds()[-1] == "question" and not view.tasks.busy


def test_theme_follows_the_app(view):
    from lora_studio.ui import style

    view.set_spectra(1, analyse(adapted()))
    view.apply_theme("dark")
    assert view.sigma.backgroundBrush().color().name() == style.DARK["surface"]
    view.apply_theme("light")
    assert view.sigma.backgroundBrush().color().name() == style.LIGHT["surface"]


def test_amplification_loads_the_base_model(view, qtbot, tmp_path):
    import transformers as T

    base = tiny.model_folder(tmp_path / "base", "llama")
    model = T.AutoModelForCausalLM.from_pretrained(base)
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    tiny.randomize_adapters(model)
    run = save_adapter(model, tmp_path / "run", base_model_name_or_path=str(base))
    with qtbot.waitSignal(view.loaded, timeout=30_000):
        view.load_run(str(run))
    assert {view.table.cell_text(k, "Ampl.") for k in view.modules} == {"–"}
    with qtbot.waitSignal(view.loaded, timeout=60_000):
        view.amp_link.click()
    base_model = T.AutoModelForCausalLM.from_pretrained(base)
    for m in analyse(read_adapter(run), base_weights=base_model):
        assert m.amplification is not None
        assert view.table.cell_text((m.name, m.target), "Ampl.") == f"{m.amplification:.2f}"


def test_training_feeds_the_tab_live(qtbot, tiny_model, tiny_data, tmp_path):
    from gui_helpers import make_draft, open_window, shut

    out = tmp_path / "run"
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, out, max_steps=4, eval_every=0), spectra_every=2)
    try:
        steps = []
        w.controller.spectra.connect(lambda ev: steps.append(ev.step))
        with qtbot.waitSignal(w.controller.finished, timeout=60_000):
            qtbot.mouseClick(w.header.start, Qt.LeftButton)
        w.tabs.setCurrentWidget(w.spectra_tab)  # the window draws spectra when their tab is shown
        qtbot.waitUntil(lambda: w.spectra_tab.view and w.spectra_tab.view.step == 4, timeout=10_000)
        view = w.spectra_tab.view
        # shown after the run finished: the final state, no longer marked live
        assert steps[:2] == [2, 4] and view.step_chip.text() == "step 4"
        assert view.step_chip.property("state") == ""
        view.set_spectra(5, list(view.modules.values()))  # while a run trains: live
        assert view.step_chip.text() == "live · step 5" and view.step_chip.property("state") == "running"
        assert view.table.row_count() == len(view.modules) > 0
        final = analyse(read_adapter(out))  # the tab showed the spectra of what was saved
        for m in final:
            assert view.table.cell_text((m.name, m.target), "Eff. rank") == f"{m.effective_rank:.2f}"
    finally:
        shut(w)
