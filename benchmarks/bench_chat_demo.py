"""The chat demo end to end: LoRA Studio (padded, --packing) vs TRL SFTTrainer + PEFT (padded,
packing=True), with the demo's own model, data and hyperparameters; every engine in its own
subprocess, one after another; then one evaluation of every engine's final adapter.

    OMP_NUM_THREADS=1 python benchmarks/bench_chat_demo.py --out DIR [--engines ours,ours-packed,trl,trl-packed]
    python benchmarks/bench_chat_demo.py --quick --out DIR     # 2 steps on a 2-layer cut: a smoke test

The settings are those `lora-studio train --demo chat` builds (its config is made by the CLI's own
parser): SmolLM2-135M-Instruct, resources/data/chat_train.jsonl, LoRA r 8 alpha 16 on q,k,v,o, no
dropout, 20 steps of 8, AdamW lr 2e-3, linear decay after 2 warmup steps, max length 128, gradient
clipping 1.0, seed 42, fp32 on the CPU, loss on the assistant turn (its text, <|im_end|> and the
newline after it). The demo's in-run evaluations and samples are off in every engine (TRL has none):
all held-out numbers come from the one evaluation after training. TRL gets the same per-step learning
rates (LoRA Studio's schedule as a LambdaLR: HF's linear warmup would start at lr 0) and gradient
checkpointing off (SFTConfig turns it on by default; LoRA Studio's run has it off). TRL's packing is
its default bfd: conversations bin-packed into rows of 128 tokens, so a TRL packed step of 8 rows
holds more examples than a step of ours (ours packs the micro-batch's own 8 examples).

Per engine: the load (model, data, adapter), the training (20 steps and the adapter saved), the
median seconds per step (the first left out), real tokens per second over steps 2..N (tokens of the
examples, never padding, counted at the decoder's input in both engines), examples per step, the
peak RSS of the engine's process, and the held-out numbers of `heldout()`: mean token NLL over the
assistant tokens of the 80 held-out conversations, and the demo's own behaviour metric
(engine.demo_chat.evaluate: greedy answers to the first 24 held-out prompts, in the new style / stop
on their own), on each engine's adapter, and on the base. With TRL packing the script also replays
TRL's first packed forward and compares it with the examples run one by one (are the rows isolated?).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

ENGINES = ("ours", "ours-packed", "trl", "trl-packed")
QUICK = {"steps": 2, "layers": 2, "prompts": 2, "tokens": 8, "rows": 8}


def demo_config(model: str, run: str, packing: bool, steps: int | None):
    """The RunConfig of `lora-studio train --demo chat --out RUN`, with evaluations, samples and timed
    checkpoints off, on `model` (the demo's own, or the quick cut)."""
    from lora_studio.cli import build_parser
    from lora_studio.cli_train import config_from_args

    argv = ["train", "--demo", "chat", "--out", run, "--eval-every", "0", "--sample-every", "0"]
    argv += ["--packing"] * packing + (["--max-steps", str(steps)] if steps else [])
    cfg = config_from_args(build_parser().parse_args(argv))
    return cfg.replace(model={"path": model}, data={"validation_path": "", "validation_split": 0.0},
                       train={"save_minutes": 0})


class Meter:
    """Counts what enters the decoder (LlamaModel.forward, which both engines call once per
    micro-batch): real tokens and examples; keeps the first call for the isolation check."""

    def __init__(self):
        from transformers.models.llama import modeling_llama

        self.tokens = self.examples = 0
        self.first = None
        self.marks = []  # (perf_counter, tokens, examples) at the end of each optimizer step
        forward = modeling_llama.LlamaModel.forward

        def counted(decoder, *args, **kw):
            ids, mask, pos = kw.get("input_ids"), kw.get("attention_mask"), kw.get("position_ids")
            if ids is not None:
                packed = pos is not None and mask is None and ids.shape[0] == 1
                self.tokens += int(mask.sum()) if mask is not None and mask.dim() == 2 else ids.numel()
                self.examples += int((pos[0] == 0).sum()) if packed else ids.shape[0]
                if self.first is None:
                    self.first = (decoder, {k: v.clone() if hasattr(v, "clone") else v for k, v in kw.items()})
            return forward(decoder, *args, **kw)

        modeling_llama.LlamaModel.forward = counted

    def start(self):
        """Training starts: what ran before (LoRA Studio's packing isolation check) is not counted."""
        self.tokens = self.examples = 0
        self.first = None

    def mark(self):
        self.marks.append((time.perf_counter(), self.tokens, self.examples))

    def summary(self) -> dict:
        t = [m[0] for m in self.marks]
        steps = [b - a for a, b in zip(t, t[1:])]  # step 2 on: the first step (warm-up) is left out
        ex = [b[2] - a[2] for a, b in zip([(0, 0, 0)] + self.marks, self.marks)]
        return {"steps": len(self.marks), "step_s": statistics.median(steps) if steps else None,
                "tokens_per_s": (self.marks[-1][1] - self.marks[0][1]) / (t[-1] - t[0]) if steps else None,
                "examples_per_step": statistics.median(ex), "tokens": self.tokens}


def isolation(first) -> float:
    """Max |difference| between the decoder's output for a packed row (the captured call, replayed
    with its own arguments) and for its examples run one at a time."""
    import torch

    decoder, kw = first
    with torch.no_grad():
        packed = decoder(**kw).last_hidden_state[0]  # (N, C)
        starts = (kw["position_ids"][0] == 0).nonzero().flatten().tolist() + [packed.shape[0]]
        diff = 0.0
        for a, b in zip(starts, starts[1:]):
            alone = decoder(input_ids=kw["input_ids"][:, a:b], use_cache=False).last_hidden_state[0]
            diff = max(diff, (packed[a:b] - alone).abs().max().item())
    return diff


def run_ours(cfg, meter: Meter) -> tuple[float, float, list]:
    from lora_studio.engine.events import Started, Step
    from lora_studio.engine.train import Finished, train

    t0 = time.perf_counter()
    clock, lrs = {}, []

    def on_event(ev):
        if isinstance(ev, Started):
            clock["started"] = time.perf_counter()
            meter.start()
        elif isinstance(ev, Step):
            meter.mark()
            lrs.append(ev.lr)

    ev = train(cfg, on_event)
    assert isinstance(ev, Finished), ev
    return clock["started"] - t0, time.perf_counter() - clock["started"], lrs


def run_trl(cfg, data: str, meter: Meter) -> tuple[float, float, list]:
    import transformers as T

    from bench_sft_trl import trl_trainer
    from lora_studio.engine.train import lr_lambda

    class Mark(T.TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            meter.start()

        def on_step_end(self, args, state, control, **kw):
            meter.mark()

    t, lora = cfg.train, cfg.lora
    t0 = time.perf_counter()
    trainer = trl_trainer(cfg.model.path, data, cfg.out, steps=t.max_steps, batch=t.batch_size, lr=t.lr,
                          packing=t.packing, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                          targets=[f"{x}_proj" for x in lora.targets], max_length=cfg.data.max_length,
                          lr_lambda=lr_lambda(t.schedule, t.warmup_steps, t.max_steps), seed=t.seed,
                          max_grad_norm=t.max_grad_norm, checkpointing=False, callbacks=[Mark()])
    t1 = time.perf_counter()
    trainer.train()
    trainer.save_model(cfg.out)
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    return t1 - t0, time.perf_counter() - t1, lrs


def engine_main(name: str, model: str, run: str, steps: int | None, result: str):
    """One engine, in this process: train, then write its numbers to `result`."""
    import torch  # noqa: F401 - imports are not the load
    import transformers  # noqa: F401

    from lora_studio.engine.demo_chat import data_paths

    meter = Meter()
    cfg = demo_config(model, run, name.endswith("packed"), steps)
    if name.startswith("ours"):
        load_s, train_s, lrs = run_ours(cfg, meter)
    else:
        import trl  # noqa: F401

        load_s, train_s, lrs = run_trl(cfg, data_paths()[0], meter)
    out = {"load_s": load_s, "train_s": train_s, "lrs": lrs,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **meter.summary()}
    if name == "trl-packed":  # after the peak was read: the replay is not the engine's memory
        out["packed_max_diff"] = isolation(meter.first)
    Path(result).write_text(json.dumps(out))


# -- the one evaluation of every adapter ----------------------------------------------------------
def nll(model, examples) -> float:
    """Mean token NLL over the labelled (assistant) tokens of `examples`, one example at a time."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            ids, labels = torch.tensor([e["input_ids"]]), torch.tensor(e["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()  # position t predicts token t + 1
            total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    return total / count


def heldout(adapter: str, prompts: int | None = -1, tokens: int = 48, rows: int | None = None) -> dict:
    """Held-out loss and the demo's behaviour metric of a plain PEFT adapter folder, adapted and base:
    {"adapted": {"loss", "style", "stopped", "n"}, "base": {…}}. `prompts` as demo_chat.evaluate's n."""
    from lora_studio.config import DataConfig
    from lora_studio.engine import demo_chat, tryit
    from lora_studio.engine.data import prepare

    m = demo_chat.evaluate(adapter, prompts, tokens)
    with tryit._LOCK:
        model, tok, _task, heads0, _source = tryit._load(adapter)  # the model evaluate() loaded (cached)
        data = DataConfig(path=demo_chat.data_paths()[1], format="messages", validation_split=0.0, max_length=1024)
        examples = prepare(data, tok, "causal-lm").train[:rows]
        adapted = nll(model, examples)
        with tryit._base(model, heads0):
            base = nll(model, examples)
    return {"adapted": {**m["adapted"], "loss": adapted}, "base": {**m["base"], "loss": base}, "rows": len(examples)}


def plain_adapter(src: Path, dst: Path, base: str) -> str:
    """The adapter files alone, naming `base`: every engine's adapter is loaded the same way."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "adapter_model.safetensors", dst)
    cfg = json.loads((src / "adapter_config.json").read_text())
    (dst / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": base}))
    return str(dst)


def cut_model(src: str, dst: Path, layers: int) -> str:
    """SmolLM2 cut to its first `layers` layers (tokenizer and chat template kept): the quick run's."""
    import transformers as T

    if not (dst / "config.json").is_file():
        config = T.AutoConfig.from_pretrained(src)
        config.num_hidden_layers = layers
        T.AutoModelForCausalLM.from_pretrained(src, config=config).save_pretrained(dst)
        T.AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


def table(results: dict, base: dict, load: tuple) -> str:
    rows = ["| engine | load s | train s | s/step (median) | real tokens/s | examples/step | peak RSS MiB | "
            "held-out loss | style | stops |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        a = r["heldout"]
        rows.append(f"| {name} | {r['load_s']:.1f} | {r['train_s']:.1f} | {r['step_s']:.2f} | "
                    f"{r['tokens_per_s']:,.0f} | {r['examples_per_step']:g} | {r['peak_rss_mib']:,.0f} | {a['loss']:.3f} | {a['style']:.0%} | "
                    f"{a['stopped']:.0%} |")
    rows.append(f"| base (no adapter) | | | | | | | {base['loss']:.3f} | {base['style']:.0%} | {base['stopped']:.0%} |")
    return "\n".join(rows) + f"\nload average at start {load[0]}, at end {load[1]}"


def main():
    from lora_studio.engine.demo_chat import chat_model_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="folder for the runs, the adapters and results.json")
    ap.add_argument("--model", help="the base (default: the chat demo's SmolLM2-135M-Instruct)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK}")
    ap.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one engine in this process
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.engine:
        return engine_main(a.engine, a.model, a.run, a.steps, os.path.join(a.out, f"{a.engine}.json"))
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = a.model or chat_model_path()
    q = QUICK if a.quick else {"steps": None, "prompts": -1, "tokens": 48, "rows": None}
    if a.quick:
        model = cut_model(model, out / "model", QUICK["layers"])
    load = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    results = {}
    for name in a.engines.split(","):
        run = out / "runs" / name
        shutil.rmtree(run, ignore_errors=True)
        cmd = [sys.executable, __file__, "--engine", name, "--model", model, "--run", str(run), "--out", str(out)]
        subprocess.run(cmd + (["--steps", str(q["steps"])] if q["steps"] else []), check=True)
        results[name] = json.loads((out / f"{name}.json").read_text())
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    bases = []
    for name, r in results.items():
        h = heldout(plain_adapter(out / "runs" / name, out / "adapters" / name, model), q["prompts"], q["tokens"],
                    q["rows"])
        r["heldout"], r["rows"] = h["adapted"], h["rows"]
        bases.append(h["base"])
    load.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    summary = {"engines": results, "base": bases[0], "base_same_everywhere": all(b == bases[0] for b in bases),
               "model": model, "quick": a.quick, "load_average": {"start": load[0], "end": load[1]},
               "threads": os.environ.get("OMP_NUM_THREADS")}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(table(results, bases[0], load))
    if "trl-packed" in results:
        print(f"TRL packed row vs its examples one by one: max |diff| {results['trl-packed']['packed_max_diff']:.2e}")


if __name__ == "__main__":
    main()
