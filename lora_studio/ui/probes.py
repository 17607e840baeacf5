"""What the workers compute for the window: model architecture, devices, data preview and
token statistics. Plain functions over the engine, run in worker threads (tasks.Task); they
return small dataclasses and never touch widgets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class Device:
    value: str  # what TrainConfig.device takes: auto | cpu | cuda:0 | mps
    label: str  # "NVIDIA H100 80GB HBM3 · 79 GiB"
    bf16: bool = False


@dataclass
class ModelInfo:
    ref: str  # as the user gave it ("" = the packaged demo)
    resolved: str  # the folder or hub id actually read
    task: str
    num_labels: int
    arch: dict  # models.describe(): model_type, layers, hidden_size, heads, dtype, params, targets
    targets: list[str]  # logical projections present (the grid's columns)
    layers: int
    cells: dict[tuple[str, int], str]  # (target, layer) -> adapted module name
    fused: set[str]  # module names that hold several targets (GPT-2 c_attn …)
    skeleton: object = field(repr=False, default=None)  # meta-device model for budget.estimate
    devices: list[Device] = field(default_factory=list)

    @property
    def name(self) -> str:
        from pathlib import PurePath

        if not self.ref:
            return "all-MiniLM-L6-v2 (demo)"
        return PurePath(self.ref.rstrip("/\\")).name or self.ref


@dataclass
class DataPreview:
    path: str  # the file read ("" config path = the demo file)
    columns: list[str]
    rows: list[dict]
    format: str
    roles: dict[str, str]
    num_rows: int
    problem: str


@dataclass
class DataStats:
    format: str
    roles: dict[str, str]
    label_names: list[str]
    train: object  # data.LengthStats
    validation: object


def devices() -> list[Device]:
    import torch

    from lora_studio.engine.setup import bf16_native

    out = [Device("auto", "Auto"), Device("cpu", f"CPU · {torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(Device(f"cuda:{i}", f"{p.name} · {p.total_memory / 2**30:.0f} GiB",
                              bf16_native(torch.device("cuda", i))))
        out[0] = Device("auto", f"Auto ({out[2].label})", out[2].bf16)
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append(Device("mps", "Apple GPU (MPS)"))
    return out


def inspect_model(ref: str, task: str | None, num_labels: int = 2, trust_remote_code: bool = False) -> ModelInfo:
    """Build the skeleton (meta device, cached by the engine) and read what the window shows."""
    from lora_studio.engine.models import demo_model_path, describe, infer_task, skeleton
    from lora_studio.engine.targets import resolve

    resolved = ref.strip() or demo_model_path()
    if task is None:
        task = infer_task(resolved, trust_remote_code) if ref.strip() else "classification"
    skel = skeleton(resolved, task, num_labels if task == "classification" else 2, trust_remote_code)
    arch = describe(skel)
    cells: dict[tuple[str, int], str] = {}
    owners: dict[str, set[str]] = {}
    for t in arch["targets"]:
        for site in resolve(skel, [t]):
            if site.layer is not None:
                cells[(t, site.layer)] = site.name
                owners.setdefault(site.name, set()).add(t)
    layers = arch.get("layers") or (max((l for _, l in cells), default=-1) + 1)
    fused = {name for name, ts in owners.items() if len(ts) > 1}
    return ModelInfo(ref.strip(), resolved, task, num_labels, arch, list(arch["targets"]), int(layers),
                     cells, fused, skel, devices())


def data_files(cfg, task: str) -> tuple[str, str]:
    """(train path, validation path) the config reads: the demo files when no path is given."""
    from lora_studio.engine.data import demo_path

    if cfg.path:
        return cfg.path, cfg.validation_path
    return demo_path(task)


def preview_data(cfg, task: str, n: int = 50) -> DataPreview:
    from lora_studio.engine import data

    path, _ = data_files(cfg, task)
    p = data.preview(path, n, task, cfg)
    return DataPreview(path, list(p.columns), list(p.rows), p.format, dict(p.roles), p.num_rows, p.problem)


def data_stats(cfg, task: str, model_ref: str, trust_remote_code: bool = False, seed: int = 42) -> DataStats:
    """Tokenize everything once, as training will (the task's objective prepares it: preference
    pairs have their own reader), for lengths, split sizes and label names."""
    from lora_studio.config import ModelConfig, RunConfig
    from lora_studio.engine.models import demo_model_path, load_tokenizer
    from lora_studio.engine.tasks import objective_for

    path, val = data_files(cfg, task)
    tok = load_tokenizer(model_ref or demo_model_path(), trust_remote_code)
    objective = objective_for(RunConfig(model=ModelConfig(task=task)))
    prepared = objective.prepare(replace(cfg, path=path, validation_path=val), tok, seed=seed)
    return DataStats(prepared.format, dict(prepared.roles), list(prepared.label_names),
                     prepared.stats.get("train"), prepared.stats.get("validation"))


@dataclass
class OpenedRun:
    path: str
    config: object  # RunConfig
    metrics: list[dict]  # metrics.jsonl
    checkpoint_step: int | None  # newest checkpoint (what Continue resumes from)


def read_run(path: str) -> OpenedRun:
    """A run folder's configuration, metrics and newest checkpoint."""
    from pathlib import Path

    from lora_studio.config import RunConfig
    from lora_studio.engine.errors import UserError
    from lora_studio.engine.runfolder import RUN_FILE, latest_checkpoint, read_metrics

    run = Path(path)
    if not (run / RUN_FILE).is_file():
        raise UserError(f"{run} is not a run folder (it has no run.toml): choose the folder a run wrote, "
                        "the one with metrics.jsonl and checkpoints/")
    ckpt = latest_checkpoint(run)
    return OpenedRun(str(run), RunConfig.load(run / RUN_FILE), read_metrics(run),
                     int(ckpt.name.split("-")[1]) if ckpt else None)


def load_run_config(path: str):
    """RunConfig.load in a worker: validation imports torch, which the GUI thread must not wait for."""
    from lora_studio.config import RunConfig

    return RunConfig.load(path)
