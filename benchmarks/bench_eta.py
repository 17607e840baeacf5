"""How good is the time-left estimate? The demo run through `engine.train` with an event listener:
at each Step the ETA it reports vs the time that really remained until Finished.

    python benchmarks/bench_eta.py [--max-steps 60] [--eval-every 20] [--threads 2]
    python benchmarks/bench_eta.py --max-steps 0 --eval-every 50   # the whole demo: 3 epochs, 135 steps

Prints one row per 10 % of the run (step, ETA, actual, error) and the largest |error| after
20 % of the run (issue 13: target within ±15 %). The actual remaining time runs to the Finished
event, so it includes the last evaluation and writing the adapter.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(max_steps: int, eval_every: int) -> tuple[list[tuple[float, object]], float]:
    from lora_studio.config import RunConfig
    from lora_studio.engine.events import Finished
    from lora_studio.engine.train import train

    cfg = RunConfig()
    cfg.train = dataclasses.replace(cfg.train, max_steps=max_steps, eval_every=eval_every, save_every=0,
                                    save_minutes=0, device="cpu")
    cfg.out = str(Path(tempfile.mkdtemp(prefix="bench-eta-")) / "run")
    seen: list[tuple[float, object]] = []
    result = train(cfg.validate(), lambda ev: seen.append((time.perf_counter(), ev)))
    end = time.perf_counter()
    assert isinstance(result, Finished), result
    return seen, end


def table(seen, end: float) -> list[tuple[int, int, float, float, float]]:
    """(step, total, eta s, actual s, error fraction) of every Step event."""
    from lora_studio.engine.events import Step

    rows = []
    for t, ev in seen:
        if isinstance(ev, Step) and ev.step < ev.total_steps:
            actual = end - t
            rows.append((ev.step, ev.total_steps, ev.eta, actual, (ev.eta - actual) / actual))
    return rows


def phases(seen) -> tuple[list[float], list[float]]:
    """Seconds of each evaluation (first Evaluating to its Eval) and between consecutive Steps."""
    from lora_studio.engine.events import Eval, Evaluating, Step

    evals, steps, began, last = [], [], None, None
    for t, ev in seen:
        if isinstance(ev, Evaluating) and began is None:
            began = t
        elif isinstance(ev, Eval) and began is not None:
            evals.append(t - began)
            began = None
        elif isinstance(ev, Step):
            if last is not None and began is None:
                steps.append(t - last)
            last = t
    return evals, steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    seen, end = run(a.max_steps, a.eval_every)
    rows = table(seen, end)
    total = rows[0][1]
    print(f"demo, {total} steps, eval every {a.eval_every}, {a.threads} threads: "
          f"{end - t0:.1f} s in all")
    print("| step | ETA (s) | actual left (s) | error |")
    print("|---:|---:|---:|---:|")
    marks = {max(1, round(total * k / 10)) for k in range(1, 10)}
    for step, _, eta, actual, err in rows:
        if step in marks:
            print(f"| {step} | {eta:.1f} | {actual:.1f} | {err:+.0%} |")
    evals, steps = phases(seen)
    print("evaluations (s): " + ", ".join(f"{e:.1f}" for e in evals) +
          f"; step to step (s): median {sorted(steps)[len(steps) // 2]:.2f}, first {steps[0]:.2f}")
    from lora_studio.engine.events import Eval

    last_eval = max(t for t, ev in seen if isinstance(ev, Eval))
    print(f"from the last Eval to Finished (saving the adapter): {end - last_eval:.2f} s")
    for step, _, eta, actual, err in rows[-3:]:
        print(f"  step {step}: ETA {eta:.2f} s, actual {actual:.2f} s ({err:+.0%})")
    late = [r for r in rows if 0.2 * total <= r[0] <= 0.9 * total]
    worst = max(late, key=lambda r: abs(r[4]))
    mean = sum(abs(r[4]) for r in late) / len(late)
    print(f"from 20 % to 90 % of the run: largest |error| {abs(worst[4]):.0%} (step {worst[0]}), "
          f"mean |error| {mean:.0%}")
    end_rows = [r for r in rows if r[0] > 0.9 * total]
    if end_rows:
        far = max(end_rows, key=lambda r: abs(r[2] - r[3]))
        print(f"last 10 %: largest error {far[2] - far[3]:+.2f} s (step {far[0]}, {far[4]:+.0%} of {far[3]:.2f} s)")


if __name__ == "__main__":
    main()
