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
MEMORY_FILE = "memory.json"  # the planner's estimate and the measured peak (engine/fit.py)
SAMPLES_FILE = "samples.jsonl"  # greedy answers to a few prompts at step 0 and at evaluations
CHAT_FILE = "chat.json"  # a chat run: try, Try it and samples go through the chat template
UNREADABLE_METRICS = "metrics.unreadable.txt"  # lines of metrics.jsonl a resume could not read
# what a run writes at its top level (an --overwrite removes these, its checkpoints/step-N folders,
# its TensorBoard files and a model card of ours, and nothing else)
RUN_FILES = (RUN_FILE, METRICS_FILE, LABELS_FILE, RUN_STATE_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS,
             "lora_studio.json", MEMORY_FILE, SAMPLES_FILE, UNREADABLE_METRICS, CHAT_FILE)
# the line every model card we write carries right after its front matter (and every Modelfile,
# first): a README.md without it is the user's, one that merely mentions lora-studio included,
# and is never replaced or removed
CARD_MARKER = "<!-- lora-studio:model-card (written by LoRA Studio; replaced when the export is redone) -->"
MODELFILE_MARKER = "# lora-studio:modelfile (written by LoRA Studio; replaced when the export is redone)"


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
    if not is_run(run) and not (run / RUN_STATE_FILE).is_file():
        raise UserError(f"{run} is neither a run folder nor a PEFT adapter folder (no {RUN_FILE}, no "
                        f"{ADAPTER_WEIGHTS}): give the --out folder of a run, or a folder with an adapter")
    raise UserError(f"{run} holds no adapter yet: train first (or wait for the first checkpoint)")


def adapter_of(folder) -> Path:
    """The adapter a folder stands for, the one rule (export, GGUF, spectra, inspect, Try it, the
    GUI): a PEFT adapter folder (or a checkpoint) itself; a run its freshest adapter, the newest
    checkpoint or the folder's top, by file time (`newest_adapter`, which also says which)."""
    folder = Path(folder)
    if (folder / ADAPTER_CONFIG).is_file() and not (folder / CHECKPOINTS).is_dir():
        return folder  # any PEFT folder: read_adapter says precisely what is wrong with it
    return newest_adapter(folder)[0]


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


def read_metrics(run_dir, skipped: list[int] | None = None) -> list[dict]:
    """The records of metrics.jsonl. A line that is not a JSON object (cut short by a kill, edited
    by hand) is left out, and its number added to `skipped`; the lines after it still count."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step", 0), (int, float)):
            out.append(record)
        elif skipped is not None:
            skipped.append(i)
    return out


def trim_metrics(run_dir, step: int) -> list[str]:
    """On resume from the checkpoint at `step`: keep the metrics logged up to it (the curve goes on
    from there) and drop the later ones. Unreadable lines do not cut the history: they are moved to
    metrics.unreadable.txt, and the notes returned say so."""
    from lora_studio.engine.atomic import atomic_write_bytes

    run_dir = Path(run_dir)
    skipped: list[int] = []
    records = read_metrics(run_dir, skipped)
    kept = [m for m in records if m.get("step", 0) <= step]
    notes = []
    if skipped:
        lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
        with open(run_dir / UNREADABLE_METRICS, "a", encoding="utf-8") as f:
            f.write("".join(lines[i - 1] + "\n" for i in skipped))
        shown = ", ".join(map(str, skipped[:5])) + (" …" if len(skipped) > 5 else "")
        notes.append(f"{METRICS_FILE}: {len(skipped)} unreadable line(s) (line {shown}) left out and kept in "
                     f"{UNREADABLE_METRICS}; the other {len(records)} records are kept")
    atomic_write_bytes(run_dir / METRICS_FILE, "".join(metrics_line(m) for m in kept).encode())
    return notes


def is_chat_run(folder) -> bool:
    """A run trained on conversations through its tokenizer's chat template (recorded in chat.json)."""
    return (run_of(Path(folder)) / CHAT_FILE).is_file()


def read_labels(run_dir) -> list[str] | None:
    path = Path(run_dir) / LABELS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass
class RunInfo:
    """What a run (or a plain PEFT adapter folder) says about its base: the one place for it."""

    base_model: str  # local folder (absolute) or hub id; "" when the folder does not say
    task: str  # causal-lm | classification
    labels: list[str] | None
    trust_remote_code: bool = False  # the run's own trust flags: every loader of its base honours them
    quantize: str = "none"
    allow_pickle: bool = False


def run_info(folder) -> RunInfo:
    folder = Path(folder)
    run = run_of(folder)
    labels = read_labels(run) or read_labels(folder)
    if is_run(run):
        from lora_studio.config import RunConfig

        cfg = RunConfig.load(run / RUN_FILE)
        task = "causal-lm" if cfg.model.task == "preference" else cfg.model.task  # its model is a causal LM
        return RunInfo(model_ref(cfg), task, labels, cfg.model.trust_remote_code, cfg.model.quantize,
                       cfg.model.allow_pickle)
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
def is_our_card(path) -> bool:
    """True for a README.md (or Modelfile) that LoRA Studio wrote: its marker line, exactly, within
    its first lines. Anything else is the user's."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [next(f, "") for _ in range(64)]
    except OSError:
        return False
    return any(line.rstrip("\r\n") in (CARD_MARKER, MODELFILE_MARKER) for line in head)


def remove_run_files(out: Path):
    """Remove what a run wrote in `out` (its files, checkpoints/step-N, TensorBoard files, a model
    card of ours) and nothing else: a user's files there stay, checkpoints/ too when it holds any."""
    out = Path(out)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if is_our_card(out / "README.md"):
        (out / "README.md").unlink()
    for p in out.glob("events.out.tfevents.*"):
        p.unlink()
    root = out / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and (step_of(p) is not None or p.name.startswith(".tmp-step-")):
                shutil.rmtree(p)
        try:
            root.rmdir()  # only when empty
        except OSError:
            pass


def prepare_new_run(out, overwrite: bool = False) -> Path:
    """Check (and create) the folder of a new run. An existing non-empty folder is refused unless
    it is a run and `overwrite`; then only that run's own files are removed, never anything else."""
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
        if not is_run(out):
            raise UserError(f"{out} holds files but is not a run folder (no {RUN_FILE}): --overwrite replaces "
                            "only an earlier run, so nothing was deleted; choose another --out folder")
        check_not_training(out)
        remove_run_files(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def discard_new_run(out: Path):
    """Undo `prepare_new_run` for a run refused before its first step (bad data, bad settings):
    its own files go, and the folder too when nothing else is in it, so the corrected command
    can use the same --out."""
    if checkpoints(out):
        return
    remove_run_files(out)
    try:
        out.rmdir()
    except OSError:
        pass


def is_protected(folder) -> bool:
    """A real run folder (run.toml, run_state.json, or a complete checkpoint): no export goes in it.
    A user's own `checkpoints/` folder does not make its parent one."""
    folder = Path(folder)
    return is_run(folder) or (folder / RUN_STATE_FILE).is_file() or bool(checkpoints(folder))


def is_export(folder) -> bool:
    """A folder an earlier export wrote (its `lora_studio_export.json`)."""
    return (Path(folder) / EXPORT_FILE).is_file()


EXPORT_FILE = "lora_studio_export.json"  # in every exported folder: what wrote it, and its files


def check_export_target(out, source, overwrite: bool = False, what: str = "export") -> Path:
    """An export (merge, resize, gguf, adapter copy) never writes into a run's folder or its own
    source, and never over existing files unless `overwrite`; a folder is only replaced when an
    earlier export wrote it (and then only its files)."""
    out = Path(out).expanduser()
    if out.name in ("", ".", ".."):  # `--out .`: the folder by its name
        out = out.resolve()
    src_run = run_of(Path(source)).resolve()
    target = out if out.is_dir() or out.suffix == "" else out.parent
    for p in (target.resolve(), *target.resolve().parents):
        if p == src_run or is_protected(p):
            raise UserError(f"{out} is inside the run folder {p} (a run's or the adapter's own folder): "
                            f"write the {what} to a new folder")
    writable = target
    while not writable.exists() and writable != writable.parent:
        writable = writable.parent
    if not os.access(writable, os.W_OK | os.X_OK):  # before a long merge, not after it
        raise UserError(f"cannot write the {what} to {out}: {writable} is not writable; choose a folder you can "
                        "write to")
    if out.exists():
        if out.is_file() and not overwrite:
            raise UserError(f"{out} exists: choose another name, or pass --overwrite to replace it")
        if out.is_dir() and any(out.iterdir()):
            if not overwrite:
                raise UserError(f"{out} exists and is not empty: choose a new folder, or pass --overwrite")
            if not is_export(out):
                raise UserError(f"{out} holds files that no earlier export wrote: --overwrite replaces only an "
                                f"earlier export, so nothing was deleted; write the {what} to a new folder")
    return out


def export_temp(out: Path) -> Path:
    """Where an export to `out` is written first: inside `out` when that folder exists (`--out .`,
    an earlier export), else beside it; `replace_export` then moves it into place."""
    out = Path(out)
    tmp = out / f".partial-{os.getpid()}" if out.is_dir() else out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def write_export_manifest(folder, what: str, files: list[str] | None = None, **extra):
    """EXPORT_FILE in an export folder: what it is and the files the export wrote (default: every
    file in `folder`, a temp folder), so that an --overwrite later removes those and nothing else."""
    from lora_studio.engine.atomic import atomic_write_bytes

    folder = Path(folder)
    files = sorted(set(files if files is not None else (p.name for p in folder.iterdir() if p.is_file()))
                   | {EXPORT_FILE})
    atomic_write_bytes(folder / EXPORT_FILE, json.dumps({"export": what, **extra, "files": files}, indent=2).encode())


def replace_export(tmp: Path, out: Path):
    """Move a finished export from its temp folder `tmp` to `out`. An earlier export there (see
    `check_export_target`) loses the files it wrote (listed in its EXPORT_FILE) and nothing else;
    the user's files beside them stay."""
    tmp, out = Path(tmp), Path(out)
    if tmp.parent != out and out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(tmp, out)
        return
    try:
        old = json.loads((out / EXPORT_FILE).read_text(encoding="utf-8")).get("files") or []
    except (OSError, ValueError, AttributeError):
        old = []
    for name in old:
        p = out / str(name)
        if p.parent == out and p.is_file() and (p.name != "README.md" or is_our_card(p)):
            p.unlink()
    for p in sorted(tmp.iterdir()):
        if p.name == "README.md" and (out / p.name).exists() and not is_our_card(out / p.name):
            continue  # the user's README.md stays
        os.replace(p, out / p.name)
    shutil.rmtree(tmp, ignore_errors=True)


def write_run_state(run_dir, state: str, step: int, total_steps: int, message: str = "", **extra):
    """run_state.json: running | finished | stopped | failed, so others (the Runs panel, a second
    process) can tell a finished run from a stopped or a killed one."""
    from lora_studio.engine.atomic import atomic_write_bytes

    record = {"state": state, "step": step, "total_steps": total_steps, "pid": os.getpid(),
              "host": socket.gethostname(), "group": os.environ.get("TORCHELASTIC_RUN_ID", ""),
              "updated": time.time(), "message": message, **extra}
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


def training_process(run_dir) -> dict | None:
    """The live process training `run_dir` right now ({"pid", "host"}), or None: the run is marked
    running by a process on this machine that still exists and is not this one (nor one of this
    torchrun group). A run marked running on another host cannot be checked from here: None."""
    try:
        st = json.loads((Path(run_dir) / RUN_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(st, dict) or st.get("state") != "running" or st.get("host") != socket.gethostname():
        return None
    pid = st.get("pid")
    group = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if pid == os.getpid() or (group and st.get("group") == group) or not _alive(pid):
        return None
    try:  # a pid reused by a process started after the run last wrote its state is not the run
        import psutil

        if psutil.Process(pid).create_time() > float(st.get("updated", 0)) + 1:
            return None
    except Exception:  # noqa: BLE001 - no psutil, or the process just ended: the pid check stands
        pass
    return {"pid": pid, "host": st.get("host")}


def check_not_training(run_dir):
    """Refuse (UserError) to resume, overwrite or continue a run that another live process is
    training: two writers would mix their checkpoints and metrics. For the CLI and the GUI."""
    live = training_process(run_dir)
    if live:
        raise UserError(f"{run_dir} is being trained right now by process {live['pid']} on {live['host']}: "
                        f"wait for it to finish or stop it (Ctrl-C in its terminal, or `kill -INT {live['pid']}`), "
                        "then resume")


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
