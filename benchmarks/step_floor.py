"""The floor under a training step: the time of the GEMMs and attention kernels it must run.

    python benchmarks/step_floor.py [--cases llama,gpt2,minilm] [--reps 5]

For each case of bench_train_step.py, one step of PEFT (the peer) runs under a dispatch mode
that records every matrix product (mm, addmm, bmm) and every attention kernel (SDPA forward and
backward) with its shapes, strides and dtypes. Those calls are then replayed alone, on fresh
tensors of the same layout, and timed (the fastest of `--reps` replays of the whole list). Our
step has to run the same products: the same base weights times the same activations forward,
and their input gradients backward (no engine forms weight gradients of frozen weights), so
this is a time no engine can go under without changing the math. It is printed beside both
engines' measured steps (paired, as bench_train_step.py times them) and beside 0.8x PEFT's step,
the round-1 goal. Our step's own kernel calls (its head forms the logits in another layout)
are replayed too, as "our kernels alone".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import bench_train_step as B  # noqa: E402

aten = torch.ops.aten
KERNELS = {aten.mm.default, aten.addmm.default, aten.bmm.default,
           aten._scaled_dot_product_flash_attention_for_cpu.default,
           aten._scaled_dot_product_flash_attention_for_cpu_backward.default}


class Recorder(TorchDispatchMode):
    """Runs everything as usual and notes each kernel call's arguments' layout."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in KERNELS:
            layout = lambda a: ("T", tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor) else ("V", a)
            self.calls.append((func, [layout(a) for a in args], {k: layout(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def _tensor(spec):
    kind, *rest = spec
    if kind == "V":
        return rest[0]
    shape, stride, dtype = rest
    # the storage the layout spans (an expanded tensor, stride 0, spans one element per row)
    span = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0
    # finite values: the attention backward takes a logsumexp among them
    base = torch.randn(span).mul_(0.1).to(dtype) if dtype.is_floating_point else torch.zeros(span, dtype=dtype)
    return base.as_strided(shape, stride)


def replay_time(calls, reps: int) -> tuple[float, dict]:
    """Fastest time of the whole list of calls, and the time by kernel name in that replay."""
    args = [(f, [_tensor(a) for a in a_], {k: _tensor(v) for k, v in kw.items()}) for f, a_, kw in calls]
    best, split = float("inf"), {}
    for _ in range(reps + 1):  # the first is a warm-up
        by = {}
        t_all = 0.0
        for f, a, kw in args:
            t0 = time.perf_counter()
            f(*a, **kw)
            dt = time.perf_counter() - t0
            t_all += dt
            name = f.__name__.split(".")[0]
            by[name] = by.get(name, 0.0) + dt
        if t_all < best:
            best, split = t_all, by
    return best, split


def run(case: str, reps: int) -> dict:
    model, x, ours_kw, peft_kw, _ = B.build_case(case, "cpu")
    ours, theirs = B.make_ours(model, ours_kw), B.make_peft(model, peft_kw)
    s_ours, s_peft = B.stepper(ours, x, "fp32", "cpu", True), B.stepper(theirs, x, "fp32", "cpu")
    for _ in range(2):
        s_ours(), s_peft()
    rec, rec_ours = Recorder(), Recorder()
    with rec:
        s_peft()
    with rec_ours:
        s_ours()
    floor, split = replay_time(rec.calls, reps)
    floor_ours, _ = replay_time(rec_ours.calls, reps)
    t_ours, t_peft = [], []
    for i in range(reps):
        pair = [(s_ours, t_ours), (s_peft, t_peft)]
        for step, into in (pair if i % 2 == 0 else pair[::-1]):
            into.append(B.timed(step))
    mo, mp = statistics.median(t_ours), statistics.median(t_peft)
    return {"case": case, "calls": len(rec.calls), "floor_ms": floor * 1e3, "floor_ours_ms": floor_ours * 1e3, "split_ms": {k: v * 1e3 for k, v in split.items()},
            "ours_ms": mo * 1e3, "peft_ms": mp * 1e3, "goal_ms": 0.8 * mp * 1e3,
            "paired": statistics.median(o / p for o, p in zip(t_ours, t_peft)), "floor_over_peft": floor / mp}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="llama,gpt2,minilm")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    print(f"{torch.get_num_threads()} threads, GEMM peak {B.gemm_peak('cpu'):.0f} GFLOP/s (fp32), load {os.getloadavg()[0]:.1f}")
    print("| case | kernels | floor ms (GEMMs + attention, alone) | of which | ours ms/step | PEFT ms/step | ours/PEFT paired | "
          "goal 0.8x PEFT ms | floor / PEFT | our kernels alone ms | ours alone / PEFT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in a.cases.split(","):
        r = run(case, a.reps)
        split = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(r["split_ms"].items(), key=lambda kv: -kv[1]))
        print(f"| {case} | {r['calls']} | {r['floor_ms']:,.0f} | {split} | {r['ours_ms']:,.0f} | {r['peft_ms']:,.0f} | "
              f"{r['paired']:.3f} | {r['goal_ms']:,.0f} | {r['floor_over_peft']:.3f} | "
              f"{r['floor_ours_ms']:,.0f} | {r['floor_ours_ms'] / r['peft_ms']:.3f} |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
