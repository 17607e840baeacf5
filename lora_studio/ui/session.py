"""The run being set up: a RunConfig's sections (edited by the panels) plus what the workers
found out about its model and data. Views take a Session in `__init__`, write through its
methods and redraw on its signals; nothing here touches a widget."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field

from PySide6.QtCore import QObject, QTimer, Signal

from lora_studio.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from lora_studio.engine.errors import UserError
from lora_studio.engine.layers import format_layers, parse_layers
from lora_studio.ui import probes
from lora_studio.engine.errors import Failure
from lora_studio.ui.tasks import TaskRunner

from lora_studio.core import names  # noqa: E402
from lora_studio.core.names import LOGICAL  # noqa: E402


@dataclass
class Draft:
    """RunConfig sections before validation (RunConfig validates on construction)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = ""

    def build(self, **overrides) -> RunConfig:
        """The validated RunConfig (raises engine.UserError with what to fix)."""
        d = asdict(self)
        d.update(overrides)
        return RunConfig.from_dict(d)

    @classmethod
    def of(cls, config: RunConfig) -> "Draft":
        c = config.to_dict()
        return cls(ModelConfig(**c["model"]), LoraConfig(**c["lora"]), DataConfig(**c["data"]),
                   TrainConfig(**c["train"]), c["out"])


@dataclass
class BudgetView:
    budget: object | None  # engine.budget.Budget, None when it cannot be computed
    message: str = ""  # why not, or a note
    by_target: dict[str, int] = field(default_factory=dict)  # logical projection -> adapter params


def lora_from_cells(cells: set, info: probes.ModelInfo) -> tuple[list[str], str, str]:
    """(targets, layers, problem) for LoraConfig from the ticked grid cells.

    A full product (some projections x some layers) is written as logical targets plus a layer
    range, as the CLI would. Any other pattern names each module exactly (a regex target);
    that cannot split a fused matrix (GPT-2 c_attn) by layer, which is then the problem."""
    if not cells:
        return [], "all", "tick at least one projection"
    ts = [t for t in LOGICAL if any(c[0] == t for c in cells)]
    ls = sorted({c[1] for c in cells})
    product = {(t, l) for t in ts for l in ls if (t, l) in info.cells}
    if product == set(cells):
        all_layers = sorted({l for _, l in info.cells})
        from_layers = "all" if ls == all_layers else format_layers(ls)
        return ts, from_layers, ""
    if any(info.cells[c] in info.fused for c in cells):
        return ts, format_layers(ls), ("this model fuses q/k/v in one matrix: tick the same layers for each "
                                        "fused projection (whole rows or columns)")
    order = {name: i for i, name in enumerate(info.cells.values())}
    names = sorted({info.cells[c] for c in cells}, key=order.get)
    return [re.escape(n) for n in names], "all", ""


def cells_from_lora(lora: LoraConfig, info: probes.ModelInfo) -> set:
    layers = _parse_layers(lora.layers)
    out = set()
    for (t, l), name in info.cells.items():
        if layers is not None and l not in layers:
            continue
        for target in lora.targets:
            if target == t or (target not in LOGICAL and _matches(target, name)):
                out.add((t, l))
    return out


def _matches(pattern: str, name: str) -> bool:
    try:
        return re.search(rf"(^|\.)({pattern})$", name) is not None
    except re.error:
        return False


def _parse_layers(text) -> list[int] | None:
    # malformed text selects every layer here; RunConfig.validate reports it when training starts
    try:
        return parse_layers(text)
    except UserError:
        return None


class Session(QObject):
    """The configuration being edited and the facts the workers found about it.

    Signals:
        changed(str): a config section changed: "model", "lora", "data", "train" or "out"
        model_loading(str): a model is being inspected (its reference)
        model_ready(object): probes.ModelInfo of the model now selected
        model_failed(object, str): a Failure and the reference that failed (the old model stays)
        cells_changed(): the ticked (projection, layer) cells changed
        budget_changed(object): a BudgetView, after every change that affects it
        data_loading(str): the data file being read
        data_ready(object): probes.DataPreview
        data_stats(object): probes.DataStats (token lengths, split sizes, labels)
        data_failed(object): a Failure reading or tokenizing the data
    """

    changed = Signal(str)
    model_loading = Signal(str)
    model_ready = Signal(object)
    model_failed = Signal(object, str)
    cells_changed = Signal()
    budget_changed = Signal(object)
    data_loading = Signal(str)
    data_ready = Signal(object)
    data_stats = Signal(object)
    data_failed = Signal(object)

    def __init__(self, draft: Draft | None = None, parent=None):
        super().__init__(parent)
        self.draft = draft or Draft()
        self.info: probes.ModelInfo | None = None
        self.preview: probes.DataPreview | None = None
        self.stats: probes.DataStats | None = None
        self.cells: set[tuple[str, int]] = set()
        self.cells_problem = ""
        self.budget = BudgetView(None, "loading the model…")
        self.tasks = TaskRunner(self)
        self._gen = {"model": 0, "preview": 0, "stats": 0}
        self._data_timer = QTimer(self, singleShot=True, interval=200)
        self._data_timer.timeout.connect(self.refresh_data)
        self._stats_timer = QTimer(self, singleShot=True, interval=300)
        self._stats_timer.timeout.connect(self.refresh_stats)

    # -- model ---------------------------------------------------------------------------
    def load_model(self, ref: str | None = None, task: str | None = "keep", trust_remote_code: bool | None = None):
        """Inspect a model in a worker. `task` None: infer it from the model; "keep": the current task."""
        m = self.draft.model
        ref = m.path if ref is None else ref.strip()
        if task == "keep":
            task = m.task if (ref == m.path or not ref) else None
        if not ref:
            task = "classification"  # the demo model is an encoder
        trust = m.trust_remote_code if trust_remote_code is None else trust_remote_code
        self._gen["model"] += 1
        gen = self._gen["model"]
        num_labels = len(self.stats.label_names) if self.stats and self.stats.label_names else 2
        self.model_loading.emit(ref)
        self.tasks.start(probes.inspect_model, ref, task, num_labels, trust,
                         on_done=lambda info: self._model_done(gen, info, trust),
                         on_failed=lambda f: self._model_failed(gen, f, ref))

    def use_chat_demo(self):
        """The chat demo preset: SmolLM2-135M-Instruct (fetched and converted once, in a worker), the
        packaged chat data and the demo's settings (engine/demo_chat.py), as `train --demo chat`."""
        from lora_studio.engine import demo_chat

        self.model_loading.emit("the chat demo model (SmolLM2-135M-Instruct: fetched and converted once)")
        self.tasks.start(demo_chat.chat_model_path, on_done=self._chat_demo_ready,
                         on_failed=lambda f: self.model_failed.emit(f, ""))

    def _chat_demo_ready(self, path: str):
        from lora_studio.engine import demo_chat

        for section in ("lora", "train"):
            for key, value in demo_chat.SETTINGS[section].items():
                setattr(getattr(self.draft, section), key, value)
        self.changed.emit("train")
        train, validation = demo_chat.data_paths()
        self.set_data(path=train, validation_path=validation, format="messages", **demo_chat.SETTINGS["data"])
        self.load_model(path, task="causal-lm")

    def _model_done(self, gen: int, info: probes.ModelInfo, trust: bool):
        if gen != self._gen["model"]:
            return
        m = self.draft.model
        task_changed = info.task != m.task
        data_changed = task_changed or info.ref != m.path
        m.path, m.task, m.trust_remote_code = info.ref, info.task, trust
        if info.task == "classification":
            m.start_from = ""  # a classifier starts from a new adapter (and its head)
        self.info = info
        self.cells = cells_from_lora(self.draft.lora, info)  # consistent with `info` before anyone looks
        self.changed.emit("model")
        self.model_ready.emit(info)
        self.set_cells(self.cells)
        if task_changed:
            self.refresh_data()  # the demo file and the detected format depend on the task
        elif (data_changed or self.stats is None) and self.preview is not None and self.preview.format:
            self._stats_timer.start()  # (before the preview is read, _preview_done asks for them)

    def _model_failed(self, gen: int, failure: Failure, ref: str):
        if gen == self._gen["model"]:
            self.model_failed.emit(failure, ref)
            if self.info is None:
                self._emit_budget(BudgetView(None, failure.message))

    def start_from(self, run: str):
        """Train on the adapter of a finished causal-LM or preference run (`--from`; DPO's reference):
        its base model and adapter settings are taken, read in a worker. "" = a new adapter."""
        run = run.strip()
        if not run:
            self.draft.model.start_from = ""
            self.changed.emit("model")
            return
        from lora_studio.cli_train import start_run

        self.tasks.start(start_run, run, on_done=self._start_run_read, on_failed=lambda f: self.model_failed.emit(f, run))

    def _start_run_read(self, found):
        run, src = found
        m = self.draft.model
        self.draft.lora = dataclasses.replace(src.lora, init="kaiming")  # a PiSSA/OLoRA run is saved as plain LoRA
        m.start_from = str(run)
        task = m.task if m.task in ("causal-lm", "preference") else "causal-lm"
        self.changed.emit("model")
        if src.model.path != m.path or task != m.task or self.info is None:
            self.load_model(src.model.path, task=task)  # its cells follow the new LoRA settings
        else:
            self.set_cells(cells_from_lora(self.draft.lora, self.info))

    def set_model_flag(self, **values):
        """allow_pickle (used at training time) or trust_remote_code (re-inspects)."""
        if "trust_remote_code" in values and values["trust_remote_code"] != self.draft.model.trust_remote_code:
            self.load_model(trust_remote_code=values.pop("trust_remote_code"))
        for key, value in values.items():
            setattr(self.draft.model, key, value)
        self.changed.emit("model")

    # -- targets and adapter -------------------------------------------------------------
    def set_cells(self, cells: set):
        if self.info is None:
            return
        cells = {c for c in cells if c in self.info.cells}
        targets, layers, problem = lora_from_cells(cells, self.info)
        self.cells, self.cells_problem = cells, problem
        if targets:
            self.draft.lora.targets, self.draft.lora.layers = targets, layers
        self.cells_changed.emit()
        self.changed.emit("lora")
        self.recompute_budget()

    def set_lora(self, **values):
        for key, value in values.items():
            setattr(self.draft.lora, key, value)
        self.changed.emit("lora")
        self.recompute_budget()

    def set_variants(self, values: dict):
        """{section: {field: value}} (VariantsPanel.values): LoRA+, DoRA, init, base precision, optimizer."""
        for section, fields in values.items():
            for key, value in fields.items():
                setattr(getattr(self.draft, section), key, value)
        for section in values:
            self.changed.emit(section)
        self.recompute_budget()

    def scaling(self) -> float:
        lc = self.draft.lora
        return names.scaling(lc.rank, lc.alpha, lc.rslora)

    # -- training settings and output ----------------------------------------------------
    def set_train(self, **values):
        for key, value in values.items():
            setattr(self.draft.train, key, value)
        self.changed.emit("train")
        if {"batch_size", "precision", "device", "gradient_checkpointing"} & set(values):
            self.recompute_budget()

    def set_out(self, out: str):
        self.draft.out = out.strip()
        self.changed.emit("out")

    # -- data ----------------------------------------------------------------------------
    def set_data(self, **values):
        """Change data settings; the preview (path, format, columns) or the statistics
        (split, max length) are recomputed in a worker shortly after the last change."""
        d = self.draft.data
        for key, value in values.items():
            setattr(d, key, value)
        self.changed.emit("data")
        if {"path", "format", "text_column", "prompt_column", "completion_column", "messages_column",
                "label_column", "validation_path"} & set(values):
            self._data_timer.start()
        elif {"validation_split", "max_length"} & set(values):
            self._stats_timer.start()
        if "max_length" in values:
            self.recompute_budget()

    def refresh_data(self):
        self._gen["preview"] += 1
        gen = self._gen["preview"]
        cfg, task = dataclasses.replace(self.draft.data), self.draft.model.task
        self.data_loading.emit(cfg.path)
        self.tasks.start(probes.preview_data, cfg, task,
                         on_done=lambda p: self._preview_done(gen, p),
                         on_failed=lambda f: self._data_failed(gen, "preview", f))

    def _preview_done(self, gen, preview: probes.DataPreview):
        if gen != self._gen["preview"]:
            return
        self.preview = preview
        self.data_ready.emit(preview)
        if preview.format:
            self.refresh_stats()
        else:
            self._gen["stats"] += 1
            self.stats = None
            self.data_failed.emit(Failure(preview.problem))

    def refresh_stats(self):
        if self.info is None:
            return
        self._gen["stats"] += 1
        gen = self._gen["stats"]
        cfg = dataclasses.replace(self.draft.data)
        self.tasks.start(probes.data_stats, cfg, self.draft.model.task, self.info.resolved,
                         self.draft.model.trust_remote_code, self.draft.train.seed,
                         on_done=lambda s: self._stats_done(gen, s),
                         on_failed=lambda f: self._data_failed(gen, "stats", f))

    def _stats_done(self, gen, stats: probes.DataStats):
        if gen != self._gen["stats"]:
            return
        self.stats = stats
        self.data_stats.emit(stats)
        n = len(stats.label_names)
        if self.info and self.info.task == "classification" and n >= 2 and n != self.info.num_labels:
            self.load_model()  # the head's size (and so the budget) depends on the number of labels

    def _data_failed(self, gen, kind, failure: Failure):
        if gen == self._gen[kind]:
            if kind == "stats":
                self.stats = None
            self.data_failed.emit(failure)

    # -- budget --------------------------------------------------------------------------
    def budget_precision(self) -> str:
        """The precision training will use (core.names.resolve_precision; a refused one as it is)."""
        t = self.draft.train
        devs = {d.value: d for d in self.info.devices} if self.info else {}
        dev = "cuda:0" if t.device == "cuda" else t.device
        if dev == "auto":
            dev = next((v for v in devs if v.startswith("cuda")), "cpu")
        cuda = dev.startswith("cuda") and dev in devs
        try:
            return names.resolve_precision(t.precision, "cuda" if cuda else "cpu", cuda and devs[dev].bf16)
        except UserError:
            return t.precision

    def lora_spec(self):
        return self.draft.lora.to_spec(self.draft.model.task)

    def recompute_budget(self):
        """budget.estimate on the cached skeleton: a few milliseconds, so on every change."""
        if self.info is None:
            return
        if self.cells_problem:
            return self._emit_budget(BudgetView(None, self.cells_problem))
        from lora_studio.engine.budget import estimate, sequences_per_example

        try:
            b = estimate(self.info.skeleton, self.lora_spec(), self.budget_precision(),
                         int(self.draft.train.batch_size) * sequences_per_example(self.draft.model.task),
                         int(self.draft.data.max_length),
                         bool(self.draft.train.gradient_checkpointing), quantize=self.draft.model.quantize,
                         optimizer=self.draft.train.optimizer)
        except UserError as e:
            return self._emit_budget(BudgetView(None, str(e)))
        by_target = dict(b.by_target)
        if any(t not in LOGICAL for t in by_target):  # exact-name targets: regroup by projection
            owner = {name: t for (t, _), name in self.info.cells.items()}
            by_target = {}
            for mb in b.modules:
                t = owner.get(mb.name, mb.name)
                by_target[t] = by_target.get(t, 0) + mb.params
        order = {t: i for i, t in enumerate(LOGICAL)}
        by_target = dict(sorted(by_target.items(), key=lambda kv: order.get(kv[0], 99)))
        self._emit_budget(BudgetView(b, "", by_target))

    def _emit_budget(self, view: BudgetView):
        self.budget = view
        self.budget_changed.emit(view)

    # -- whole configurations ------------------------------------------------------------
    def apply_config(self, config: RunConfig):
        """Take every setting of `config` (a loaded TOML or a run folder's run.toml)."""
        new = Draft.of(config)
        old_model = (self.draft.model.path, self.draft.model.task, self.draft.model.trust_remote_code)
        self.draft = new
        for section in ("lora", "data", "train", "out"):
            self.changed.emit(section)
        self.changed.emit("model")
        if (new.model.path, new.model.task, new.model.trust_remote_code) != old_model or self.info is None:
            self.load_model(new.model.path, new.model.task, new.model.trust_remote_code)
        else:
            self.set_cells(cells_from_lora(new.lora, self.info))
        self.refresh_data()

    def build(self) -> RunConfig:
        if self.cells_problem:
            raise UserError(self.cells_problem)
        return self.draft.build()
