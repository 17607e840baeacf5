"""Padded vs packed micro-batches: the same examples, step time, real tokens/s, padding, peak memory.

    python benchmarks/bench_packing.py [--data ragged|chat|FILE.jsonl] [--model llama|PATH] [--batch 16]
                                       [--reps 6] [--max-length 512]

Data: `ragged` is a synthetic instruction set (prompt + completion, token lengths drawn from a
log-normal law between 16 and max-length, the prompt masked); `chat` is the chat demo's
resources/data/chat_train.jsonl (messages, loss on the assistant turns), tokenized by the model's
tokenizer through `data.prepare`, as a run does; any other JSONL goes through `prepare` too.
Model: `llama` is bench_train_step.py's Llama-shaped case (hidden 512, 4 layers, random weights,
the SmolLM2 tokenizer's vocabulary when a tokenizer is needed); a folder is loaded as a run loads it.

One model, one adapter (q,k,v,o r=16), fp32. Each repetition takes the next micro-batch of the
seeded order and times one optimizer step on it padded (`CausalLM`) and one packed
(`PackedCausalLM`, engine/packing.py), the one going first alternating. Before timing, the two
losses of the first micro-batch are compared. Reported per engine: median step time, real tokens
per second (padding never counted), the padding share of the positions computed, and the peak of
a step's transient tensor memory (bench_train_step.py's `tensor_peak`, from the profiler).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

SMOLLM2 = os.path.expanduser(os.environ.get("LORA_STUDIO_CACHE", "~/.cache/lora-studio")) + "/SmolLM2-135M-Instruct"
CHAT = os.path.join(os.path.dirname(__file__), "..", "resources", "data", "chat_train.jsonl")


def ragged_examples(n: int, max_length: int, vocab: int, seed: int = 0) -> list[dict]:
    """Prompt + completion examples with log-normal lengths (median ~ max_length / 5), the prompt
    (about a third) masked, as data.prepare makes them."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = int(min(max_length, max(16, rng.lognormvariate(math.log(max_length / 5), 0.8))))
        prompt = max(1, length // 3)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": [-100] * prompt + ids[prompt:]})
    return out


def file_examples(path: str, tokenizer, max_length: int) -> list[dict]:
    from lora_studio.config import DataConfig
    from lora_studio.engine.data import prepare

    return prepare(DataConfig(path=path, validation_split=0.0, max_length=max_length), tokenizer, "causal-lm").train


def build_model(name: str):
    import transformers as T

    if name == "llama":
        vocab = 49152  # the SmolLM2 tokenizer's, so that the chat data's ids fit
        cfg = T.LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                            num_key_value_heads=8, vocab_size=vocab, max_position_embeddings=2048)
        torch.manual_seed(0)
        return T.AutoModelForCausalLM.from_config(cfg), SMOLLM2
    from lora_studio.engine.models import load_model

    return load_model(name, "causal-lm", dtype=torch.float32, device=torch.device("cpu")), name


def main():
    from bench_train_step import tensor_peak

    from lora_studio import LoraSpec, inject
    from lora_studio.engine.fast import speed_up
    from lora_studio.engine.objective import CausalLM
    from lora_studio.engine.packing import PackedCausalLM, use_packed_attention
    from lora_studio.engine.setup import to_device

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="ragged", help="ragged | chat | a JSONL file")
    ap.add_argument("--model", default="llama", help="llama (Llama-shaped, random) or a model folder")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--no-memory", action="store_true", help="skip the profiler's memory replay")
    a = ap.parse_args()

    model, tok_path = build_model(a.model)
    if a.data == "ragged":
        examples = ragged_examples(a.batch * (a.reps + 1), a.max_length, model.config.vocab_size)
    else:
        from lora_studio.engine.models import load_tokenizer

        examples = file_examples(CHAT if a.data == "chat" else a.data, load_tokenizer(tok_path), a.max_length)
    inject(model, LoraSpec(targets=["q", "k", "v", "o"], rank=16, alpha=32))
    speed_up(model, "cpu")
    use_packed_attention(model)  # padded batches still take the model's own attention (no bounds)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    engines = {"padded": CausalLM(), "packed": PackedCausalLM()}
    order = list(range(len(examples)))
    random.Random(1).shuffle(order)
    batches = [[examples[i] for i in order[k * a.batch:(k + 1) * a.batch]] for k in range(len(order) // a.batch)]
    if len(batches) < 2:
        raise SystemExit(f"only {len(examples)} examples: fewer than two micro-batches of {a.batch}")

    def step(engine: str, examples_: list[dict]):
        obj = engines[engine]
        batch = to_device(obj.collate(examples_, 0), torch.device("cpu"))
        loss, _ = obj.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    with torch.no_grad():
        first = {k: float(e.loss(model, to_device(e.collate(batches[0], 0), torch.device("cpu")))[0])
                 for k, e in engines.items()}
    step("padded", batches[0]), step("packed", batches[0])  # warm up
    times = {k: [] for k in engines}
    tokens = {k: 0 for k in engines}
    positions = {k: 0 for k in engines}
    reps = min(a.reps, len(batches) - 1)
    for r in range(reps):
        b = batches[1 + r]
        for k in (("padded", "packed") if r % 2 == 0 else ("packed", "padded")):
            host = engines[k].collate(b, 0)
            tokens[k] += engines[k].tokens(host)
            positions[k] += engines[k].positions(host)
            t0 = time.perf_counter()
            step(k, b)
            times[k].append(time.perf_counter() - t0)
    mem = {} if a.no_memory else {k: tensor_peak(lambda k=k: step(k, batches[1])) for k in engines}
    lengths = [len(e["input_ids"]) for e in examples]
    load = os.getloadavg()
    print(f"data {a.data}: {len(examples)} examples, tokens mean {statistics.mean(lengths):.0f} / median "
          f"{statistics.median(lengths):.0f} / max {max(lengths)}; model {a.model}; batch {a.batch}; {reps} reps; "
          f"{torch.get_num_threads()} threads; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"first micro-batch loss: padded {first['padded']:.6f}, packed {first['packed']:.6f} "
          f"(|diff| {abs(first['padded'] - first['packed']):.2e})")
    print("| engine | step ms (median) | real tokens/s | padding share | peak step MB |")
    print("|---|---|---|---|---|")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in engines:
        tps = tokens[k] / sum(times[k])
        peak = f"{mem[k] / 2**20:.0f}" if mem else "–"
        print(f"| {k} | {med[k] * 1e3:.0f} | {tps:,.0f} | {1 - tokens[k] / positions[k]:.1%} | {peak} |")
    paired = statistics.median(p / q for p, q in zip(times["packed"], times["padded"]))
    print(f"packed / padded step time: {med['packed'] / med['padded']:.3f} (medians), {paired:.3f} (paired)")


if __name__ == "__main__":
    main()
