"""The sweep's settings: ranks, seeds, targets sets, fixed budget, output folder. Parsed with the
engine's own parsers (engine.sweep.parse_ranks / parse_targets_sets), so the CLI and the GUI accept
the same text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QCheckBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QSpinBox

from lora_studio.config import RunConfig
from lora_studio.ui.widgets import Section, icon, label


@dataclass
class SweepPlan:
    """What run_sweep is called with (besides the base RunConfig)."""

    out: str
    ranks: list[int]
    seeds: int
    targets_sets: list[list[str]] | None  # None: the config's own targets
    fixed_budget: bool


class SweepSetup(Section):
    def __init__(self, parent=None):
        super().__init__("Rank study", parent)
        self.ranks = QLineEdit("1,2,4,8,64")
        self.ranks.setToolTip("One run per rank (LoRA paper Table 6: 1, 2, 4, 8, 64)")
        self.seeds = QSpinBox()
        self.seeds.setRange(1, 16)
        self.seeds.setToolTip("Runs per rank with seeds seed, seed+1, … (Figure 4 compares them)")
        self.targets = QLineEdit()
        self.targets.setPlaceholderText("the model's targets, e.g. q;v;q,v")
        self.targets.setToolTip("Sets separated by ';', projections by ',': \"q;v;q,v\" trains q alone, "
                                "v alone and q with v (empty: the targets of the current settings)")
        # short: the form must fit the Study tab's narrowest left pane, Stop button included (1280 px)
        self.fixed = QCheckBox("Fixed parameter budget")
        self.fixed.setToolTip("The same trainable parameters for every targets set (Table 5's protocol, the CLI's "
                              "--fixed-budget): each set gets the rank that gives it the first set's parameter count "
                              "at each rank")
        self.out = QLineEdit()
        self.out.setToolTip("Every run goes in a sub-folder, with sweep.json and report.md beside them; "
                            "an interrupted study resumes in the same folder")
        browse = QPushButton(icon("folder", "#6a7385"), "")
        browse.setToolTip("Choose the study's folder")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        f = self.form
        f.addRow("Ranks", self.ranks)
        f.addRow("Seeds", self.seeds)
        f.addRow("Targets sets", self.targets)
        f.addRow("", self.fixed)
        f.addRow("Folder", row)
        self.body.addWidget(label("Every other setting (model, data, steps, alpha…) is the current run's.", "Hint",
                                  wrap=True))

    def set_config(self, config: RunConfig):
        """Default folder next to the config's run folder."""
        if not self.out.text():
            base = Path(config.out) if config.out else Path("runs") / "run"
            self.out.setText(str(base.parent / f"{base.name}-study"))

    def show_plan(self, out: str, doc: dict):
        """The settings of a sweep.json (a study loaded from its folder)."""
        self.out.setText(out)
        self.ranks.setText(",".join(str(r) for r in doc.get("ranks", [])))
        self.seeds.setValue(int(doc.get("seeds", 1)))
        self.targets.setText(";".join(",".join(t) for t in doc.get("targets_sets") or []))
        self.fixed.setChecked(bool(doc.get("fixed_budget")))

    def plan(self) -> SweepPlan:
        """The parsed settings; raises UserError on bad text (the message says what to type)."""
        from lora_studio.engine.errors import UserError
        from lora_studio.engine.sweep import parse_ranks, parse_targets_sets

        ranks = parse_ranks(self.ranks.text())
        text = self.targets.text().strip()
        sets = parse_targets_sets(text, []) if text else None
        if not self.out.text().strip():
            raise UserError("choose a folder for the study")
        return SweepPlan(str(Path(self.out.text().strip()).expanduser()), ranks, self.seeds.value(), sets,
                         self.fixed.isChecked())

    def _browse(self):
        settings = QSettings()
        folder = QFileDialog.getExistingDirectory(self, "Folder of the study", self.out.text()
                                                  or settings.value("folders/runs", ""))
        if folder:
            self.out.setText(folder)
