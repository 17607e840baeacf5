"""One RunConfig shared by the GUI, the CLI and checkpoints: typed, validated, saved as TOML.

Qt-free and torch-free (the GUI imports it before torch is loaded).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from lora_studio.core.errors import UserError
# the enumerations live in core/names.py; imported here too, as `from lora_studio.config import PRECISIONS`
from lora_studio.core.names import (DEVICES, DISTRIBUTED, FORMATS, HEADS, INITS, OPTIMIZERS,  # noqa: F401
                                    PRECISIONS, PREFERENCE_LOSSES, PRINCIPAL_INITS, QUANTIZE, SCHEDULES,
                                    SEED_MAX, TASKS, check_init, check_lora, parse_layers)


@dataclass
class ModelConfig:
    path: str = ""  # local folder or hub id; empty = the packaged demo MiniLM
    task: str = "classification"  # causal-lm | classification
    trust_remote_code: bool = False  # run code shipped with the model (off: only trusted sources)
    allow_pickle: bool = False  # accept .bin/.pt weights (pickles can run code)
    quantize: str = "none"  # base linear weights: none | nf4 (4-bit, QLoRA) | int8 (bitsandbytes)
    start_from: str = ""  # a run folder whose trained adapter this run starts from (--from; DPO's reference)

    def validate(self):
        if self.task not in TASKS:
            raise UserError(f"task {self.task!r} unknown: use one of {', '.join(TASKS)}")
        if self.quantize not in QUANTIZE:
            raise UserError(f"quantize {self.quantize!r} unknown: use one of {', '.join(QUANTIZE)}")


@dataclass
class LoraConfig:
    targets: list[str] = field(default_factory=lambda: ["q", "v"])  # projections to adapt
    layers: str = "all"  # layer selection, e.g. "0-5,8"
    rank: int = 8  # r
    alpha: float = 16.0  # scaling s = alpha / r
    dropout: float = 0.0  # adapter input dropout
    rslora: bool = False  # s = alpha / sqrt(r)
    dora: bool = False  # DoRA: train a magnitude per output row on top of the direction W0 + sBA
    init: str = "kaiming"  # kaiming | gaussian | pissa | olora (A, B from W0's SVD / QR; base = residual)

    def validate(self):
        self.targets, self.rank, self.alpha, self.dropout = check_lora(self.targets, self.rank, self.alpha,
                                                                        self.dropout)
        check_init(self.init, self.dora)
        self.layers = str(self.layers) if self.layers not in (None, "") else "all"
        parse_layers(self.layers)

    def to_spec(self, task: str = "causal-lm", **overrides):
        """The engine's LoraSpec for these settings: the one conversion (training, CLI, GUI).
        A classification run also trains its head (`modules_to_save`)."""
        from lora_studio.core.spec import LoraSpec

        kwargs = dict(targets=list(self.targets), rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                      layers=parse_layers(self.layers), rslora=self.rslora,
                      dora=self.dora, init=self.init, modules_to_save=list(HEADS) if task == "classification" else [])
        kwargs.update(overrides)
        return LoraSpec(**kwargs)


@dataclass
class DataConfig:
    path: str = ""  # file/folder/hub id; empty = the demo dataset of the task
    format: str = "auto"  # auto | text | prompt-completion | messages | classification
    text_column: str = ""  # overrides of the detected columns ("" = detect)
    prompt_column: str = ""
    completion_column: str = ""
    messages_column: str = ""
    label_column: str = ""
    validation_path: str = ""  # separate validation file; else a split of `path`
    validation_split: float = 0.1  # fraction held out when no validation file (0 = none)
    max_length: int = 256  # tokens; longer examples are truncated (and counted)
    chat_template: bool = True  # prompt/completion strings through the tokenizer's chat template when it has one

    def validate(self):
        if self.format not in FORMATS:
            raise UserError(f"data format {self.format!r} unknown: use one of {', '.join(FORMATS)}")
        if not 0 <= float(self.validation_split) < 1:
            raise UserError(f"validation split must be in [0, 1), got {self.validation_split}")
        if int(self.max_length) < 8:
            raise UserError(f"max length {self.max_length} is too short: use at least 8 tokens")
        if self.validation_path and not self.path:
            raise UserError("a validation file was given without training data: give --data too")


@dataclass
class TrainConfig:
    max_steps: int = 0  # optimizer steps; 0 = use epochs
    epochs: float = 3.0  # passes over the training data (when max_steps is 0)
    batch_size: int = 16  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    packing: bool = False  # causal LM: each micro-batch's examples end to end in one row, no padding (same loss)
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warmup; 0 with warmup_ratio 0 = none
    warmup_ratio: float = 0.06  # warmup as a fraction of the steps (used when warmup_steps is 0)
    schedule: str = "linear"  # linear | cosine | constant after warmup
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA if supported, else fp32)
    device: str = "auto"  # auto | cpu | cuda | mps
    seed: int = 42
    gradient_checkpointing: bool = False
    eval_every: int = 50  # steps between evaluations (0 = only at the end)
    save_every: int = 200  # steps between checkpoints (0 = only at stop/end)
    save_minutes: float = 5.0  # also checkpoint when this many minutes passed since the last (0 = off)
    log_every: int = 1  # steps between metric lines
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    optimizer: str = "adamw"  # adamw | adamw8bit | paged_adamw (the last two from bitsandbytes)
    loraplus_ratio: float = 1.0  # LoRA+: B's learning rate = ratio x A's (1 = plain LoRA; the paper uses 16)
    distributed: str = "auto"  # under torchrun: auto | ddp | fsdp (auto: DDP when the model fits one device)
    loss: str = "dpo"  # preference task: dpo | orpo | simpo
    beta: float = 0.0  # preference beta (0 = the loss's default: dpo 0.1, orpo 0.1, simpo 2.0)
    simpo_gamma: float = 0.5  # SimPO's target reward margin
    sample_every: int = -1  # causal LM: steps between greedy samples (samples.jsonl); -1 = at each evaluation, 0 = off
    sample_prompts: str = ""  # file of sample prompts, one per line (default: the first 4 held-out prompts)

    def validate(self):
        for name in ("batch_size", "grad_accum", "log_every"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.max_steps < 0 or (self.max_steps == 0 and not self.epochs > 0):
            raise UserError("give a positive number of steps (--max-steps) or epochs (--epochs)")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UserError(f"learning rate must be a finite number > 0, got {self.lr} (try 1e-4 to 1e-3)")
        if not float(self.loraplus_ratio) > 0 or not math.isfinite(self.loraplus_ratio):
            raise UserError(f"LoRA+ ratio must be > 0, got {self.loraplus_ratio} (1 = off, the paper uses 16)")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision {self.precision!r} unknown: use one of {', '.join(PRECISIONS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule {self.schedule!r} unknown: use one of {', '.join(SCHEDULES)}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise UserError(f"device {self.device!r} unknown: use one of {', '.join(DEVICES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer {self.optimizer!r} unknown: use one of {', '.join(OPTIMIZERS)}")
        if self.loss not in PREFERENCE_LOSSES:
            raise UserError(f"preference loss {self.loss!r} unknown: use one of {', '.join(PREFERENCE_LOSSES)}")
        if not 0 <= float(self.beta) < math.inf:
            raise UserError(f"beta must be a finite number >= 0 (0 = the loss's default), got {self.beta}")
        if not math.isfinite(float(self.simpo_gamma)):
            raise UserError(f"SimPO gamma must be a finite number, got {self.simpo_gamma}")
        if self.distributed not in DISTRIBUTED:
            raise UserError(f"distributed mode {self.distributed!r} unknown: use one of {', '.join(DISTRIBUTED)}")
        if self.sample_every < -1:
            raise UserError(f"sample-every must be >= 0 (0 = off), got {self.sample_every}")
        if self.eval_every < 0 or self.save_every < 0 or self.save_minutes < 0:
            raise UserError("eval-every, save-every and save-minutes must be >= 0")
        if self.warmup_steps < 0 or not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup steps must be >= 0 and warmup ratio in [0, 1), got {self.warmup_steps} "
                            f"and {self.warmup_ratio}")
        if not 0 <= self.seed <= SEED_MAX:
            raise UserError(f"seed must be between 0 and {SEED_MAX}, got {self.seed}")
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            raise UserError("max grad norm and weight decay must be >= 0")
        if self.keep_checkpoints < 1:
            raise UserError(f"keep checkpoints must be at least 1, got {self.keep_checkpoints}")
        for name in ("lr", "epochs", "weight_decay", "max_grad_norm", "warmup_ratio", "save_minutes"):
            if not math.isfinite(float(getattr(self, name))):
                raise UserError(f"{name.replace('_', ' ')} must be a finite number, got {getattr(self, name)}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = ""  # run folder

    def __post_init__(self):
        self.validate()

    def validate(self) -> "RunConfig":
        for section in (self.model, self.lora, self.data, self.train):
            section.validate()
        if self.train.packing and self.model.task == "classification":
            raise UserError("packing is for causal-LM and preference training, not classification (an example "
                            "is one label, not a sequence of targets): turn packing off")
        return self

    # -- TOML ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        sections = {f.name: f.type for f in fields(cls)}
        kwargs = {}
        for key, value in d.items():
            if key not in sections:
                raise UserError(f"unknown section [{key}] in the run configuration "
                                f"(known: {', '.join(sections)})")
            if key == "out":
                kwargs[key] = str(value)
                continue
            section_cls = {"model": ModelConfig, "lora": LoraConfig, "data": DataConfig, "train": TrainConfig}[key]
            known = {f.name: f for f in fields(section_cls)}
            bad = set(value) - set(known)
            if bad:
                raise UserError(f"unknown key(s) {', '.join(sorted(bad))} in [{key}] (known: {', '.join(known)})")
            kwargs[key] = section_cls(**{k: _coerce(known[k], v, key) for k, v in value.items()})
        return cls(**kwargs)

    def to_toml(self) -> str:
        import tomli_w

        d = self.to_dict()
        out = d.pop("out")
        return tomli_w.dumps({"out": out, **d})

    def save(self, path) -> Path:
        from lora_studio.core.atomic import atomic_write_bytes

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.to_toml().encode())
        return path

    @classmethod
    def load(cls, path) -> "RunConfig":
        path = Path(path)
        if path.is_dir():
            inside = path / "run.toml"
            hint = f": give --config {inside}" if inside.is_file() else \
                ": give a run configuration file (a run folder's run.toml, or one saved by the GUI)"
            raise UserError(f"config {path} is a folder, not a TOML file{hint}")
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        try:
            return cls.from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path} is not valid TOML: {e}") from None

    def replace(self, **sections) -> "RunConfig":
        """A copy with some fields changed: replace(train={"lr": 1e-4}, out="runs/x")."""
        d = self.to_dict()
        for key, value in sections.items():
            if isinstance(value, dict):
                d[key].update(value)
            else:
                d[key] = value
        return RunConfig.from_dict(d)


def _coerce(f, value, section):
    """TOML gives ints where floats are meant and vice versa; be lenient, then strict."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind in ("float", "int", "str") and isinstance(value, bool):  # `rank = true` is no rank 1
            raise ValueError
        if kind == "float":
            return float(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "str":
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"[{section}] {f.name} = {value!r} is not a valid {kind}") from None
    return value


def default_out_dir(root: str | os.PathLike = "runs") -> str:
    import time

    return str(Path(root) / time.strftime("run-%Y%m%d-%H%M%S"))
