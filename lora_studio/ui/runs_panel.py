"""The Runs tab: every run under the runs folder with its state, model, targets, rank, last loss
and eval and date; open, continue (only a resumable run), export, move to the trash; the loss and
eval curves of the selected runs overlaid. Runs written by another process (the CLI) are followed
live: their metrics.jsonl is polled while they are selected."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QFile, QFileSystemWatcher, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QMessageBox, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from lora_studio.engine import runfolder
from lora_studio.ui import style
from lora_studio.ui.widgets import LINE_KEY, ElidedLabel, legend_html, legend_label
from lora_studio.ui.bind import quiet
from lora_studio.ui.parts import Part

# Okabe & Ito's colour-blind-safe set, blue and orange first (never red beside green) (GUI N18)
OVERLAY_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
COLUMNS = ("Run", "Status", "Model", "Targets", "Rank", "Step", "Loss", "Eval loss", "Accuracy", "Date")
# settings that say where or how often, not what was trained: never named in the overlay's legend
NOT_NAMED = {"out", "train.device", "train.eval_every", "train.save_every", "train.save_minutes", "train.log_every",
             "train.keep_checkpoints", "train.sample_every", "train.sample_prompts"}
NAMED = ("lora.rank", "lora.targets")  # what a LoRA run is: always in its legend name
FIRST = ("lora.alpha", "train.lr", "train.max_steps", "train.epochs")  # then these, when they differ
MOST_NAMED = 2  # other differences named per run in the legend


@dataclass
class RunRow:
    path: str
    name: str
    state: str  # running | finished | stopped | failed | killed | unknown
    resumable: bool
    step: int
    total_steps: int
    model: str
    targets: str
    rank: int
    loss: float | None
    eval_loss: float | None
    accuracy: float | None
    date: float  # seconds since the epoch: the newest of run.toml and metrics.jsonl
    message: str = ""  # why it failed or stopped (run_state.json), shown in its Status cell
    settings: dict = field(default_factory=dict)  # run.toml as {"lora.rank": "r 8", …} (settings_of)


def _say(key: str, value) -> str:
    """A setting as the legend names it: "r 8", "q,v", "lr 0.0005", "DoRA", "model tiny-bert"."""
    name = key.split(".")[-1]
    if key == "lora.rank":
        return f"r {value}"
    if key == "lora.alpha":
        return f"α {value:g}"
    if key == "lora.targets":
        return ",".join(value)
    if key == "train.max_steps":
        return f"{value} steps"
    if key == "train.epochs":
        return f"{value:g} epochs"
    if key in ("model.path", "data.path"):
        return f"{key.split('.')[0]} {Path(value).name or 'demo'}"
    if isinstance(value, bool):
        words = {"dora": "DoRA", "rslora": "rsLoRA"}.get(name, name.replace("_", " "))
        return words if value else f"no {words}"
    if isinstance(value, float):
        return f"{name.replace('_', ' ')} {value:g}"
    return f"{name.replace('_', ' ')} {value}"


def settings_of(cfg) -> dict[str, str]:
    """A RunConfig's settings, flat ("section.field") and in words, to compare runs by."""
    out = {}
    for section in fields(cfg):
        part = getattr(cfg, section.name)
        for f in fields(part) if is_dataclass(part) else ():
            key = f"{section.name}.{f.name}"
            if key not in NOT_NAMED:
                out[key] = _say(key, getattr(part, f.name))
    return out


def overlay_names(rows: list[RunRow]) -> list[str]:
    """Each run's legend name: its folder, rank and targets, then what else differs from the other
    runs shown, e.g. "run-20261206-140312 · r 8 · q,v · lr 0.0005" (GUI N18)."""
    keys = list(dict.fromkeys(k for r in rows for k in r.settings))
    differ = [k for k in keys if k not in NAMED and len({r.settings.get(k) for r in rows}) > 1]
    differ = [k for k in FIRST if k in differ] + [k for k in differ if k not in FIRST]
    names = []
    for r in rows:
        said = [r.settings[k] for k in differ if k in r.settings]
        more = [" …"] if len(said) > MOST_NAMED else []
        names.append(" · ".join([r.name.rsplit("/", 1)[-1], *(r.settings[k] for k in NAMED if k in r.settings),
                                 *said[:MOST_NAMED]]) + "".join(more))
    return names


def short_date(seconds: float, now: float | None = None) -> str:
    """"12-06 14:03" this year, "2025-12-06" before: fits the Date column at 1280 px (GUI N18)."""
    t, year = time.localtime(seconds), time.localtime(now if now is not None else time.time()).tm_year
    return time.strftime("%m-%d %H:%M" if t.tm_year == year else "%Y-%m-%d", t)


def read_row(run: Path) -> RunRow:
    """One run folder's line (Qt-free; a damaged run still gets a line, with what it has)."""
    from lora_studio.config import RunConfig

    st = runfolder.run_state(run)
    settings = {}
    try:
        cfg = RunConfig.load(run / runfolder.RUN_FILE)
        model = Path(cfg.model.path).name if cfg.model.path else "demo"
        targets, rank = "+".join(cfg.lora.targets), cfg.lora.rank
        settings = settings_of(cfg)
    except Exception:  # noqa: BLE001 - an unreadable run.toml must not hide the other runs
        model, targets, rank = "?", "?", 0
    records = runfolder.read_metrics(run) if (run / runfolder.METRICS_FILE).is_file() else []
    losses = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r and r.get("step", 0) > 0]  # the run's, never the base's step 0
    step = max([r["step"] for r in records if "step" in r] or [st.get("step", 0)])
    files = [run / runfolder.RUN_FILE, run / runfolder.METRICS_FILE]
    date = max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
    return RunRow(str(run), run.name, st.get("state", "unknown"), bool(st.get("resumable")), step,
                  int(st.get("total_steps") or 0), model, targets, rank,
                  losses[-1]["loss"] if losses else None, evals[-1]["eval_loss"] if evals else None,
                  evals[-1].get("accuracy") if evals else None, date, str(st.get("message") or ""), settings)


def run_folders(root) -> list[Path]:
    """The run folders directly under `root`, and those of each study there (a folder with a
    sweep.json: one run per rank, GUI N8)."""
    root = Path(root)
    found = []
    try:
        for p in root.iterdir() if root.is_dir() else ():
            if runfolder.is_run(p):
                found.append(p)
            elif (p / "sweep.json").is_file():
                found.extend(q for q in p.iterdir() if runfolder.is_run(q))
    except OSError:
        pass
    return found


def scan(root) -> list[RunRow]:
    """Every run under `root` (studies' runs included, named study/run), newest first."""
    rows = []
    for p in run_folders(root):
        row = read_row(p)
        if p.parent != Path(root):
            row.name = f"{p.parent.name}/{p.name}"
        rows.append(row)
    return sorted(rows, key=lambda r: r.date, reverse=True)


def _trashed(result) -> bool:  # PySide6 returns a bool, or (bool, path in the trash)
    return bool(result[0] if isinstance(result, tuple) else result)


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


class RunsPanel(QWidget, Part):
    """Signals:
        open_requested(str): show this run in the window
        continue_requested(str): continue this (resumable) run
        export_requested(str): export this run's adapter
    """

    open_requested = Signal(str)
    continue_requested = Signal(str)
    export_requested = Signal(str)

    def __init__(self, root, parent=None, poll_ms: int = 1000):
        super().__init__(parent)
        self.root = Path(root)
        self.rows: list[RunRow] = []
        self.active = ""  # the run this window trains: nothing else is opened or continued meanwhile
        self.busy = False  # a study runs in this window
        self._seen: dict[str, tuple] = {}  # run -> (size, mtime) of its metrics.jsonl when last drawn
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.where = ElidedLabel("", "Hint", min_chars=10)  # a long runs path must not widen the window
        self.refresh_button = QPushButton("Refresh")
        self.open_button = QPushButton("Open")
        self.continue_button = QPushButton("Continue")
        self.export_button = QPushButton("Export…")
        self.trash_button = QPushButton("Move to trash")
        bar.addWidget(self.where, 1)
        for b in (self.refresh_button, self.open_button, self.continue_button, self.export_button, self.trash_button):
            bar.addWidget(b)
        lay.addLayout(bar)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.Stretch)  # the Run column gives way (elided in the middle),
        self.table.setTextElideMode(Qt.ElideMiddle)  # so Date stays whole at 1280 px (GUI N18)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "loss (nats)")  # short: the plot is ~200 px tall at 1280 x 800
        self.plot.setToolTip("Loss in nats per example (a classifier), per pair (preference) or per token")
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.legend = legend_label()  # under the plot, never over the curves (GUI N18)
        self.legend_entries: list[tuple[str, str, bool]] = []  # (name, colour, dashed)
        self.apply_theme(style.current())
        overlay = QWidget()
        box = QVBoxLayout(overlay)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        box.addWidget(self.plot, 1)
        box.addWidget(self.legend)
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.table)
        split.addWidget(overlay)
        split.setSizes([300, 300])
        lay.addWidget(split, 1)

        self.refresh_button.clicked.connect(self.refresh)
        self.open_button.clicked.connect(lambda: self._one(self.open_requested))
        self.continue_button.clicked.connect(lambda: self._one(self.continue_requested))
        self.export_button.clicked.connect(lambda: self._one(self.export_requested))
        self.trash_button.clicked.connect(self.trash_selected)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.itemDoubleClicked.connect(lambda _: self._one(self.open_requested))
        self.watcher = QFileSystemWatcher(self)  # new or removed run folders
        self.watcher.directoryChanged.connect(lambda _: self.refresh())
        self.timer = QTimer(self, interval=poll_ms)  # metrics.jsonl of the selected runs, and their state
        self.timer.timeout.connect(self._poll)
        self.timer.start()
        self.set_root(self.root)

    def apply_theme(self, theme: str):
        c = style.colors(theme)
        self.plot.setBackground(c["surface"])
        for axis in ("left", "bottom"):
            ax = self.plot.getAxis(axis)
            ax.setPen(pg.mkPen(c["border"]))
            ax.setTextPen(pg.mkPen(c["muted"]))

    def set_root(self, root):
        self.root = Path(root)
        if self.watcher.directories():
            self.watcher.removePaths(self.watcher.directories())
        if self.root.is_dir():
            self.watcher.addPath(str(self.root))
        self.where.setText(f"Runs in {self.root}")
        self.refresh()

    def refresh(self):
        selected = set(self.selected())
        self.rows = scan(self.root)
        with quiet(self.table):
            self.table.setRowCount(len(self.rows))
            for r, row in enumerate(self.rows):
                status = row.state + (" · resumable" if row.resumable and row.state != "running" else "")
                if row.state == "failed" and row.message:  # the reason, not "failed" alone (GUI N18)
                    status += f": {row.message[:60]}" + ("…" if len(row.message) > 60 else "")
                step = f"{row.step:,}" + (f" / {row.total_steps:,}" if row.total_steps else "")
                texts = (row.name, status, row.model, row.targets, str(row.rank or "–"), step, _fmt(row.loss, ".4f"),
                         _fmt(row.eval_loss, ".4f"), _fmt(row.accuracy, ".1%"),
                         short_date(row.date) if row.date else "–")
                for c, text in enumerate(texts):
                    item = QTableWidgetItem(text)
                    if c in (4, 5, 6, 7, 8):
                        item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                    item.setToolTip(f"{row.path}\n{row.message}" if c == 1 and row.message else
                                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.date)) if c == 9 and row.date
                                    else row.path)
                    self.table.setItem(r, c, item)
            self.select(selected)
        self._selection_changed()

    def selected(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.rows[r].path for r in rows if r < len(self.rows)]

    def select(self, paths):
        """Select these runs (others are deselected)."""
        self.table.clearSelection()
        mode, wanted = self.table.selectionMode(), set(map(str, paths))
        self.table.setSelectionMode(QAbstractItemView.MultiSelection)
        for r, row in enumerate(self.rows):
            if row.path in wanted:
                self.table.selectRow(r)
        self.table.setSelectionMode(mode)

    def _row(self, path: str) -> RunRow | None:
        return next((r for r in self.rows if r.path == path), None)

    def _one(self, signal):
        paths = self.selected()
        if len(paths) == 1:
            signal.emit(paths[0])

    def set_run_state(self, state):
        self.set_active(state.active_run, state.study_running)

    def set_active(self, run_dir: str, busy: bool = False):
        """`run_dir`: the run training in this window ("" none); `busy`: a study runs. While either
        holds, only that run opens (it is the one shown) and nothing is continued."""
        if (run_dir, busy) != (self.active, self.busy):
            self.active, self.busy = run_dir, busy
            self._selection_changed()

    def _selection_changed(self):
        from lora_studio.ui.runs import same_run

        paths = self.selected()
        one = self._row(paths[0]) if len(paths) == 1 else None
        mine = one is not None and bool(self.active) and same_run(one.path, self.active)
        held = bool(self.active) or self.busy
        self.open_button.setEnabled(one is not None and (mine or (not held and one.state != "running")))
        self.export_button.setEnabled(one is not None and not mine and one.state != "running")
        self.continue_button.setEnabled(one is not None and not held and one.resumable and one.state != "running")
        why = ("a run is training in this window: stop it first" if held else
               "this run is being trained" if one is not None and one.state == "running" else "")
        for b in (self.open_button, self.continue_button, self.export_button):
            b.setToolTip("" if b.isEnabled() else why)
        if one is not None and not why and not self.continue_button.isEnabled():  # idle, and still not continuable
            self.continue_button.setToolTip("it has finished: nothing is left to train" if one.state == "finished"
                                            else "it has no checkpoint to continue from")
        self.trash_button.setEnabled(bool(paths) and all(self._row(p).state != "running" for p in paths))
        self.draw()

    def draw(self):
        """The selected runs' train loss (lines) and eval loss (dashed, dots), one colour per run,
        named in the legend under the plot by folder and what differs between them."""
        self.plot.clear()
        paths = [p for p in self.selected() if self._row(p) is not None]
        self._seen = {}
        self.legend_entries = []
        kinds = set()
        for i, (path, name) in enumerate(zip(paths, overlay_names([self._row(p) for p in paths]))):
            records = runfolder.read_metrics(path) if (Path(path) / runfolder.METRICS_FILE).is_file() else []
            hue = OVERLAY_COLORS[i % len(OVERLAY_COLORS)]
            color = pg.mkColor(hue)
            loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
            evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
            if loss:
                self.plot.plot(*zip(*loss), pen=pg.mkPen(color, width=1.6), name=f"{name} · train")
            if evals:
                self.plot.plot(*zip(*evals), pen=pg.mkPen(color, width=1, style=Qt.DashLine), symbol="o",
                               symbolSize=6, symbolBrush=color, symbolPen=color, name=f"{name} · eval")
            kinds |= {"train"} if loss else set()
            kinds |= {"eval"} if evals else set()
            self.legend_entries.append((name, hue, False))
            self._seen[path] = self._stamp(path)
        self.legend_entries += [(k, LINE_KEY, k == "eval") for k in ("train", "eval") if k in kinds]
        self.legend.setText(legend_html(self.legend_entries))
        self.legend.setVisible(bool(paths))

    @staticmethod
    def _stamp(path: str) -> tuple:
        f = Path(path) / runfolder.METRICS_FILE
        try:
            s = f.stat()
        except OSError:
            return (0, 0)
        return (s.st_size, s.st_mtime_ns)

    def _poll(self):
        if any(self._stamp(p) != seen for p, seen in self._seen.items()):
            self.refresh()  # a selected run grew (another process trains it): its line and curves
        elif self._listing() != {r.path for r in self.rows}:
            self.refresh()  # a run folder became a run (its run.toml came after the folder, GUI N9) or went

    def _listing(self) -> set[str]:
        return {str(p) for p in run_folders(self.root)}

    def trash_selected(self):
        paths = self.selected()
        if not paths:
            return
        names = ", ".join(Path(p).name for p in paths)
        answer = QMessageBox.question(self, "Move to the trash?",
                                      f"Move {names} to the trash? It can be restored from there.")
        if answer != QMessageBox.Yes:
            return
        failed = [p for p in paths if not _trashed(QFile.moveToTrash(p))]
        if failed:
            QMessageBox.warning(self, "Cannot move to the trash",
                                f"The trash cannot take {', '.join(failed)}: delete it with your file manager.")
        self.refresh()
