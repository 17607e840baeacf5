"""Dropout mask cost on a CPU: torch's bernoulli_, `rand >= p`, and engine.fast.keep_mask.

    python benchmarks/bench_dropout_mask.py [--shape 16,12,128,128] [--reps 10]

The default shape is MiniLM's attention probabilities at batch 16 x 128 tokens. Prints the
fastest of `--reps` timings of each (ms), after one warm-up.
"""

import argparse
import sys
from pathlib import Path

import torch

from timing import best_ms  # benchmarks/timing.py, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    from lora_studio.engine.fast import keep_mask

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="16,12,128,128")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--p", type=float, default=0.1)
    a = ap.parse_args()
    x = torch.empty(*(int(s) for s in a.shape.split(",")))
    print(f"shape {tuple(x.shape)}, p {a.p}, {torch.get_num_threads()} threads")
    print("| mask | ms |")
    print("|---|---|")
    for name, fn in (("bernoulli_ (torch dropout)", lambda: torch.empty_like(x).bernoulli_(1 - a.p)),
                     ("rand_like >= p", lambda: torch.rand_like(x) >= a.p),
                     ("keep_mask (16 bits per element)", lambda: keep_mask(x, a.p))):
        print(f"| {name} | {best_ms(fn, a.reps):.1f} |", flush=True)


if __name__ == "__main__":
    main()
