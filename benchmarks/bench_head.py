"""The LM head + cross-entropy of a causal-LM step, forward and dL/dh, three ways:

    python benchmarks/bench_head.py [--rows 2048] [--reps 5]

- full: Hugging Face's way (B*T x V logits, cross_entropy, autograd), as PEFT's step runs it;
- row-major: our fused chunked kernel as it was before 2026-11-23 (hc W^T, logsumexp, then a
  second exp for the softmax);
- ours: `engine.loss.LinearCrossEntropy` now (one exp, W hc^T viewed transposed on CPUs).
All three see the same h, W, labels; the script checks they agree before timing. Minimum of
--reps runs, in ms, interleaved; shapes are (hidden, vocab) of real and benchmark models.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lora_studio.engine.loss import CHUNK, LinearCrossEntropy  # noqa: E402


def full(h, w, y):
    h = h.detach().requires_grad_()
    loss = F.cross_entropy(F.linear(h, w), y)
    return loss.detach(), torch.autograd.grad(loss, h)[0]


def row_major(h, w, y, chunk=CHUNK):
    n, total, grad_h = h.shape[0], torch.zeros(()), torch.empty_like(h)
    for i in range(0, n, chunk):
        hc, yc = h[i:i + chunk], y[i:i + chunk]
        logits = F.linear(hc, w)
        lse = torch.logsumexp(logits, dim=-1)
        total += (lse - logits.gather(1, yc[:, None]).squeeze(1)).sum()
        probs = logits.sub_(lse[:, None]).exp_()
        probs[torch.arange(len(yc)), yc] -= 1.0
        grad_h[i:i + chunk] = (probs @ w).div_(n)
    return total / n, grad_h


def ours(h, w, y):
    h = h.detach().requires_grad_()
    loss = LinearCrossEntropy.apply(h, w, None, y, h.shape[0], CHUNK)
    return loss.detach(), torch.autograd.grad(loss, h)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    print(f"{torch.get_num_threads()} threads, {a.rows} rows, chunk {CHUNK}")
    print("| hidden x vocab | full (HF) ms | row-major chunked ms | ours ms | ours / full | ours / row-major |")
    print("|---|---|---|---|---|---|")
    for c, v in ((512, 32000), (768, 50257), (2048, 32000), (256, 151936)):
        g = torch.Generator().manual_seed(0)
        h, w = torch.randn(a.rows, c, generator=g), torch.randn(v, c, generator=g) * 0.02
        y = torch.randint(0, v, (a.rows,), generator=g)
        ref = full(h, w, y)
        for fn in (row_major, ours):
            got = fn(h, w, y)
            torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got[1], ref[1], rtol=1e-4, atol=1e-9)
        times = {fn: [] for fn in (full, row_major, ours)}
        for _ in range(a.reps):
            for fn in times:
                t0 = time.perf_counter()
                fn(h, w, y)
                times[fn].append(time.perf_counter() - t0)
        f, r, o = (min(times[fn]) * 1e3 for fn in (full, row_major, ours))
        print(f"| {c} x {v} | {f:.0f} | {r:.0f} | {o:.0f} | {o / f:.3f} | {o / r:.3f} |", flush=True)


if __name__ == "__main__":
    main()
