"""The paper's "no inference latency": forward time of the merged model vs the base model.

    python benchmarks/bench_merged_latency.py [--reps 21]

A Llama-shaped model (4 layers, hidden 512) and the packaged MiniLM, adapted on q,k,v,o with
r=16, merged and unloaded (plain nn.Linear again). Base, merged and unmerged (adapter applied
on the fly) forwards are timed interleaved; medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def cases():
    torch.manual_seed(0)
    llama = T.AutoModelForCausalLM.from_config(T.LlamaConfig(
        hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, vocab_size=32000))
    ids = torch.randint(0, 32000, (4, 256))
    yield "llama 4x512, batch 4x256", llama, {"input_ids": ids}
    from lora_studio.engine.models import demo_model_path

    bert = T.AutoModel.from_pretrained(demo_model_path())
    ids = torch.randint(1000, 30000, (16, 128))
    yield "MiniLM, batch 16x128", bert, {"input_ids": ids}


def main():
    from lora_studio import LoraSpec, inject
    from lora_studio.engine.lora import unload

    import tiny

    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=21)
    a = ap.parse_args()
    print("| model | base ms | merged ms | merged / base | (min) merged / base | unmerged adapter ms | unmerged / base "
          "| base copy / base (control) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, base, x in cases():
        base.eval()
        adapted = copy.deepcopy(base)
        inject(adapted, LoraSpec(targets=["q", "k", "v", "o"], rank=16, alpha=32))
        tiny.randomize_adapters(adapted)
        merged = unload(copy.deepcopy(adapted))
        # control: an untouched deep copy of the base model, i.e. the same weights in other memory;
        # its ratio to the base is what placement and noise alone do
        models = {"base": base, "merged": merged, "adapted": adapted, "copy": copy.deepcopy(base)}
        times = {k: [] for k in models}
        with torch.no_grad():
            for m in models.values():
                m(**x)
            keys = list(models)
            for rep in range(a.reps):
                for k in keys[rep % len(keys):] + keys[:rep % len(keys)]:  # rotate who goes first
                    m = models[k]
                    t0 = time.perf_counter()
                    m(**x)
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}  # the least-disturbed run: robust on a shared machine
        print(f"| {name} | {med['base']:.1f} | {med['merged']:.1f} | {med['merged'] / med['base']:.3f} | "
              f"{best['merged'] / best['base']:.3f} | {med['adapted']:.1f} | {med['adapted'] / med['base']:.3f} | "
              f"{med['copy'] / med['base']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
