"""Where one training step of our engine spends its time (torch profiler, CPU).

    python benchmarks/profile_step.py [minilm|llama|gpt2] [--steps 2] [--engine ours|peft]

Builds the case as bench_train_step.py does, runs two warm-up steps, then profiles `--steps`
steps and prints the ops by self CPU time (totals are over all profiled steps).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    from torch.profiler import ProfilerActivity, profile

    import bench_train_step as B

    ap = argparse.ArgumentParser()
    ap.add_argument("case", nargs="?", default="minilm", choices=["minilm", "llama", "gpt2"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--engine", default="ours", choices=["ours", "peft"])
    a = ap.parse_args()
    model, x, ours, peft, _shape = B.build_case(a.case, "cpu")
    if a.engine == "ours":
        step = B.stepper(B.make_ours(model, ours), x, "fp32", "cpu", engine_loss=True)
    else:
        step = B.stepper(B.make_peft(model, peft), x, "fp32", "cpu")
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(a.steps):
            step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
