"""The Spectra tab: the LoRA paper's §7 look inside ΔW = s·B·A, live during training and for runs.

Singular values per module (log scale), cumulative energy with the 90% / 99% lines, effective
rank over layers × projections, the subspace similarity φ (Eq. 4) against a checkpoint or another
adapter, a summary table, and a suggested rank with one-click resize. The engine computes
(`engine/spectra.py`, called in worker threads through `jobs.py`); this view only displays.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
from PySide6.QtCore import QCoreApplication, QEvent, QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QMessageBox, QStackedWidget, QVBoxLayout, QWidget

from lora_studio.ui import style
from lora_studio.ui.spectra import jobs, panels
from lora_studio.ui.spectra.plots import series_color
from lora_studio.ui.spectra.report import ResizeReport
from lora_studio.engine.errors import Failure
from lora_studio.ui.failure_dialog import show_failure
from lora_studio.ui.tasks import TaskRunner
from lora_studio.ui.widgets import icon
from lora_studio.ui.bind import quiet

def _engine():
    """engine.spectra, or None while it is unavailable (the tab still opens)."""
    try:
        return importlib.import_module("lora_studio.engine.spectra")
    except ImportError:
        return None


def _cumulative_energy(sigma) -> np.ndarray:
    from lora_studio.engine.spectra import cumulative_energy  # lazy: torch loads after the window shows

    return np.asarray(cumulative_energy(sigma), dtype=float)


def _find(combo: QComboBox, value) -> int:
    """Index of the item whose data equals `value` (findData cannot compare Python tuples)."""
    return next((i for i in range(combo.count()) if combo.itemData(i) == value), -1)


class SpectraView(QWidget):
    """Signals:
        loaded(str): the adapter folder whose spectra are shown, after `load_run` (and again after
            `compute_amplification`)
        compared(str): the other adapter folder, once its φ heatmap is shown
        resized(object): the engine's resize report (dict), once the resized adapter is written
        failed(object): a tasks.Failure, after its message box was shown
    """

    loaded = Signal(str)
    compared = Signal(str)
    resized = Signal(object)
    failed = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tasks = TaskRunner(self)
        self.theme = style.current()
        self.modules: dict[tuple, object] = {}  # (name, target) -> ModuleSpectrum, in module order
        self.names: dict[tuple, tuple[int | None, str]] = {}  # key -> (layer, projection)
        self.step: int | None = None
        self.adapter: str | None = None  # folder the resize / compare act on
        self.similarity: jobs.Similarity | None = None
        self.resize_dialog: ResizeReport | None = None
        self._checked: list[tuple] = []
        self._colors: dict[tuple, int] = {}
        self._grid: list[list[tuple | None]] = []
        self._load_token = 0
        self._redraw = QTimer(self, singleShot=True, interval=0)
        self._redraw.timeout.connect(self._draw_selection)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(10)
        lay.addWidget(panels.build_header(self))
        self.stack = QStackedWidget()
        self.stack.addWidget(panels.build_empty_page(self))
        self.stack.addWidget(panels.build_content(self))
        lay.addWidget(self.stack, 1)
        self.apply_theme(self.theme)
        self.clear()
        app = QCoreApplication.instance()
        if app is not None:  # no worker thread may outlive the app
            app.aboutToQuit.connect(self.shutdown)

    # -- public API ----------------------------------------------------------------------
    def set_spectra(self, step: int | None, modules: list, live: bool = True) -> None:
        """Show `modules` (engine.spectra.ModuleSpectrum) of the adapter being trained, at `step`
        (`live`: the run is still going). Called from the GUI thread; keeps the user's
        selection, sort order and compare choice."""
        self._load_token += 1  # a live update wins over a load still running
        self._show(modules, step, live=live)

    def training_ended(self) -> None:
        """The run stopped or finished: what is shown is its final state, no longer live."""
        if self.modules and self.step is not None:
            self.step_chip.setText(f"step {self.step}")
            self.step_chip.setProperty("state", "")
            style.repolish(self.step_chip)

    def load_run(self, run_dir: str) -> None:
        """Analyse the newest adapter of a run folder (or any PEFT LoRA folder) in a worker; emits
        `loaded` when shown, or `failed` after a message box."""
        self._load_token += 1
        token = self._load_token
        self.status.setText(f"Analysing {Path(run_dir).name}…")
        self.tasks.start(jobs.open_adapter, str(run_dir),
                         on_done=lambda res: self._loaded(res, token),
                         on_failed=lambda f: self._failed("Cannot show these spectra", f, token))

    def set_run_dir(self, run_dir: str | None) -> None:
        """The run being trained: what Compare and Resize act on while `set_spectra` feeds the plots."""
        self.adapter = str(run_dir) if run_dir else None
        self._fill_compare(jobs.checkpoints(run_dir) if run_dir else [])
        self._update_actions()

    def compare_with(self, folder: str | None = None) -> None:
        """φ between the shown adapter and `folder` (asks for one when None), in a worker."""
        if not self.adapter:
            return
        if folder is None:
            start = str(jobs.run_of(Path(self.adapter)).parent)
            folder = QFileDialog.getExistingDirectory(self, "Compare with which run or adapter folder?", start)
            if not folder:
                return
            self._add_compare_item(jobs.title_of(Path(folder)), folder)
        self.phi_readout.setText("computing φ…")
        self.tasks.start(jobs.compare, self.adapter, str(folder), on_done=self._compared,
                         on_failed=lambda f: self._failed("Cannot compare these adapters", f))

    def resize_adapter(self, out_dir: str | None = None) -> None:
        """Truncate the shown adapter to the energy threshold by SVD into `out_dir` (asks when None)."""
        if not self.adapter:
            return
        energy = round(self.energy.value(), 4)
        if out_dir is None:
            st = QSettings()
            start = st.value("folders/resize", str(jobs.run_of(Path(self.adapter)).parent))
            out_dir = QFileDialog.getExistingDirectory(self, f"Write the adapter resized to {energy:.0%} energy into…",
                                                       start)
            if not out_dir:
                return
            st.setValue("folders/resize", str(Path(out_dir).parent))
        own = {Path(self.adapter).resolve(), jobs.run_of(Path(self.adapter)).resolve()}
        if Path(out_dir).resolve() in own:
            self._failed("Choose another folder", Failure(f"{out_dir} is the adapter's own folder (or its run's): "
                                                          "choose a new, empty folder for the resized adapter"))
            return
        if (Path(out_dir) / "adapter_config.json").is_file():
            answer = QMessageBox.question(self, "Replace this adapter?",
                                          f"{out_dir} already holds an adapter. Replace it with the resized one?")
            if answer != QMessageBox.Yes:
                return
        self.status.setText(f"Resizing to {energy:.0%} energy…")
        self.resize_button.setEnabled(False)
        self.tasks.start(jobs.resize_adapter, self.adapter, str(out_dir), energy, on_done=self._resized,
                         on_failed=lambda f: self._failed("Cannot resize this adapter", f))

    def compute_amplification(self) -> None:
        """Reload the spectra with the amplification factor (loads the base model in a worker)."""
        if not self.adapter:
            return
        token = self._load_token = self._load_token + 1
        self.status.setText("Loading the base model for the amplification factor…")
        self.tasks.start(jobs.with_amplification, self.adapter,
                         on_done=lambda mods: self._amplified(mods, token),
                         on_failed=lambda f: self._failed("Cannot compute the amplification factor", f, token))

    def open_dialog(self) -> None:
        st = QSettings()
        folder = QFileDialog.getExistingDirectory(self, "Show the spectra of which run or adapter folder?",
                                                  st.value("folders/spectra", st.value("folders/runs", "")))
        if folder:
            st.setValue("folders/spectra", str(Path(folder).parent))
            self.load_run(folder)

    def clear(self) -> None:
        """Back to the empty state."""
        self._load_token += 1
        self.modules, self.names, self.step, self.adapter, self.similarity = {}, {}, None, None, None
        self.tree.clear()
        self.table.set_rows([])
        self._fill_compare([])
        self.phi_module.clear()
        self.phi.show_message("Pick a checkpoint or adapter to compare with")
        self.step_chip.hide()
        self.title.setText("Rank spectra")
        self.status.setText("")
        self.suggested.setText("–")
        self.stack.setCurrentIndex(0)
        self._update_actions()

    def selected(self) -> list[tuple]:
        """The (name, target) keys plotted, in the order they were ticked."""
        return list(self._checked)

    def set_selected(self, keys) -> None:
        keys = [k for k in keys if k in self.modules]
        self._checked = keys
        self._sync_tree_checks()
        self._draw_selection()

    def suggested_rank(self) -> int | None:
        eng = _engine()
        if eng is None or not self.modules:
            return None
        return eng.suggest_rank(list(self.modules.values()), self.energy.value())

    def apply_theme(self, theme: str) -> None:
        self.theme = theme
        for w in (self.sigma, self.cumulative, self.eff, self.phi):
            w.apply_theme(theme)
        self.open_button.setIcon(icon("folder", style.colors(theme)["muted"]))
        if self.modules:
            self._refresh_swatches()
            self._draw_selection()
            self._draw_heatmap()
            self._draw_phi()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        panels.arrange(self, event.size().width() >= panels.WIDE)  # reflow rather than scroll sideways

    def shutdown(self, ms: int = 30_000) -> None:
        """Wait for running jobs (closing the window); their results are dropped."""
        self._load_token += 1
        self.tasks.wait_all(ms)

    # -- showing -------------------------------------------------------------------------
    def _show(self, modules: list, step: int | None, live: bool, title: str | None = None):
        names = {(m.name, m.target): (m.layer, jobs.projection(m.name, m.target)) for m in modules}
        order = {p: i for i, p in enumerate(jobs.projection_order({p for _, p in names.values()}))}
        rank = {m: i for i, m in enumerate(names)}  # the engine's order, within a layer and projection
        keys = sorted(names, key=lambda k: (names[k][0] is None, names[k][0] or 0, order[names[k][1]], rank[k]))
        by_key = {(m.name, m.target): m for m in modules}
        fresh = {k: by_key[k] for k in keys}
        changed = list(fresh) != list(self.modules)
        self.modules, self.step, self.names = fresh, step, {k: names[k] for k in keys}
        if not modules:
            self.stack.setCurrentIndex(0)
            return
        self.stack.setCurrentIndex(1)
        self.step_chip.setText("live · step %d" % step if live and step is not None else
                               f"step {step}" if step is not None else "adapter")
        self.step_chip.setProperty("state", "running" if live else "")
        style.repolish(self.step_chip)
        self.step_chip.show()
        if title:
            self.title.setText(title)
        elif live:  # the run by its folder; the chip says "live · step N" (it said "step 60 · Training")
            self.title.setText(Path(self.adapter).name if self.adapter else "This run")
            self.title.setToolTip(self.adapter or "")
        n_layers = len({layer for layer, _ in self.names.values()})
        self.status.setText(f"{len(modules)} matrices · {n_layers} layer{'s' * (n_layers != 1)} · "
                            f"rank {max(m.rank for m in modules)}")
        if changed:
            self._checked = [k for k in self._checked if k in fresh] or self._default_selection()
            self._build_tree()
        else:
            self._update_tree_values()
        self.table.set_rows([(k, self._label(k, long=True), m) for k, m in fresh.items()])
        self._energy_changed()
        self._draw_heatmap()
        self._update_actions()

    def _label(self, key, long: bool = False) -> str:
        layer, proj = self.names[key]
        if long:
            return key[0] + (f" [{key[1]}]" if key[1] else "")
        return f"L{layer} {proj}" if layer is not None else proj

    def _default_selection(self) -> list[tuple]:
        keys = list(self.modules)
        if len(keys) <= 8:
            return keys
        layers = sorted({l for l, _ in self.names.values() if l is not None})
        ends = {layers[0], layers[-1]} if layers else set()
        return [k for k in keys if self.names[k][0] in ends][:8] or keys[:4]

    def _prune_colors(self):
        for key in [k for k in self._colors if k not in self._checked]:
            del self._colors[key]

    def _color(self, key) -> str:
        if key not in self._colors:
            used = set(self._colors.values())
            self._colors[key] = next(i for i in range(len(used) + 1) if i not in used)
        return series_color(self.theme, self._colors[key])

    def _draw_selection(self):
        self._prune_colors()
        keys = [k for k in self._checked if k in self.modules]
        sv = [(k, self._label(k), self._color(k), self.modules[k].singular_values) for k in keys]
        self.sigma.show_spectra(sv)
        rank = self.suggested_rank()
        self.cumulative.show_energy([(k, t, c, _cumulative_energy(s)) for k, t, c, s in sv], rank,
                                    self.energy.value())
        self._refresh_swatches()

    def _energy_changed(self, *_):
        rank = self.suggested_rank()
        self.suggested.setText("–" if rank is None else str(rank))
        self._draw_selection()

    def _draw_heatmap(self):
        layers = sorted({l for l, _ in self.names.values()}, key=lambda l: (l is None, l or 0))
        projs = jobs.projection_order({p for _, p in self.names.values()})
        grid = np.full((len(layers), len(projs)), np.nan)
        self._grid = [[None] * len(projs) for _ in layers]
        for key, (layer, proj) in self.names.items():
            r, c = layers.index(layer), projs.index(proj)
            grid[r, c] = self.modules[key].effective_rank
            self._grid[r][c] = key
        top = max((m.rank for m in self.modules.values()), default=1)
        self.eff.show_matrix(grid, (0, top), [("–" if l is None else str(l)) for l in layers], projs, "{:.1f}")

    # -- the tree ------------------------------------------------------------------------
    def _build_tree(self):
        self.tree.rebuild(self.names, {k: self._label(k, long=True) for k in self.names})
        self._update_tree_values()
        self._sync_tree_checks()
        while self.proj_links.count():  # one link per projection: tick all its modules at once
            self.proj_links.takeAt(0).widget().deleteLater()
        for proj in jobs.projection_order({p for _, p in self.names.values()}):
            b = panels.link(proj, f"Plot every {proj} module")
            b.clicked.connect(lambda _=False, p=proj: self.set_selected([k for k, n in self.names.items() if n[1] == p]))
            self.proj_links.addWidget(b)

    def _update_tree_values(self):
        self.tree.set_values({k: f"{m.effective_rank:.2f}" for k, m in self.modules.items()})

    def _sync_tree_checks(self):
        self._refresh_swatches()

    def _refresh_swatches(self):
        self._prune_colors()
        self.tree.set_checked({k: self._color(k) for k in self._checked})

    def _tree_toggled(self, key, on: bool):
        if on and key not in self._checked:
            self._checked.append(key)
        elif not on and key in self._checked:
            self._checked.remove(key)
        self._redraw.start()  # a layer's tick changes all its children: draw once

    def _table_activated(self, index):
        key = self.table.key_at(index.row())
        if key is not None:
            self.set_selected(self._checked + [key] if key not in self._checked else
                              [k for k in self._checked if k != key])
            self._focus_phi(key)

    # -- heatmap interaction -------------------------------------------------------------
    def _eff_hovered(self, r, c):
        key = self._grid[r][c] if r >= 0 and r < len(self._grid) else None
        if key is None:
            self.eff_readout.setText("")
            return
        m = self.modules[key]
        layer, proj = self.names[key]
        self.eff_readout.setText(f"layer {layer} · {proj}: {m.effective_rank:.2f} of r = {m.rank}")

    def _eff_clicked(self, r, c):
        key = self._grid[r][c] if 0 <= r < len(self._grid) else None
        if key is not None:
            if key not in self._checked:
                self.set_selected(self._checked + [key])
            self._focus_phi(key)

    def _phi_hovered(self, r, c):
        if r < 0:
            self.phi_readout.setText(self._phi_caption())
            return
        self.phi_readout.setText(f"i = {r + 1}, j = {c + 1}:  φ = {self.phi.value(r, c):.3f}")

    # -- compare -------------------------------------------------------------------------
    def _fill_compare(self, items: list[tuple[str, str]]):
        self.compare_combo.clear()
        self.compare_combo.addItem("choose…", None)
        for text, path in items:
            self.compare_combo.addItem(text, path)

    def _add_compare_item(self, text: str, path: str):
        i = _find(self.compare_combo, path)
        if i < 0:
            self.compare_combo.addItem(text, path)
            i = self.compare_combo.count() - 1
        self.compare_combo.setCurrentIndex(i)

    def _compare_chosen(self, index):
        path = self.compare_combo.itemData(index)
        if path:
            self.compare_with(path)

    def _compared(self, sim: jobs.Similarity):
        self.similarity = sim
        keep = self.phi_module.currentData()
        with quiet(self.phi_module):
            self.phi_module.clear()
            for key in sim.phi:
                text = self._label(key) if key in self.names else key[0].rsplit(".", 1)[-1]
                self.phi_module.addItem(text, key)
                self.phi_module.setItemData(self.phi_module.count() - 1, key[0] + (f" [{key[1]}]" if key[1] else ""),
                                            Qt.ToolTipRole)
            want = keep if keep in sim.phi else (self._checked[0] if self._checked and self._checked[0] in sim.phi
                                                 else None)
            i = _find(self.phi_module, want) if want is not None else 0
            self.phi_module.setCurrentIndex(max(i, 0))
        self._draw_phi()
        self.compared.emit(sim.b)

    def _focus_phi(self, key):
        if key is None or self.similarity is None:
            return
        i = _find(self.phi_module, key)
        if i >= 0:
            self.phi_module.setCurrentIndex(i)

    def _phi_caption(self) -> str:
        if self.similarity is None:
            return ""
        return f"vs {self.similarity.b_title}"

    def _draw_phi(self, *_):
        sim = self.similarity
        key = self.phi_module.currentData()
        if sim is None or key not in sim.phi:
            return
        phi = sim.phi[key]
        self.phi.show_matrix(phi, (0.0, 1.0), fmt="{:.2f}")
        self.phi.getPlotItem().setLabel("left", f"i  (this adapter, r = {phi.shape[0]})")
        self.phi.getPlotItem().setLabel("bottom", f"j  ({sim.b_title}, r = {phi.shape[1]})")
        self.phi.apply_theme(self.theme)
        self.phi_readout.setText(self._phi_caption())

    # -- results and failures ------------------------------------------------------------
    def _loaded(self, res: jobs.Loaded, token: int):
        if token != self._load_token:
            return
        self.adapter = res.adapter
        self._show(res.modules, res.step, live=False, title=res.title)
        self.title.setToolTip(res.adapter)
        self._fill_compare(res.checkpoints)
        self.similarity = None
        self.phi_module.clear()
        self.phi.show_message("Pick a checkpoint or adapter to compare with")
        self.phi_readout.setText("")
        self._update_actions()
        self.loaded.emit(res.adapter)

    def _amplified(self, modules: list, token: int):
        if token == self._load_token:
            self._show(modules, self.step, live=False)
            self.loaded.emit(self.adapter)

    def _resized(self, report: dict):
        self._update_actions()
        self.status.setText(f"Resized adapter written to {report.get('out')}")
        self.resize_dialog = ResizeReport(report, self)
        self.resize_dialog.open_requested.connect(self.load_run)
        self.resize_dialog.open()
        self.resized.emit(report)

    def _failed(self, title: str, failure, token: int | None = None):
        if token is not None and token != self._load_token:
            return
        self._update_actions()
        self.status.setText("")
        show_failure(self, failure, title)
        self.failed.emit(failure)

    def _update_actions(self):
        have = bool(self.adapter) and bool(self.modules)
        why = "" if have else "Open a run folder (or wait for the first checkpoint) to use this"
        for w in (self.resize_button, self.compare_combo, self.compare_button, self.amp_link):
            w.setEnabled(have)
        self.resize_button.setToolTip(why or "Write a copy of the adapter truncated by SVD to the ranks that keep "
                                             "the chosen energy in each module")
        self.compare_button.setToolTip(why or "Choose another run or adapter folder (same base model)")

    def changeEvent(self, ev):
        if ev.type() == QEvent.PaletteChange and hasattr(self, "phi") and style.current() != self.theme:
            self.apply_theme(style.current())
        super().changeEvent(ev)
