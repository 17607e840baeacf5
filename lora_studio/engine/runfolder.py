"""The run folder: its file names, its newest checkpoint and adapter, and the rules for writing.

A run folder is itself a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)
plus run.toml (the RunConfig), metrics.jsonl, labels.json (classification), run_state.json
(running / finished / stopped / failed), TensorBoard files and checkpoints/step-N/. Everything
else asks this module; it imports neither torch nor Qt.

The rules (DESIGN.md): nothing a user made is deleted or overwritten without `overwrite`; an
export never writes into a run's folder; paths stored in a run are absolute, so it resumes and
merges from any directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from lora_studio.engine.errors import UserError

RUN_FILE = "run.toml"
METRICS_FILE = "metrics.jsonl"
LABELS_FILE = "labels.json"
STATE_FILE = "trainer_state.pt"  # inside a checkpoint: optimizer, scheduler, RNG, data position
RUN_STATE_FILE = "run_state.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CHECKPOINTS = "checkpoints"
# what a run writes at its top level (an --overwrite replaces these and nothing else)
RUN_FILES = (RUN_FILE, METRICS_FILE, LABELS_FILE, RUN_STATE_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS,
             "lora_studio.json", "README.md")


# -- reading ----------------------------------------------------------------------------------
def is_run(folder) -> bool:
    return (Path(folder) / RUN_FILE).is_file()


def step_of(checkpoint: Path) -> int | None:
    name = Path(checkpoint).name
    if name.startswith("step-") and name[5:].isdigit():
        return int(name[5:])
    return None


def checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints (with their trainer state), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if step_of(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(found, key=step_of)


def latest_checkpoint(run_dir) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def adapter_checkpoints(run_dir) -> list[Path]:
    """Checkpoints holding an adapter (for spectra and comparisons), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if step_of(p) is not None and (p / ADAPTER_WEIGHTS).is_file()),
                  key=step_of)


def newest_adapter(run_dir) -> tuple[Path, str]:
    """The freshest adapter of a run (its newest checkpoint or the run folder, by file time), or
    of a plain PEFT adapter folder, with a description for display."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is not a folder: give a run folder or a PEFT adapter folder")
    top = run / ADAPTER_WEIGHTS
    ckpts = adapter_checkpoints(run)
    if ckpts:
        newest = ckpts[-1]
        if not top.is_file() or (newest / ADAPTER_WEIGHTS).stat().st_mtime_ns > top.stat().st_mtime_ns:
            return newest, f"checkpoint {newest.name} of {run}"
    if top.is_file():
        return run, f"adapter in {run}"
    raise UserError(f"{run} holds no adapter yet: train first (or wait for the first checkpoint)")


def run_of(folder) -> Path:
    """The run folder a checkpoint belongs to (a folder that is not a checkpoint is its own)."""
    folder = Path(folder)
    if step_of(folder) is not None and folder.parent.name == CHECKPOINTS:
        return folder.parent.parent
    return folder


def json_safe(value):
    """Strict JSON: NaN and infinities become null (metrics.jsonl is read by other tools)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def metrics_line(record: dict) -> str:
    return json.dumps(json_safe(record), allow_nan=False) + "\n"


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            break
    return out


def read_labels(run_dir) -> list[str] | None:
    path = Path(run_dir) / LABELS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass
class RunInfo:
    """What a run (or a plain PEFT adapter folder) says about its base: the one place for it."""

    base_model: str  # local folder (absolute) or hub id; "" when the folder does not say
    task: str  # causal-lm | classification
    labels: list[str] | None
    trust_remote_code: bool = False
    quantize: str = "none"


def run_info(folder) -> RunInfo:
    folder = Path(folder)
    run = run_of(folder)
    labels = read_labels(run) or read_labels(folder)
    if is_run(run):
        from lora_studio.config import RunConfig

        cfg = RunConfig.load(run / RUN_FILE)
        task = "causal-lm" if cfg.model.task == "preference" else cfg.model.task  # its model is a causal LM
        return RunInfo(model_ref(cfg), task, labels, cfg.model.trust_remote_code,
                       getattr(cfg.model, "quantize", None) or getattr(cfg.train, "quantize", None) or "none")
    cfg_path = folder / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise UserError(f"{folder} is neither a run folder nor a PEFT adapter folder (no {ADAPTER_CONFIG})")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    task = "classification" if cfg.get("task_type") == "SEQ_CLS" else "causal-lm"
    return RunInfo(cfg.get("base_model_name_or_path") or "", task, labels)


def model_ref(config) -> str:
    """The base model of a RunConfig: its path, or the packaged demo model."""
    if config.model.path:
        return config.model.path
    if config.model.task != "classification":
        raise UserError("the demo model is an encoder (classification only): give a causal LM with --model")
    from lora_studio.engine.demo import demo_model_path

    return demo_model_path()


# -- paths --------------------------------------------------------------------------------------
def absolute(path: str) -> str:
    """A local path made absolute; a hub id (no such local path) is kept as it is."""
    if not path:
        return path
    p = Path(path).expanduser()
    if p.exists() or path.startswith((".", "/", "~")) or os.sep in path and p.parent.exists() and not _hub_like(path):
        return str(p.resolve())
    return path


def _hub_like(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not Path(parts[0]).exists()


def with_absolute_paths(config):
    """The RunConfig with its model, data and run folder paths absolute (stored as such)."""
    d = config.to_dict()
    d["model"]["path"] = absolute(d["model"]["path"])
    for key in ("path", "validation_path"):
        d["data"][key] = absolute(d["data"][key])
    if d["out"]:
        d["out"] = str(Path(d["out"]).expanduser().resolve())
    return type(config).from_dict(d)


# -- writing ------------------------------------------------------------------------------------
def prepare_new_run(out, overwrite: bool = False) -> Path:
    """Check (and create) the folder of a new run. An existing non-empty folder is refused unless
    `overwrite`; then only the previous run's own files are removed, never anything else."""
    if not str(out):
        raise UserError("no run folder: give --out DIR")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder: give --out a folder name")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            hint = f"continue it with `lora-studio train --resume {out}`, " if is_run(out) else ""
            raise UserError(f"{out} already holds files: {hint}choose another --out folder, "
                            "or pass --overwrite to replace the run in it")
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for p in out.glob("events.out.tfevents.*"):
            p.unlink()
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def discard_new_run(out: Path):
    """Undo `prepare_new_run` for a run refused before its first step (bad data, bad settings):
    its own files go, and the folder too when nothing else is in it, so the corrected command
    can use the same --out."""
    if checkpoints(out):
        return
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for p in out.glob("events.out.tfevents.*"):
        p.unlink()
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    try:
        out.rmdir()
    except OSError:
        pass


def check_export_target(out, source, overwrite: bool = False, what: str = "export") -> Path:
    """An export (merge, resize, gguf, adapter copy) never writes into a run's folder or its own
    source, and never over existing files unless `overwrite`."""
    out = Path(out).expanduser()
    src_run = run_of(Path(source)).resolve()
    target = out if out.is_dir() or out.suffix == "" else out.parent
    for p in (target.resolve(), *target.resolve().parents):
        if p == src_run or is_run(p) or (p / CHECKPOINTS).is_dir():
            raise UserError(f"{out} is inside the run folder {p} (a run's or the adapter's own folder): "
                            f"write the {what} to a new folder")
    if out.exists():
        if out.is_file() and not overwrite:
            raise UserError(f"{out} exists: choose another name, or pass --overwrite to replace it")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise UserError(f"{out} exists and is not empty: choose a new folder, or pass --overwrite")
    return out


def write_run_state(run_dir, state: str, step: int, total_steps: int, message: str = "", **extra):
    """run_state.json: running | finished | stopped | failed, so others (the Runs panel, a second
    process) can tell a finished run from a stopped or a killed one."""
    from lora_studio.engine.atomic import atomic_write_bytes

    record = {"state": state, "step": step, "total_steps": total_steps, "pid": os.getpid(),
              "host": socket.gethostname(), "updated": time.time(), "message": message, **extra}
    atomic_write_bytes(Path(run_dir) / RUN_STATE_FILE, json.dumps(json_safe(record), indent=1).encode())


def run_state(run_dir) -> dict:
    """The run's state, with `state` "killed" for a run marked running whose process is gone, and
    `resumable` when it has a checkpoint and did not finish."""
    run_dir = Path(run_dir)
    try:
        st = json.loads((run_dir / RUN_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        st = {"state": "unknown", "step": 0, "total_steps": 0}
    if st.get("state") == "running" and st.get("host") == socket.gethostname() and not _alive(st.get("pid")):
        st["state"] = "killed"
    st["resumable"] = st.get("state") != "finished" and latest_checkpoint(run_dir) is not None
    return st


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        import psutil

        return psutil.pid_exists(pid)
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
