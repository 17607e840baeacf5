"""Figures and extra numbers for docs/rank-study.md from a finished `lora-studio sweep` folder.

    python docs/rank_study_figures.py SWEEP_DIR [OUT_DIR]

Writes φ heatmaps (PNG, through engine/modelcard.png_bytes: no plotting library) and prints, per
module kind, φ on A's right-singular vectors (the paper's Eq. 4, as the sweep reports it), φ on
ΔW = sBA's right-singular vectors (the directions the trained update actually uses), and the
same statistic for two random subspaces (the chance level the paper's figures are read against).
"""

import json
import sys
from pathlib import Path

import torch

from lora_studio.engine.adapters import read_adapter
from lora_studio.engine.modelcard import png_bytes
from lora_studio.engine.sweep import kind, mean_phi


def _phi(V1, V2):
    """Eq. 4 from two row-orthonormal (r, in) bases, rows by σ descending."""
    M2 = (V1 @ V2.T) ** 2
    cum = M2.cumsum(0).cumsum(1)
    i = torch.arange(1, M2.shape[0] + 1, dtype=M2.dtype)[:, None]
    j = torch.arange(1, M2.shape[1] + 1, dtype=M2.dtype)[None, :]
    return cum / torch.minimum(i, j)


def _right(M, r):
    return torch.linalg.svd(M.double(), full_matrices=False)[2][:r]


def delta_phi(a_dir, b_dir):
    """φ between the top right-singular vectors of ΔW_a and ΔW_b, mean over layers per kind."""
    ma, mb = read_adapter(a_dir).modules, read_adapter(b_dir).modules
    groups = {}
    for name in ma:
        a, b = ma[name], mb[name]
        phi = _phi(_right(a.B @ a.A, a.r), _right(b.B @ b.A, b.r))
        groups.setdefault(kind(name, None), []).append(phi)
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def random_phi(r1, r2, d, trials=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sum(_phi(_right(torch.randn(r1, d, generator=g), r1), _right(torch.randn(r2, d, generator=g), r2))
               for _ in range(trials)) / trials


def heatmap(phi, cw, ch):
    """φ ∈ [0, 1] as dark blue (0) → yellow (1), each cell cw x ch pixels, i down, j across."""
    rows, cols = phi.shape
    lo, hi = (20, 30, 90), (250, 230, 40)
    pixels = []
    for i in range(rows):
        line = bytearray()
        for j in range(cols):
            t = float(min(max(phi[i, j], 0.0), 1.0))
            line += bytes(round(a + (b - a) * t) for a, b in zip(lo, hi)) * cw
        pixels += [bytearray(line) for _ in range(ch)]
    return png_bytes(pixels, cols * cw, rows * ch)


def main(sweep_dir, out_dir=None):
    doc = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    runs = {(r["rank"], r["seed"]): r["run_dir"] for r in doc["runs"]}
    ranks, seeds = sorted({r for r, _ in runs}), sorted({s for _, s in runs})
    big, d = ranks[-1], next(iter(read_adapter(runs[(ranks[0], seeds[0])]).modules.values())).A.shape[1]
    pairs = [(f"r={r} vs r={big}, seed {s}", runs[(r, s)], runs[(big, s)], r, big)
             for s in seeds for r in ranks[:-1] if (r, s) in runs and (big, s) in runs]
    pairs += [(f"r={r}, seed {seeds[0]} vs {s}", runs[(r, seeds[0])], runs[(r, s)], r, r)
              for r in ranks for s in seeds[1:] if (r, seeds[0]) in runs and (r, s) in runs]
    print(f"input size d = {d}; chance level of φ(i, j) for random subspaces ≈ max(i, j) / d")
    print("| pair | kind | A: φ(1,1) | A: φ(1,j=r_b) | A: mean diag i≤8 | ΔW: φ(1,1) | ΔW: φ(1,j=r_b) | ΔW: mean diag i≤8 | random φ(1,1) / diag |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    figs = {}
    for label, a, b, ra, rb in pairs:
        pa, pd = mean_phi(a, b), delta_phi(a, b)
        rnd = random_phi(ra, rb, d)
        n = min(ra, rb, 8)
        for k in pa:
            A = torch.tensor(pa[k])
            D = pd[k]
            print(f"| {label} | {k} | {A[0, 0]:.3f} | {A[0, -1]:.3f} | {A.diagonal()[:n].mean():.3f} | "
                  f"{D[0, 0]:.3f} | {D[0, -1]:.3f} | {D.diagonal()[:n].mean():.3f} | "
                  f"{rnd[0, 0]:.3f} / {rnd.diagonal()[:n].mean():.3f} |")
            figs[(label, k)] = (A, D, rnd)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for (label, k), (A, D, rnd) in figs.items():
            if label.startswith("r=8 vs") and "seed" in label and label.endswith(str(seeds[0])):
                for tag, m in (("A", A), ("dW", D), ("random", rnd)):
                    (out / f"fig3_{k}_{tag}.png").write_bytes(heatmap(m, 4, 12))
            if label.startswith(f"r={big},"):
                for tag, m in (("A", A), ("dW", D), ("random", rnd)):
                    (out / f"fig4_{k}_{tag}.png").write_bytes(heatmap(m, 2, 2))


if __name__ == "__main__":
    main(*sys.argv[1:])
