"""Would one GEMM for q/k/v (or gate/up, or the LoRA A matrices) beat separate ones here?

    python benchmarks/bench_gemm_shapes.py [--tokens 2048] [--hidden 512] [--inter 1376] [--rank 16]

The Llama-shaped case of bench_train_step.py (4x512 tokens, hidden 512, MLP 1376, r=16): each
line times the separate GEMMs against the fused one of the same total work, forward (x W^T) and
the backward's dL/dx (dY W), minimum of 7 runs, with the machine's large-matmul rate for scale.
"""

from __future__ import annotations

import argparse

import torch

from timing import best_ms


def fwd(m: int, k: int, n: int) -> float:
    """x (m, k) @ W^T, W (n, k) as stored by nn.Linear."""
    x, w = torch.randn(m, k), torch.randn(n, k)
    return best_ms(lambda: x @ w.t(), 7)


def bwd(m: int, k: int, n: int) -> float:
    """dY (m, n) @ W (n, k): the input gradient of the same layer."""
    dy, w = torch.randn(m, n), torch.randn(n, k)
    return best_ms(lambda: dy @ w, 7)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--inter", type=int, default=1376)
    ap.add_argument("--rank", type=int, default=16)
    a = ap.parse_args()
    t, h, i, r = a.tokens, a.hidden, a.inter, a.rank
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = 2 * 2048 ** 3 / best_ms(lambda: a @ b, 3) / 1e6
    print(f"{torch.get_num_threads()} threads; 2048^3 matmul: {peak:.0f} GFLOP/s")
    print("| GEMMs | separate ms | fused ms | fused / separate |")
    print("|---|---|---|---|")
    rows = [
        ("q, k, v forward (3 x N=h vs N=3h)", 3 * fwd(t, h, h), fwd(t, h, 3 * h)),
        ("q, k, v input grad (3 x K=h vs K=3h)", 3 * bwd(t, h, h), bwd(t, h, 3 * h)),
        ("gate, up forward", 2 * fwd(t, h, i), fwd(t, h, 2 * i)),
        ("gate, up input grad", 2 * bwd(t, h, i), bwd(t, h, 2 * i)),
        ("LoRA A of q, k, v forward (3 x N=r vs N=3r)", 3 * fwd(t, h, r), fwd(t, h, 3 * r)),
    ]
    for name, sep, fused in rows:
        print(f"| {name} | {sep:.2f} | {fused:.2f} | {fused / sep:.3f} |")


if __name__ == "__main__":
    main()
