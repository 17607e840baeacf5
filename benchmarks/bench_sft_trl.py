"""The chat fine-tune end to end: LoRA Studio (padded, packed) vs TRL SFTTrainer + PEFT (padded,
packed), on the same model, data, adapter and optimizer settings, in one process, one after another.

    python benchmarks/bench_sft_trl.py [--model DIR] [--data chat_train.jsonl] [--steps 6] [--batch 8]
                                       [--engines ours,ours-packed,trl,trl-packed]

Model: SmolLM2-135M-Instruct (the chat demo's; default: the converted copy in ~/.cache/lora-studio).
Data: the chat demo's resources/data/chat_train.jsonl (one user turn, one assistant turn per row).
Adapter: q,k,v,o, r = 16, alpha = 32, no dropout; AdamW, lr 2e-4, constant; fp32 on the CPU; loss on
the assistant turn only (ours: `messages` masks; TRL: the rows as conversational prompt/completion,
`completion_only_loss`). max_length 256 (no row is cut).
TRL runs with SFTConfig's default gradient checkpointing (on; ours is off): `trl_trainer`, shared
with bench_chat_demo.py (which turns it off), keeps it on here as the recorded numbers had it.

TRL's packing is its default `packing_strategy="bfd"`: best-fit-decreasing over the whole data
set into rows of max_length, so one of its steps holds more examples than a step of ours (which
packs only the micro-batch's own examples). Step times are therefore not comparable between
packed engines; real tokens per second are (tokens of the examples, never padding): ours from
metrics.jsonl, TRL's from `num_input_tokens_seen` counted without padding. The first step (warm-up)
is left out of every median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

SMOLLM2 = os.path.expanduser(os.environ.get("LORA_STUDIO_CACHE", "~/.cache/lora-studio")) + "/SmolLM2-135M-Instruct"
CHAT = os.path.join(os.path.dirname(__file__), "..", "resources", "data", "chat_train.jsonl")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def ours(model: str, data: str, steps: int, batch: int, packing: bool, out: str) -> dict:
    from lora_studio.config import RunConfig
    from lora_studio.engine.train import Finished, read_metrics, train

    cfg = RunConfig().replace(
        model={"path": model, "task": "causal-lm"},
        lora={"targets": ["q", "k", "v", "o"], "rank": 16, "alpha": 32, "dropout": 0.0},
        data={"path": data, "max_length": 256, "validation_split": 0.0},
        train={"max_steps": steps, "batch_size": batch, "lr": 2e-4, "schedule": "constant", "warmup_ratio": 0.0,
               "eval_every": 0, "save_every": 0, "save_minutes": 0, "precision": "fp32", "device": "cpu",
               "packing": packing},
        out=out)
    t0 = time.perf_counter()
    ev = train(cfg)
    wall = time.perf_counter() - t0
    assert isinstance(ev, Finished), ev
    rows = [m for m in read_metrics(out) if "loss" in m]
    times = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    return {"wall_s": wall, "step_s": statistics.median(times), "losses": [m["loss"] for m in rows],
            "tokens_per_s": statistics.median(m["tokens_per_s"] for m in rows[1:]),
            "padding": statistics.mean(m["padding"] for m in rows)}


def conversations(data: str):
    """The chat rows as TRL's conversational prompt/completion data set (the last turn is the completion)."""
    import datasets

    rows = [json.loads(line) for line in open(data, encoding="utf-8") if line.strip()]
    return datasets.Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])


def trl_trainer(model: str, data: str, out: str, *, steps: int, batch: int, packing: bool, lr: float = 2e-4,
                rank: int = 16, alpha: float = 32, dropout: float = 0.0, targets=TARGETS, max_length: int = 256,
                schedule: str = "constant", warmup: int = 0, lr_lambda=None, seed: int = 42,
                max_grad_norm: float = 1.0, checkpointing: bool = True, callbacks=()):
    """TRL's SFTTrainer over a PEFT LoraConfig: fp32 on the CPU, loss on the completion only
    (`completion_only_loss`), packing = TRL's default bfd. `lr_lambda` (step -> multiplier of lr)
    replaces HF's schedule where given: HF's linear warmup starts at lr 0, LoRA Studio's at lr/warmup.
    `checkpointing`: gradient checkpointing, on by default in SFTConfig."""
    import torch
    import transformers as T
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    class Trainer(SFTTrainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if lr_lambda is None or self.lr_scheduler is not None:
                return super().create_scheduler(num_training_steps, optimizer)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, lr_lambda)
            return self.lr_scheduler

    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                     lr_scheduler_type=schedule, warmup_steps=warmup, logging_steps=1, save_strategy="no", report_to=[],
                     packing=packing, max_length=max_length, use_cpu=True, dataloader_num_workers=0,
                     completion_only_loss=True, bf16=False, fp16=False, seed=seed, max_grad_norm=max_grad_norm,
                     gradient_checkpointing=checkpointing, include_num_input_tokens_seen="non_padding")
    m = T.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    return Trainer(model=m, args=args, train_dataset=conversations(data),
                   peft_config=LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                                          task_type="CAUSAL_LM"),
                   callbacks=list(callbacks))


def trl(model: str, data: str, steps: int, batch: int, packing: bool, out: str) -> dict:
    import transformers as T

    stamps, seen = [], []

    class Clock(T.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())
            seen.append(state.num_input_tokens_seen)

    trainer = trl_trainer(model, data, out, steps=steps, batch=batch, packing=packing, callbacks=[Clock()])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    tokens = [b - a for a, b in zip(seen, seen[1:])]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"wall_s": wall, "step_s": statistics.median(times), "losses": losses,
            "tokens_per_s": statistics.median(n / t for n, t in zip(tokens, times)), "padding": None}


def main():
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=SMOLLM2)
    ap.add_argument("--data", default=CHAT)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--engines", default="ours,ours-packed,trl,trl-packed")
    a = ap.parse_args()
    results = {}
    for name in a.engines.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            run = ours if name.startswith("ours") else trl
            results[name] = run(a.model, a.data, a.steps, a.batch, name.endswith("packed"), os.path.join(tmp, "run"))
        r = results[name]
        print(f"{name}: {json.dumps({k: v for k, v in r.items() if k != 'losses'})} losses "
              f"{[round(x, 4) for x in r['losses']]}", flush=True)
    load = os.getloadavg()
    print(f"\n{a.steps} steps, batch {a.batch}, {torch.get_num_threads()} threads, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("| engine | step s (median) | real tokens/s (median) | padding share | first loss | wall s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        pad = f"{r['padding']:.1%}" if r["padding"] is not None else "–"
        print(f"| {name} | {r['step_s']:.2f} | {r['tokens_per_s']:,.0f} | {pad} | {r['losses'][0]:.4f} | "
              f"{r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
