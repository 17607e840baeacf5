"""GGUF export time and file size by type, for the demo model (MiniLM, a classifier) and a tiny Llama.

    PYTHONPATH=. python benchmarks/bench_gguf.py [--llama-cpp DIR]

Each row: one `export_merged_gguf` (merge, llama.cpp's converter, checks, verification in llama.cpp
where it applies) or one `write_adapter_gguf`, timed end to end, and the file's size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tiny  # noqa: E402
from lora_studio import LoraSpec, inject, save_adapter  # noqa: E402
from lora_studio.engine import gguf as G  # noqa: E402
from lora_studio.engine.models import demo_model_path, load_model  # noqa: E402


def adapter_run(root: Path, base: str, task: str, targets) -> Path:
    model = load_model(base, task)
    inject(model, LoraSpec(targets=targets, rank=8, alpha=16,
                           modules_to_save=["classifier"] if task == "classification" else []))
    tiny.randomize_adapters(model, scale=0.05)
    return save_adapter(model, root / f"run-{Path(base).name}", base)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        llama = str(tiny.llama_gguf_folder(root / "tiny-llama"))
        cases = [("MiniLM-L6 demo (classifier)", adapter_run(root, demo_model_path(), "classification", ["q", "v"])),
                 ("tiny Llama (2 x 64, vocab 400)", adapter_run(root, llama, "causal-lm", ["q", "k", "v", "o"]))]
        for name, run in cases:
            for typ in G.TYPES:
                t0 = time.perf_counter()
                r = G.export_merged_gguf(run, root / f"{run.name}-{typ}" / "m.gguf", type=typ, llama_cpp=a.llama_cpp)
                rows.append((name, f"merged {typ}", time.perf_counter() - t0, r.size, r.max_diff, r.verified))
            if "Llama" in name:
                for typ in ("f32", "f16"):
                    t0 = time.perf_counter()
                    r = G.write_adapter_gguf(run, root / f"{run.name}-a{typ}" / "a.gguf", type=typ)
                    rows.append((name, f"adapter {typ}", time.perf_counter() - t0, r.size, None, None))
    print("| model | file | export s | size | max abs Δ log p vs HF | verified |")
    print("|---|---|---:|---:|---:|---|")
    for name, kind, sec, size, diff, ok in rows:
        size_s = f"{size / 2**20:.2f} MiB" if size > 2**20 else f"{size / 2**10:.1f} KiB"
        print(f"| {name} | {kind} | {sec:.1f} | {size_s} | {'n/a' if diff is None else f'{diff:.2g}'} | "
              f"{'n/a' if ok is None else ok} |")


if __name__ == "__main__":
    main()
