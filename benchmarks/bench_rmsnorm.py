"""transformers' LlamaRMSNorm vs engine/fast.py's fewer-pass one, forward + backward, paired.

    python benchmarks/bench_rmsnorm.py [--shape 4,512,512] [--reps 15]

Both on the same fp32 activation and upstream gradient; each repetition times one of each, the
one going first alternating. Prints the largest output and input-gradient differences, the
median times and the median of the per-repetition ratios (fast / transformers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from lora_studio.engine.fast import fuse_norms

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="4,512,512")
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()
    shape = tuple(int(s) for s in a.shape.split(","))
    torch.manual_seed(0)
    ref = LlamaRMSNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        ref.weight.add_(torch.randn(shape[-1]) * 0.1)
    ref.weight.requires_grad_(False)  # frozen, as in LoRA training
    fast = LlamaRMSNorm(shape[-1], eps=1e-6)
    fast.load_state_dict(ref.state_dict())
    fast.weight.requires_grad_(False)
    holder = torch.nn.Sequential(fast)
    assert fuse_norms(holder) == 1
    x0, g0 = torch.randn(shape), torch.randn(shape)

    def run(m):
        x = x0.clone().requires_grad_(True)
        y = m(x)
        y.backward(g0)
        return y.detach(), x.grad

    (ya, ga), (yb, gb) = run(ref), run(fast)
    print(f"max |diff|: output {(ya - yb).abs().max():.2e}, input gradient {(ga - gb).abs().max():.2e}")
    times = {"transformers": [], "fast": []}
    for i in range(a.reps):
        for name, m in ((("transformers", ref), ("fast", fast)) if i % 2 == 0 else (("fast", fast), ("transformers", ref))):
            t0 = time.perf_counter()
            run(m)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    paired = statistics.median(f / t for f, t in zip(times["fast"], times["transformers"]))
    print(f"shape {shape}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}: "
          f"transformers {med['transformers']:.1f} ms, fast {med['fast']:.1f} ms, fast / transformers {paired:.3f} (paired)")


if __name__ == "__main__":
    main()
