"""The Spectra tab's widgets, built once and stored on the view: the header (energy, suggested
rank, resize, open), the empty page, and the content (plots, heatmaps, tree, summary table)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFrame, QHBoxLayout, QPushButton, QSplitter, QToolButton,
                               QVBoxLayout, QWidget)

from lora_studio.ui import style
from lora_studio.ui.spectra.plots import EnergyPlot, Heatmap, SigmaPlot
from lora_studio.ui.spectra.table import SummaryTable
from lora_studio.ui.spectra.tree import ModuleTree
from lora_studio.ui.widgets import ElidedLabel, Section, icon, label

EMPTY = ("Spectra appear as training runs, or open a run folder.",
         "For every adapted matrix ΔW = s·B·A: its singular values, how much of its energy the first k "
         "directions hold, its effective rank across layers and projections, and how the subspaces of "
         "two checkpoints or adapters overlap (the analysis of the LoRA paper, §7).")


def link(text: str, tip: str = "") -> QToolButton:
    b = QToolButton()
    b.setObjectName("Link")
    b.setText(text)
    b.setToolTip(tip)
    b.setCursor(Qt.PointingHandCursor)
    return b


def build_header(view) -> QWidget:
    box = QFrame()
    box.setObjectName("Section")
    rows = QVBoxLayout(box)
    rows.setContentsMargins(14, 8, 10, 8)
    rows.setSpacing(6)
    view.header_rows = (QHBoxLayout(), QHBoxLayout())  # the controls move to the second when narrow
    for row in view.header_rows:
        row.setSpacing(10)
        rows.addLayout(row)
    h = view.header_rows[0]
    view.step_chip = label("", "StateChip")
    view.title = label("Rank spectra", "Value")
    view.status = label("", "Hint")
    view.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
    h.addWidget(view.step_chip)
    h.addWidget(view.title)
    h.addWidget(view.status, 1)
    view.controls = QWidget()
    h.addWidget(view.controls)
    h = QHBoxLayout(view.controls)
    h.setContentsMargins(0, 0, 0, 0)
    h.setSpacing(10)
    h.addWidget(label("Energy kept", "CardTitle"))
    view.energy = QDoubleSpinBox()
    view.energy.setRange(0.50, 1.00)
    view.energy.setSingleStep(0.01)
    view.energy.setDecimals(2)
    view.energy.setValue(0.90)
    view.energy.setMaximumWidth(90)
    view.energy.setToolTip("Fraction of each module's energy Σσ² the suggested rank keeps")
    h.addWidget(view.energy)
    h.addSpacing(4)
    h.addWidget(label("Suggested rank", "CardTitle"))
    view.suggested = label("–", "CardValueSmall")
    view.suggested.setToolTip("The smallest rank that keeps this fraction of the energy in every module")
    view.suggested.setMinimumWidth(28)
    h.addWidget(view.suggested)
    h.addSpacing(6)
    view.resize_button = QPushButton("Resize adapter…")
    view.resize_button.setToolTip("Write a copy of the adapter truncated by SVD to the ranks that keep "
                                  "this energy (per module)")
    view.resize_button.clicked.connect(lambda: view.resize_adapter())
    view.open_button = QPushButton(icon("folder", style.colors(view.theme)["muted"]), "Open…")
    view.open_button.setToolTip("Show the spectra of a run folder or any PEFT LoRA adapter folder")
    view.open_button.clicked.connect(view.open_dialog)
    h.addWidget(view.resize_button)
    h.addWidget(view.open_button)
    view.energy.valueChanged.connect(view._energy_changed)
    return box


def build_empty_page(view) -> QWidget:
    page = QFrame()
    page.setObjectName("Section")
    v = QVBoxLayout(page)
    v.addStretch(2)
    view.empty_title = label(EMPTY[0], "CardValueSmall", wrap=True)
    view.empty_title.setAlignment(Qt.AlignCenter)
    text = label(EMPTY[1], "Hint", wrap=True)
    text.setAlignment(Qt.AlignCenter)
    text.setMaximumWidth(560)
    button = QPushButton("Open a run folder…")
    button.setObjectName("Primary")
    button.clicked.connect(view.open_dialog)
    v.addWidget(view.empty_title)
    row = QHBoxLayout()
    row.addStretch(1)
    row.addWidget(text)
    row.addStretch(1)
    v.addLayout(row)
    v.addSpacing(10)
    v.addWidget(button, 0, Qt.AlignCenter)
    v.addStretch(3)
    return page


def build_content(view) -> QWidget:
    # left: the modules to plot
    mods = Section("Modules")
    quick = QHBoxLayout()
    quick.setSpacing(0)
    view.quick = quick
    for text, tip, fn in (("All", "Plot every module", lambda: view.set_selected(list(view.modules))),
                          ("None", "Clear the selection", lambda: view.set_selected([]))):
        b = link(text, tip)
        b.clicked.connect(fn)
        quick.addWidget(b)
    view.proj_links = QHBoxLayout()
    view.proj_links.setSpacing(0)
    quick.addLayout(view.proj_links)
    quick.addStretch(1)
    mods.body.addLayout(quick)
    view.tree = ModuleTree()
    view.tree.toggled.connect(view._tree_toggled)
    view.tree.focused.connect(view._focus_phi)
    mods.body.addWidget(view.tree, 1)
    mods.setMinimumWidth(180)

    # right: plots, heatmaps and the table
    view.sigma = SigmaPlot()
    view.cumulative = EnergyPlot()
    # no colour bar titles: the sections name the values, and a rotated title longer than a short
    # bar was cut ("ective rank" at 1280 px)
    view.eff = Heatmap("projection", "layer")
    view.eff.hovered.connect(view._eff_hovered)
    view.eff.clicked.connect(view._eff_clicked)
    view.phi = Heatmap("j  (other adapter)", "i  (this adapter)", origin=1)
    view.phi.hovered.connect(view._phi_hovered)
    view.table = SummaryTable()
    view.table.doubleClicked.connect(view._table_activated)

    s_sigma = Section("Singular values of ΔW", right=ElidedLabel("log scale", "Hint", min_chars=0))
    s_sigma.body.addWidget(view.sigma, 1)
    s_sigma.body.addWidget(view.sigma.legend)
    energy_note = ElidedLabel("Σσ² in top k", "Hint", min_chars=0, tooltip_full=False)  # short: cut at 1280 px
    energy_note.setToolTip("The share of Σσ² (the squared Frobenius norm of ΔW) in the top k singular values")
    s_energy = Section("Cumulative energy", right=energy_note)
    s_energy.body.addWidget(view.cumulative, 1)
    s_energy.body.addWidget(view.cumulative.legend)
    view.eff_readout = ElidedLabel("", "Hint", min_chars=2)
    s_eff = Section("Effective rank", right=view.eff_readout)
    s_eff.body.addWidget(view.eff)
    view.phi_readout = ElidedLabel("", "Hint", min_chars=2)
    s_phi = Section("Subspace similarity", right=view.phi_readout)
    row = QHBoxLayout()
    row.setSpacing(6)
    view.compare_combo = QComboBox()
    view.compare_combo.setToolTip("A checkpoint of this run, or another adapter, to compare with (Eq. 4)")
    view.compare_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    view.compare_combo.setMinimumContentsLength(8)
    view.compare_combo.activated.connect(view._compare_chosen)
    view.compare_button = QPushButton("Compare with…")
    view.compare_button.setToolTip("Choose another run or adapter folder (same base model)")
    view.compare_button.clicked.connect(lambda: view.compare_with())
    view.phi_module = QComboBox()
    view.phi_module.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    view.phi_module.setMinimumContentsLength(6)
    view.phi_module.setToolTip("The module whose φ is shown")
    view.phi_module.currentIndexChanged.connect(view._draw_phi)
    row.addWidget(label("vs", "Hint"))
    row.addWidget(view.compare_combo, 3)
    row.addWidget(view.compare_button)
    row2 = QHBoxLayout()
    row2.setSpacing(6)
    row2.addWidget(label("module", "Hint"))
    row2.addWidget(view.phi_module, 1)
    s_phi.body.addLayout(row)
    s_phi.body.addLayout(row2)
    s_phi.body.addWidget(view.phi, 1)
    view.amp_link = link("Amplification…", "Load the base model (on the CPU) to compute the paper's "
                                            "amplification factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F per module")
    view.amp_link.clicked.connect(view.compute_amplification)
    s_table = Section("Summary", right=view.amp_link)
    s_table.body.addWidget(view.table)

    top, bottom, third = QSplitter(Qt.Horizontal), QSplitter(Qt.Horizontal), QSplitter(Qt.Horizontal)
    right = QSplitter(Qt.Vertical)
    for sp in (top, bottom, third):
        right.addWidget(sp)
    outer = QSplitter(Qt.Horizontal)
    outer.addWidget(mods)
    outer.addWidget(right)
    outer.setStretchFactor(1, 1)
    outer.setSizes([230, 1000])
    for sp in (top, bottom, third, right, outer):
        sp.setChildrenCollapsible(False)
        sp.setHandleWidth(10)
    view.splitters = (top, bottom, right, outer, third)
    view.sections = (s_sigma, s_energy, s_eff, s_phi, s_table)
    view.wide = None
    arrange(view, True)
    return outer


WIDE = 1240  # px of the view from which σ, energy and effective rank share one row
NARROW_ROW = 300  # px: the height of each of the three rows of the narrow layout


def arrange(view, wide: bool):
    """Wide: [σ | energy | effective rank] over [φ | summary]. Narrow (a 1280 or 1366 px
    window): [σ | energy] over [effective rank | φ] over [summary], taller than the tab, which
    then scrolls vertically only."""
    if wide == view.wide:
        return
    view.wide = wide
    top, bottom, right, _, third = view.splitters
    s_sigma, s_energy, s_eff, s_phi, s_table = view.sections
    rows = ((top, (s_sigma, s_energy, s_eff), (5, 5, 4)), (bottom, (s_phi, s_table), (5, 7)), (third, (), ())) \
        if wide else ((top, (s_sigma, s_energy), (1, 1)), (bottom, (s_eff, s_phi), (1, 1)), (third, (s_table,), (1,)))
    for sp, widgets, stretches in rows:
        for i, (w, stretch) in enumerate(zip(widgets, stretches)):
            sp.insertWidget(i, w)  # moves it here from wherever it was
            sp.setStretchFactor(i, stretch)
    third.setVisible(not wide)
    first, second = view.header_rows
    (second if wide else first).removeWidget(view.controls)
    (first if wide else second).addWidget(view.controls)
    if wide:
        bottom.setSizes([440, 760])
        right.setSizes([500, 400, 0])
        right.setMinimumHeight(0)
    else:
        top.setSizes([1, 1])
        bottom.setSizes([1, 1])
        right.setSizes([NARROW_ROW] * 3)
        right.setMinimumHeight(3 * NARROW_ROW)
