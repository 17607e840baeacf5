"""What the Spectra tab runs in worker threads, and the names it shows. Qt-free.

Each job takes and returns plain data (paths, dataclasses of numbers, numpy arrays): nothing
here touches a widget, and the engine is imported inside the jobs so that the tab opens even
when `engine/spectra.py` is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ADAPTER_FILE = "adapter_model.safetensors"
# display names of module leaves for architectures outside engine.targets' table
_LEAVES = {
    "q": r"(q_proj|query|q_lin|wq|to_q)", "k": r"(k_proj|key|k_lin|wk|to_k)", "v": r"(v_proj|value|v_lin|wv|to_v)",
    "o": r"(o_proj|out_proj|out_lin|wo|to_out|attention\.output\.dense|attention\.dense|c_proj)",
    "gate": r"(gate_proj|w1)", "up": r"(up_proj|fc1|c_fc|w3|intermediate\.dense|lin1)", "down": r"(down_proj|fc2|w2|lin2)",
}


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
    from lora_studio.engine.targets import ARCHITECTURES, LOGICAL

    seen = set()
    for table in ARCHITECTURES.values():
        if id(table) in seen:
            continue
        seen.add(id(table))
        for t in LOGICAL:
            rule = table.get(t)
            if isinstance(rule, str) and re.search(rf"(^|\.)({rule})$", name):
                return t
    for t, rule in _LEAVES.items():
        if re.search(rf"(^|\.)({rule})$", name):
            return t
    return name.rsplit(".", 1)[-1]


def projection_order(names) -> list[str]:
    """Projections in the paper's order (q k v o gate up down), others after, alphabetically."""
    logical = ("q", "k", "v", "o", "gate", "up", "down")
    names = set(names)
    return [t for t in logical if t in names] + sorted(names - set(logical))


def step_of(folder: Path) -> int | None:
    m = re.fullmatch(r"step-(\d+)", folder.name)
    return int(m.group(1)) if m else None


def checkpoints(run_dir) -> list[tuple[str, str]]:
    """(label, folder) of every adapter a run holds: its checkpoints, by step, then its final adapter."""
    run = Path(run_dir)
    found = []
    if (run / "checkpoints").is_dir():
        steps = [(step_of(p), p) for p in (run / "checkpoints").iterdir() if (p / ADAPTER_FILE).is_file()]
        found = [(f"checkpoint step {s}", str(p)) for s, p in sorted((s, p) for s, p in steps if s is not None)]
    if (run / ADAPTER_FILE).is_file():
        found.append(("final adapter", str(run)))
    return found


def run_of(adapter: Path) -> Path:
    """The run folder that holds `adapter` (RUN/checkpoints/step-N -> RUN), else `adapter`."""
    if step_of(adapter) is not None and adapter.parent.name == "checkpoints":
        return adapter.parent.parent
    return adapter


def title_of(adapter: Path) -> str:
    step = step_of(adapter)
    return f"{run_of(adapter).name} · step {step}" if step is not None else adapter.name


def freshest(folder) -> Path:
    """The adapter folder to analyse for a run or adapter folder (its newest adapter)."""
    from lora_studio.ui.compare import adapter_source

    folder = Path(folder)
    if (folder / "adapter_config.json").is_file() and not (folder / "checkpoints").is_dir():
        return folder  # any PEFT folder: read_adapter says precisely what is wrong with it
    return adapter_source(folder)[0]


def _last_step(run: Path) -> int | None:
    from lora_studio.engine.train import read_metrics

    steps = [r["step"] for r in read_metrics(run) if "step" in r]
    return max(steps) if steps else None


# -- the jobs ----------------------------------------------------------------------------
def open_adapter(folder) -> Loaded:
    """Read and analyse the newest adapter of a run folder (or any PEFT LoRA folder)."""
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.spectra import analyse

    adapter = freshest(folder)
    modules = analyse(read_adapter(adapter))
    step = step_of(adapter)
    if step is None and (adapter / "metrics.jsonl").is_file():
        step = _last_step(adapter)
    others = [(t, p) for t, p in checkpoints(run_of(adapter)) if Path(p).resolve() != adapter.resolve()]
    return Loaded(str(folder), str(adapter), title_of(adapter), step, modules, others)


def with_amplification(adapter) -> list:
    """Spectra with the paper's amplification factor: loads the base model named by the run (or
    by the adapter's config) on the CPU, so it can take a while for a large model."""
    from lora_studio.engine import UserError
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.models import demo_model_path, load_model
    from lora_studio.engine.spectra import analyse

    adapter = freshest(adapter)
    ad = read_adapter(adapter)
    run = run_of(adapter)
    ref, task, trust = ad.config.get("base_model_name_or_path") or "", None, False
    if (run / "run.toml").is_file():
        from lora_studio.config import RunConfig

        cfg = RunConfig.load(run / "run.toml")
        ref, task, trust = cfg.model.path or demo_model_path(), cfg.model.task, cfg.model.trust_remote_code
    if not ref:
        raise UserError(f"{adapter} does not name its base model (base_model_name_or_path): "
                        "the amplification factor needs the base weights W0")
    task = task or ("causal-lm" if ad.config.get("task_type") == "CAUSAL_LM" else "classification")
    model = load_model(ref, task, trust_remote_code=trust)
    return analyse(ad, base_weights=model)


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
