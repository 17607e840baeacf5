"""Spectra of a 7B-sized adapter: analyse() (QR + r x r SVD) vs a dense SVD of every ΔW.

    python benchmarks/bench_spectra.py [--layers 32] [--d 4096] [--rank 16] [--dense 2] [--reps 5]

Random A (r x d), B (d x r) for layers x 4 projections (q, k, v, o), all d x d. analyse() runs on
every module (median of --reps), with and without the singular vectors. The dense baseline forms
ΔW = s·B A (d x d, fp32) and calls torch.linalg.svdvals on it; that takes seconds per module, so
only --dense modules are timed and the per-module time is scaled to all modules (the work per
module is identical). Prints a markdown table row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    from lora_studio.engine.adapters import AdapterModule
    from lora_studio.engine.spectra import analyse

    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dense", type=int, default=2, help="modules given the dense SVD (scaled to all)")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    if a.dense < 1:
        ap.error("--dense must be at least 1")
    g = torch.Generator().manual_seed(0)
    r, d, s = a.rank, a.d, 2.0
    mods = {}
    for i in range(a.layers):
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            name = f"model.layers.{i}.self_attn.{p}"
            mods[name] = AdapterModule(name, torch.randn(r, d, generator=g) / d ** 0.5,
                                       torch.randn(d, r, generator=g) * 0.01, r, 2.0 * r, s)
    n = len(mods)
    analyse(dict(list(mods.items())[:2]))  # warm-up (LAPACK init)
    def timed(**kw):
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            out = analyse(mods, **kw)
            times.append(time.perf_counter() - t)
        return statistics.median(times), out

    ours, result = timed()
    with_vectors, _ = timed(top_vectors=True)  # what resize and the GUI's vector views need
    dense, err = [], 0.0
    by_name = {sp.name: sp for sp in result}
    for name, m in list(mods.items())[: a.dense]:
        t = time.perf_counter()
        sv = torch.linalg.svdvals((m.B @ m.A) * s)  # (d, d) fp32
        dense.append(time.perf_counter() - t)
        ref = sv[:r].double()
        err = max(err, ((torch.tensor(by_name[name].singular_values) - ref).abs().max() / ref[0]).item())
    per = statistics.median(dense)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f} (other work "
          f"on the CPU slows the multi-threaded dense SVD most); {n} modules of {d} x {d}, r = {r}; "
          f"dense SVD timed on {len(dense)} module(s), scaled x{n}; max relative σ difference {err:.1e}")
    print("| adapter | modules | analyse() ms | analyse(top_vectors=True) ms | dense svdvals ms (per module) "
          "| dense / analyse() |")
    print("|---|---|---|---|---|---|")
    print(f"| {a.layers} layers x q,k,v,o, d = {d}, r = {r} | {n} | {ours * 1e3:.0f} | {with_vectors * 1e3:.0f} | "
          f"{per * n * 1e3:.0f} ({per * 1e3:.0f}) | {per * n / ours:.0f}x |")


if __name__ == "__main__":
    main()
