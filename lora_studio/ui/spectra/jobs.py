"""What the Spectra tab runs in worker threads, and the names it shows. Qt-free.

Each job takes and returns plain data (paths, dataclasses of numbers, numpy arrays): nothing
here touches a widget, and the engine is imported inside the jobs so that the tab opens even
when `engine/spectra.py` is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.engine import runfolder
from lora_studio.core.names import LOGICAL
from lora_studio.engine.runfolder import run_of, step_of

@dataclass
class Loaded:
    """The spectra of one adapter folder, as the view shows them."""

    source: str  # what the user opened (a run folder or an adapter folder)
    adapter: str  # the adapter folder analysed (the run itself or its newest checkpoint)
    title: str  # e.g. "run-3 · checkpoint step-40"
    step: int | None  # training step of that adapter, when known
    modules: list  # engine.spectra.ModuleSpectrum, plain numbers
    checkpoints: list[tuple[str, str]] = field(default_factory=list)  # (label, folder) to compare with


@dataclass
class Similarity:
    """Paper Eq. 4 between the shown adapter (a) and another (b), per module (name, target)."""

    a: str
    b: str
    b_title: str
    phi: dict  # (name, target) -> numpy array (r_a, r_b) in [0, 1]


def projection(name: str, target: str | None = None) -> str:
    """The logical projection (q, k, v, o, gate, up, down) a module holds, else its leaf name."""
    if target:
        return target
    from lora_studio.engine.targets import ARCHITECTURES

    seen = set()
    for table in ARCHITECTURES.values():
        if id(table) in seen:
            continue
        seen.add(id(table))
        for t in LOGICAL:
            rule = table.get(t)
            if isinstance(rule, str) and re.search(rf"(^|\.)({rule})$", name):
                return t
    from lora_studio.engine.families import GENERIC_DISPLAY

    for t, rule in GENERIC_DISPLAY.items():
        if re.search(rf"(^|\.)({rule})$", name):
            return t
    return name.rsplit(".", 1)[-1]


def projection_order(names) -> list[str]:
    """Projections in the paper's order (q k v o gate up down), others after, alphabetically."""
    names = set(names)
    return [t for t in LOGICAL if t in names] + sorted(names - set(LOGICAL))


def checkpoints(run_dir) -> list[tuple[str, str]]:
    """(label, folder) of every adapter a run holds: its checkpoints, by step, then its final adapter."""
    run = Path(run_dir)
    found = [(f"checkpoint step {step_of(p)}", str(p)) for p in runfolder.adapter_checkpoints(run)]
    if (run / runfolder.ADAPTER_WEIGHTS).is_file():
        found.append(("final adapter", str(run)))
    return found


def title_of(adapter: Path) -> str:
    step = step_of(adapter)
    return f"{run_of(adapter).name} · step {step}" if step is not None else adapter.name


def freshest(folder) -> Path:
    """The adapter folder to analyse for a run or adapter folder (its newest adapter)."""
    return runfolder.adapter_of(folder)


def _last_step(run: Path) -> int | None:
    steps = [r["step"] for r in runfolder.read_metrics(run) if "step" in r]
    return max(steps) if steps else None


# -- the jobs ----------------------------------------------------------------------------
def open_adapter(folder) -> Loaded:
    """Read and analyse the newest adapter of a run folder (or any PEFT LoRA folder)."""
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.spectra import analyse

    adapter = freshest(folder)
    modules = analyse(read_adapter(adapter))
    step = step_of(adapter)
    if step is None and (adapter / runfolder.METRICS_FILE).is_file():
        step = _last_step(adapter)
    others = [(t, p) for t, p in checkpoints(run_of(adapter)) if Path(p).resolve() != adapter.resolve()]
    return Loaded(str(folder), str(adapter), title_of(adapter), step, modules, others)


def with_amplification(adapter) -> list:
    """Spectra with the amplification factor (engine.spectra.with_amplification) of the freshest adapter."""
    from lora_studio.engine.spectra import with_amplification as amplification

    return amplification(freshest(adapter))


def compare(a, b) -> Similarity:
    """φ between the adapter `a` and another adapter or run folder `b` (paper Eq. 4)."""
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.spectra import similarity

    a_dir, b_dir = freshest(a), freshest(b)
    phi = similarity(read_adapter(a_dir), read_adapter(b_dir))
    return Similarity(str(a_dir), str(b_dir), title_of(b_dir), {k: v.detach().cpu().numpy() for k, v in phi.items()})


def resize_adapter(adapter, out_dir, energy: float) -> dict:
    from lora_studio.engine.spectra import resize

    return resize(freshest(adapter), out_dir, energy=energy)
