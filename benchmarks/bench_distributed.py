"""Scaling on CPU: 2 processes x 1 thread (torchrun, gloo) vs 1 process x 2 threads, same global batch.

    python benchmarks/bench_distributed.py [--steps 12] [--hidden 256] [--layers 4] [--batch 8]
                                           [--mode ddp|fsdp]

Both runs train the same run configuration through `lora-studio train` (the 2-process one with
`--nproc 2 --batch-size batch/2`), on a Llama built from a config (MiniLM's tokenizer, vocab
30522) and prompt/completion data of ~40 tokens. Reported: the median tokens/s of the steps after
the first two (metrics.jsonl; for 2 processes the tokens of both over process 0's step time) and
the scaling efficiency = tokens/s(2 x 1) / tokens/s(1 x 2). The goal is >= 0.9: a LoRA step
exchanges only the adapter's gradients. Communication time is not separated out here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def build(folder: Path, hidden: int, layers: int):
    import tiny

    cfg = tiny.configs()["llama"]
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = hidden, 4 * hidden, layers
    cfg.num_attention_heads, cfg.num_key_value_heads = max(4, hidden // 64), max(2, hidden // 128)
    tiny.configs = (lambda c=cfg: {"llama": c})  # model_folder builds from this config
    return tiny.model_folder(folder, "llama")


def run(model: Path, data: Path, out: Path, steps: int, batch: int, nproc: int, threads: int, mode: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lora_studio", "train", "--model", str(model), "--task", "causal-lm",
           "--data", str(data), "--max-length", "64", "--max-steps", str(steps), "--batch-size", str(batch),
           "--device", "cpu", "--precision", "fp32", "--eval-every", "0", "--save-every", "0",
           "--validation-split", "0", "--quiet", "--out", str(out)]
    if nproc > 1:
        cmd += ["--nproc", str(nproc), "--distributed", mode]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return statistics.median(r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=8, help="global batch (per process: batch / 2)")
    p.add_argument("--mode", default="ddp", choices=["ddp", "fsdp"])
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build(tmp / "model", a.hidden, a.layers)
        data = tmp / "d.jsonl"
        data.write_text("\n".join(json.dumps({"prompt": f"question {i}: " + "word " * (10 + i % 20),
                                              "completion": " the answer is " + "yes " * 8}) for i in range(256)))
        one = run(model, data, tmp / "one", a.steps, a.batch, 1, 2, a.mode)
        two = run(model, data, tmp / "two", a.steps, a.batch // 2, 2, 1, a.mode)
    print(f"llama hidden {a.hidden} x {a.layers} layers, global batch {a.batch}, {a.steps} steps, {a.mode}")
    print(f"1 process x 2 threads: {one:9.0f} tokens/s")
    print(f"2 processes x 1 thread: {two:9.0f} tokens/s")
    print(f"scaling efficiency: {two / one:.2f}")


if __name__ == "__main__":
    main()
