"""The LoRA paper's §7 study in one call: one run per (targets set, rank, seed), then the summary.

`run_sweep(config, out, ranks, …)` trains every point sequentially in this process under
`out/<targets>_r<rank>_s<seed>/` (each an ordinary run folder), reusing runs already finished and
resuming interrupted ones, then writes `out/sweep.json` and `out/report.md`:
- loss vs rank (Table 6), and with `fixed_budget` one rank per targets set chosen so that every
  set trains the same number of parameters as the first set at each given rank, ± one rank step
  (Table 5's protocol, counts from engine/budget.py);
- the subspace similarity φ (Eq. 4, engine/spectra.similarity) between the largest rank and each
  smaller one (Figure 3) and between seeds at the same rank (Figure 4), averaged over layers per
  module kind;
- the amplification factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F per rank and module kind (§7.3).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lora_studio.config import RunConfig
from lora_studio.engine.errors import UserError

SWEEP_FILE = "sweep.json"
REPORT_FILE = "report.md"


@dataclass
class Point:
    targets: list[str]
    rank: int
    seed: int
    budget_rank: int | None = None  # fixed budget: the first set's rank this point matches

    @property
    def name(self) -> str:
        return f"{'-'.join(self.targets)}_r{self.rank}_s{self.seed}"


def parse_ranks(text) -> list[int]:
    try:
        ranks = sorted({int(r) for r in str(text).split(",") if r.strip()})
    except ValueError:
        raise UserError(f"--ranks {text!r}: give positive integers separated by commas, e.g. 1,2,4,8") from None
    if not ranks or ranks[0] <= 0:
        raise UserError(f"--ranks {text!r}: give positive integers separated by commas, e.g. 1,2,4,8")
    return ranks


def parse_targets_sets(text: str | None, default: list[str]) -> list[list[str]]:
    if not text:
        return [list(default)]
    sets = [[t.strip() for t in part.split(",") if t.strip()] for part in text.split(";")]
    if any(not s for s in sets):
        raise UserError(f"--targets-sets {text!r}: sets separated by ';', projections by ',', e.g. \"q;v;q,v\"")
    return sets


def _spec(config: RunConfig, targets, rank):
    return config.lora.to_spec(config.model.task, targets=list(targets), rank=rank)


def _skeleton(config: RunConfig, num_labels: int = 2):
    from lora_studio.engine.models import skeleton
    from lora_studio.engine.runfolder import model_ref

    return skeleton(model_ref(config), config.model.task, num_labels,
                    trust_remote_code=config.model.trust_remote_code)


def trainable(config: RunConfig, targets, rank, model=None) -> int:
    from lora_studio.engine.budget import estimate

    return estimate(model if model is not None else _skeleton(config), _spec(config, targets, rank)).trainable_params


def plan_points(config: RunConfig, ranks: list[int], seeds: int = 1, targets_sets=None,
                fixed_budget: bool = False) -> list[Point]:
    """Every point of the sweep, in the order they run. Seeds are config.train.seed + 0, 1, …"""
    sets = targets_sets or [list(config.lora.targets)]
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    seed_list = [config.train.seed + i for i in range(seeds)]
    points = []
    if not fixed_budget:
        for ts in sets:
            for r in ranks:
                points += [Point(ts, r, s) for s in seed_list]
        return points
    model = _skeleton(config)
    for r in ranks:
        budget = trainable(config, sets[0], r, model)
        for ts in sets:
            # trainable(r) = c + k·r (adapter r·(in + out) per matrix, plus heads and DoRA's m)
            c1, c2 = trainable(config, ts, 1, model), trainable(config, ts, 2, model)
            k = c2 - c1
            rank = max(1, round((budget - (c1 - k)) / k))
            points += [Point(ts, rank, s, budget_rank=r) for s in seed_list]
    return points


def _record(config: RunConfig, p: Point, run_dir: Path, model) -> dict:
    from lora_studio.engine.runfolder import read_labels, read_metrics

    labels = read_labels(run_dir) if config.model.task == "classification" else None
    if labels is not None and len(labels) != 2:  # the head counted is the one trained: one row per label
        model = _skeleton(config, len(labels))
    rows = read_metrics(run_dir)
    losses = [m["loss"] for m in rows if m.get("loss") is not None]
    evals = [m["eval_loss"] for m in rows if m.get("eval_loss") is not None]
    accs = [m["accuracy"] for m in rows if m.get("accuracy") is not None]  # classification only
    return {"name": p.name, "targets": p.targets, "rank": p.rank, "seed": p.seed, "budget_rank": p.budget_rank,
            "run_dir": str(run_dir.resolve()), "trainable_params": trainable(config, p.targets, p.rank, model),
            "final_loss": losses[-1] if losses else None, "eval_loss": evals[-1] if evals else None,
            "accuracy": accs[-1] if accs else None}


def run_sweep(config: RunConfig, out, ranks: list[int], seeds: int = 1, targets_sets=None,
              fixed_budget: bool = False, on_event: Callable | None = None, control=None,
              overwrite: bool = False) -> dict:
    """Train every point (reusing finished runs, resuming stopped ones), then summarise. Returns
    the sweep.json document; `complete` is False when the user stopped it (rerun to continue)."""
    from lora_studio.engine.atomic import atomic_write_bytes, atomic_write_json
    from lora_studio.engine.events import Control, Failed, Finished, Status
    from lora_studio.engine.runfolder import RUN_FILE, latest_checkpoint, run_state, with_absolute_paths
    from lora_studio.engine.train import train

    # the runs store their paths absolute: so does the comparison below, so that the same command
    # with relative --model/--data, run again, continues the sweep
    config = with_absolute_paths(config)
    emit = on_event or (lambda e: None)
    control = control or Control()
    out = Path(out)
    state_path = out / SWEEP_FILE
    if out.is_dir() and any(out.iterdir()) and not state_path.is_file() and not overwrite:
        raise UserError(f"{out} exists and is not a sweep folder: choose a new --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads(state_path.read_text()) if state_path.is_file() else {}
    done = {r["name"]: r for r in previous.get("runs", [])}
    points = plan_points(config, ranks, seeds, targets_sets, fixed_budget)
    model = _skeleton(config)
    records = []
    header = {"ranks": ranks, "seeds": seeds, "targets_sets": targets_sets or [list(config.lora.targets)],
              "fixed_budget": fixed_budget, "base_config": config.to_dict()}

    def save(complete: bool, extra=None):
        atomic_write_json(state_path, {**header, "complete": complete, "runs": records, **(extra or {})})

    for i, p in enumerate(points):
        run_dir = out / p.name
        cfg = config.replace(lora={"targets": p.targets, "rank": p.rank}, train={"seed": p.seed},
                             out=str(run_dir.resolve()))
        if (run_dir / RUN_FILE).is_file() and RunConfig.load(run_dir / RUN_FILE).to_dict() != cfg.to_dict():
            raise UserError(f"{run_dir} was trained with other settings: use a new --out for a different sweep")
        # finished with these settings (checked above), also when an earlier sweep in this folder
        # had other --ranks/--seeds and so did not list it
        if (run_dir / RUN_FILE).is_file() and (p.name in done or run_state(run_dir)["state"] == "finished"):
            emit(Status(f"[{i + 1}/{len(points)}] {p.name}: finished before, reused"))
            records.append(_record(config, p, run_dir, model))
            continue
        resume = run_dir if latest_checkpoint(run_dir) is not None and (run_dir / RUN_FILE).is_file() else None
        emit(Status(f"[{i + 1}/{len(points)}] {p.name}: {'resuming' if resume else 'training'}"))
        # a folder without a checkpoint is this sweep's own run killed early: start it again
        result = train(cfg, emit, control, resume=resume, overwrite=resume is None)
        if isinstance(result, Failed):
            save(False)
            raise UserError(f"sweep run {p.name} failed: {result.message}")
        if isinstance(result, Finished) and result.stopped:
            save(False)
            return {**header, "complete": False, "runs": records}
        records.append(_record(config, p, run_dir, model))
        save(False)
    emit(Status("sweep: comparing subspaces and amplification"))
    summary = summarize(config, records)
    save(True, summary)
    doc = {**header, "complete": True, "runs": records, **summary}
    atomic_write_bytes(out / REPORT_FILE, report(doc).encode())
    return doc


# -- summary ----------------------------------------------------------------------------------
def kind(name: str, label: str | None) -> str:
    """The module kind φ and amplification are averaged over: the leaf name (q_proj, query, …),
    or the logical slice of a fused module (c_attn[q])."""
    leaf = name.rsplit(".", 1)[-1]
    return f"{leaf}[{label}]" if label else leaf


def mean_phi(a_dir, b_dir) -> dict[str, list[list[float]]]:
    """φ(i, j) (Eq. 4) between two runs' A matrices, averaged over layers per module kind."""
    from lora_studio.engine.spectra import similarity

    groups: dict[str, list] = {}
    for (name, label), phi in similarity(a_dir, b_dir).items():
        groups.setdefault(kind(name, label), []).append(phi)
    return {k: (sum(v) / len(v)).tolist() for k, v in sorted(groups.items())}


def amplification(run_dir, base_weights) -> dict[str, float]:
    from lora_studio.engine.spectra import analyse

    groups: dict[str, list[float]] = {}
    for s in analyse(run_dir, base_weights):
        if s.amplification is not None:
            groups.setdefault(kind(s.name, s.target), []).append(s.amplification)
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def summarize(config: RunConfig, records: list[dict]) -> dict:
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.models import load_model
    from lora_studio.engine.spectra import weights_of
    from lora_studio.engine.runfolder import model_ref

    base = load_model(model_ref(config), config.model.task, allow_pickle=config.model.allow_pickle,
                      trust_remote_code=config.model.trust_remote_code)
    names = sorted({n for r in records for n in read_adapter(r["run_dir"]).modules})
    W0 = weights_of(base, names)  # the original base (PiSSA/OLoRA runs are saved against it too)
    del base
    by = {}
    for r in records:
        by.setdefault(("-".join(r["targets"]), r["seed"]), []).append(r)
    ranks_vs_largest, seeds_pairs = [], []
    for (ts, seed), runs in by.items():
        runs = sorted(runs, key=lambda r: r["rank"])
        big = runs[-1]
        for small in runs[:-1]:
            ranks_vs_largest.append({"targets": ts, "seed": seed, "rank_a": small["rank"], "rank_b": big["rank"],
                                     "phi": mean_phi(small["run_dir"], big["run_dir"])})
    seeds = sorted({r["seed"] for r in records})
    if len(seeds) > 1:
        for r in records:
            if r["seed"] != seeds[0]:
                continue
            for other in records:
                if other["seed"] != seeds[0] and other["targets"] == r["targets"] and other["rank"] == r["rank"]:
                    seeds_pairs.append({"targets": "-".join(r["targets"]), "rank": r["rank"], "seed_a": r["seed"],
                                        "seed_b": other["seed"], "phi": mean_phi(r["run_dir"], other["run_dir"])})
    amp = [{"targets": "-".join(r["targets"]), "rank": r["rank"], "seed": r["seed"],
            "amplification": amplification(r["run_dir"], W0)} for r in records]
    return {"similarity": ranks_vs_largest, "seed_similarity": seeds_pairs, "amplification": amp}


# -- report -----------------------------------------------------------------------------------
def _num(x, fmt=".4f"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _diag(phi: list[list[float]], k: int = 8) -> str:
    n = min(len(phi), len(phi[0]) if phi else 0, k)
    return " ".join(f"{phi[i][i]:.2f}" for i in range(n))


def report(doc: dict) -> str:
    lines = ["# Rank study", "",
             f"Model `{doc['base_config']['model']['path'] or 'demo MiniLM'}`, task {doc['base_config']['model']['task']}, "
             f"ranks {doc['ranks']}, {doc['seeds']} seed(s), targets sets "
             f"{' ; '.join(','.join(t) for t in doc['targets_sets'])}"
             + (", fixed parameter budget (LoRA paper Table 5 protocol)" if doc["fixed_budget"] else "") + ".", "",
             "## Loss vs rank (Table 6)", "",
             "| targets | rank | seed | trainable params | final train loss | eval loss | eval accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        lines.append(f"| {','.join(r['targets'])} | {r['rank']} | {r['seed']} | {r['trainable_params']:,} | "
                     f"{_num(r['final_loss'])} | {_num(r['eval_loss'])} | {_num(r.get('accuracy'), '.1%')} |")
    if doc["fixed_budget"]:
        lines += ["", "## Equal trainable parameters (Table 5)", "",
                  "| budget (first set at rank) | targets | rank | trainable params | eval loss (mean over seeds) |",
                  "|---:|---|---:|---:|---:|"]
        groups: dict = {}
        for r in doc["runs"]:
            groups.setdefault((r["budget_rank"], ",".join(r["targets"]), r["rank"], r["trainable_params"]), []).append(r)
        for (b, ts, rank, n), rs in groups.items():
            ev = [x["eval_loss"] for x in rs if x["eval_loss"] is not None]
            lines.append(f"| r={b} | {ts} | {rank} | {n:,} | {_num(sum(ev) / len(ev) if ev else None)} |")
    lines += ["", "## Subspace similarity between ranks (Figure 3)", "",
              "φ(i, i) of the paper's Eq. 4 for i = 1 … min(rank, 8): 1 means the top-i directions of the "
              "smaller rank's A lie in the top-i of the larger rank's (mean over layers).", ""]
    for s in doc.get("similarity", []):
        for k, phi in s["phi"].items():
            lines.append(f"- {s['targets']} seed {s['seed']}, r={s['rank_a']} vs r={s['rank_b']}, {k}: {_diag(phi)}")
    if doc.get("seed_similarity"):
        lines += ["", "## Subspace similarity between seeds (Figure 4)", ""]
        for s in doc["seed_similarity"]:
            for k, phi in s["phi"].items():
                lines.append(f"- {s['targets']} r={s['rank']}, seeds {s['seed_a']} vs {s['seed_b']}, {k}: {_diag(phi)}")
    lines += ["", "## Amplification factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F (§7.3)", ""]
    for a in doc.get("amplification", []):
        vals = ", ".join(f"{k} {v:.2f}" for k, v in a["amplification"].items())
        lines.append(f"- {a['targets']} r={a['rank']} seed {a['seed']}: {vals}")
    return "\n".join(lines) + "\n"
