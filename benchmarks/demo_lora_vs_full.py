"""The demo task: LoRA (q,v, r=8) vs full fine-tuning of the packaged MiniLM, same data and budget.

    python benchmarks/demo_lora_vs_full.py [--steps 135]

Both train for the same number of optimizer steps with the same batches (batch 16, seed 42) on
resources/data/demo_classification_train.jsonl and are scored on the held-out file. LoRA runs
through the engine (`engine.train.train`, the demo defaults: lr 1e-3); full fine-tuning uses the
same data pipeline and a plain AdamW loop over every parameter (lr 5e-5, the usual BERT value).
Prints held-out accuracy before/after, wall time, trainable parameters, and adapter vs model size.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def full_finetune(steps: int, lr: float, seed: int = 42) -> dict:
    from lora_studio.config import RunConfig
    from lora_studio.engine.data import collate, demo_path, prepare
    from lora_studio.engine.models import demo_model_path, load_model, load_tokenizer
    from lora_studio.engine.train import epoch_order, lr_lambda

    cfg = RunConfig()
    train_path, val_path = demo_path("classification")
    ref = demo_model_path()
    tok = load_tokenizer(ref)
    data = prepare(type(cfg.data)(path=train_path, validation_path=val_path, max_length=cfg.data.max_length),
                   tok, "classification", seed=seed)
    torch.manual_seed(seed)
    model = load_model(ref, "classification", id2label=dict(enumerate(data.label_names)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("linear", int(0.06 * steps), steps))

    def accuracy():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(data.validation), 32):
                b = collate(data.validation[i:i + 32], tok.pad_token_id)
                correct += (model(**b).logits.argmax(-1) == b["labels"]).sum().item()
        model.train()
        return correct / len(data.validation)

    before = accuracy()
    n, bs = len(data.train), cfg.train.batch_size
    per_epoch = math.ceil(n / bs)
    t0 = time.perf_counter()
    model.train()
    for step in range(steps):
        epoch, pos = divmod(step, per_epoch)
        order = epoch_order(n, seed, epoch)
        b = collate([data.train[i] for i in order[pos * bs:(pos + 1) * bs]], tok.pad_token_id)
        model(**b).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - t0
    return {"before": before, "after": accuracy(), "seconds": elapsed, "trainable": sum(p.numel() for p in params)}


def lora(steps: int) -> dict:
    from lora_studio.config import RunConfig
    from lora_studio.engine import train as T

    out = tempfile.mkdtemp(prefix="lora-demo-")
    cfg = RunConfig().replace(train={"max_steps": steps, "eval_every": steps}, out=out)
    events = []
    t0 = time.perf_counter()
    T.train(cfg, events.append)
    elapsed = time.perf_counter() - t0
    evals = [e for e in events if isinstance(e, T.Eval)]
    started = next(e for e in events if isinstance(e, T.Started))
    size = (Path(out) / "adapter_model.safetensors").stat().st_size
    steps_time = [e for e in events if isinstance(e, T.Step)][-1].elapsed
    return {"before": evals[0].accuracy, "after": evals[-1].accuracy, "seconds": steps_time,
            "wall_with_evals": elapsed, "trainable": started.trainable_params, "adapter_bytes": size}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=135)  # the demo's 3 epochs of 720 examples at batch 16
    ap.add_argument("--full-lr", type=float, default=5e-5)
    a = ap.parse_args()
    lo = lora(a.steps)
    fu = full_finetune(a.steps, a.full_lr)
    print(f"| method | trainable params | held-out acc. before | after | train time (s) | saved size |")
    print(f"|---|---|---|---|---|---|")
    print(f"| LoRA q,v r=8 (+ head) | {lo['trainable']:,} | {lo['before']:.1%} | {lo['after']:.1%} | "
          f"{lo['seconds']:.0f} | {lo['adapter_bytes'] / 2**20:.2f} MB adapter |")
    print(f"| full fine-tuning | {fu['trainable']:,} | {fu['before']:.1%} | {fu['after']:.1%} | "
          f"{fu['seconds']:.0f} | {fu['trainable'] * 4 / 2**20:.0f} MB model |")


if __name__ == "__main__":
    main()
