"""Held-out preference accuracy of a run's adapter (or of its base): how often the model prefers the
chosen answer of a pair.

    python benchmarks/preference_accuracy.py RUN_DIR [--data PAIRS.jsonl] [--pairs N] [--base]

For each held-out pair (default: the packaged preference demo's validation file), the model's log-prob
of the chosen and of the rejected answer (completion tokens only, through the chat template for
message lists, exactly as training tokenizes them). Printed: the fraction of pairs whose chosen answer
has the higher mean token log-prob (`preference_accuracy`, as logged in metrics.jsonl), the same with
summed log-probs, and the mean margin of the two (nats per token). No reference model: the numbers of
the SFT run before DPO and of the DPO run after it are directly comparable.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    from lora_studio.config import DataConfig, RunConfig
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.data import demo_path
    from lora_studio.engine.data_pref import collate_pairs, prepare_preference
    from lora_studio.engine.models import load_model, load_tokenizer
    from lora_studio.engine.preference import sequence_logps
    from lora_studio.engine.runfolder import model_ref

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--data", help="preference pairs (default: the packaged demo's held-out file)")
    ap.add_argument("--pairs", type=int, default=0, help="the first N pairs only (0: all)")
    ap.add_argument("--base", action="store_true", help="the run's base model, without its adapter")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--adapter", help="another adapter folder of the run (e.g. RUN_DIR/checkpoints/step-3)")
    ap.add_argument("--generate", type=int, default=0, help="also print greedy answers to the first N held-out prompts")
    a = ap.parse_args()
    cfg = RunConfig.load(os.path.join(a.run_dir, "run.toml"))
    ref = model_ref(cfg)
    tok = load_tokenizer(ref)
    path = a.data or demo_path("preference")[1]
    pairs = prepare_preference(DataConfig(path=path, validation_split=0.0, max_length=cfg.data.max_length), tok).train
    pairs = pairs[:a.pairs] if a.pairs else pairs
    model = load_model(ref, "causal-lm", dtype=torch.float32)
    if not a.base:
        load_adapter(model, a.adapter or a.run_dir)
    model.eval()
    mean_wins = sum_wins = 0
    margin = 0.0
    with torch.no_grad():
        for i in range(0, len(pairs), a.batch_size):
            chunk = pairs[i:i + a.batch_size]
            sums, counts = sequence_logps(model, collate_pairs(chunk, tok.pad_token_id))
            P = len(chunk)
            avg = sums / counts
            mean_wins += int((avg[:P] > avg[P:]).sum())
            sum_wins += int((sums[:P] > sums[P:]).sum())
            margin += float((avg[:P] - avg[P:]).sum())
    n = len(pairs)
    who = f"{ref} (base, no adapter)" if a.base else a.adapter or a.run_dir
    print(f"{who}: {n} held-out pairs from {path}")
    print(f"preference_accuracy (mean token log-prob) {mean_wins / n:.3f} ({mean_wins}/{n}); "
          f"summed log-prob {sum_wins / n:.3f}; mean margin {margin / n:+.3f} nats/token")
    if a.generate:
        from lora_studio.engine.generate import generate

        prompts = [[{"role": "user", "content": q}] for q in held_out_questions(path, a.generate)]
        for p, ans in zip(prompts, generate(model, tok, prompts, True, 48)):
            print(f"  {p[0]['content']!r} -> {ans.text!r} (stopped: {ans.stopped})")


def held_out_questions(path: str, n: int) -> list[str]:
    import json

    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()][:n]
    return [r["prompt"][-1]["content"] if isinstance(r["prompt"], list) else r["prompt"] for r in rows]


if __name__ == "__main__":
    main()
