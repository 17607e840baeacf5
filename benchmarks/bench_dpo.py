"""One DPO step of LoRA Studio vs TRL's DPOTrainer, on the same model and batch, interleaved.

    python benchmarks/bench_dpo.py [--model PATH | --layers 30] [--pairs 4] [--seq 256] [--reps 9] [--device cpu|cuda]

Both engines adapt a copy of the same base (q, v; rank 8, alpha 16) and train on the same batch of
`--pairs` preference pairs (chosen rows, then rejected; the first quarter of each row is prompt):
ours is engine/preference.py's `preference_loss` (reference = adapters bypassed, log-probs through
the chunked fused head), TRL's is `DPOTrainer._compute_loss` on a PEFT model with `ref_model=None`
(its reference = `disable_adapter()`, its fused LM head), as users of TRL run it. A step is forward
(reference and policy), backward, AdamW step. Each repetition times one step of each, back to
back, the one going first alternating; reported are the medians and the median of the paired
ratios. Peak memory is a step's transient tensor memory (CUDA: max_memory_allocated; CPU: the
profiler's memory timeline, benchmarks/bench_train_step.tensor_peak). The machine's load average
is printed before and after (a shared machine slows both engines alike, the paired ratio least).

Default model: SmolLM2-135M's shape (Llama, hidden 576, 30 layers, vocabulary 49152) with random
weights, built from its config (no download); `--model` takes a local folder instead.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import torch
import transformers as T

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def smollm2_shape(layers: int = 30):
    cfg = T.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=layers, num_attention_heads=9,
                        num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True,
                        rope_theta=100000.0, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return T.AutoModelForCausalLM.from_config(cfg)


def make_batch(vocab: int, pairs: int, seq: int, device: str) -> dict:
    """(2P, T): chosen rows then rejected; a quarter prompt, the rest completion, rejected rows shorter."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (2 * pairs, seq), generator=g)
    ids[pairs:] = torch.where(torch.rand(pairs, seq, generator=g) < 0.5, ids[pairs:], ids[:pairs])
    ids[pairs:, :seq // 4] = ids[:pairs, :seq // 4]  # the same prompt
    attention = torch.ones_like(ids)
    attention[pairs:, 3 * seq // 4:] = 0  # rejected answers are shorter: padding
    ids[attention == 0] = 0
    completion = attention.clone()
    completion[:, :seq // 4] = 0
    labels = ids.masked_fill(completion == 0, -100)
    return {k: v.to(device) for k, v in
            {"input_ids": ids, "attention_mask": attention, "labels": labels, "completion_mask": completion}.items()}


def ours_step(base, batch, device):
    from lora_studio import LoraSpec, inject
    from lora_studio.engine.fast import speed_up
    from lora_studio.engine.preference import preference_loss
    from lora_studio.engine.setup import to_device

    model = copy.deepcopy(base)
    inject(model, LoraSpec(targets=["q", "v"], rank=8, alpha=16))
    speed_up(model, torch.device(device))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = to_device({k: batch[k].cpu() for k in ("input_ids", "attention_mask", "labels")}, torch.device(device))

    def step():
        loss, _ = preference_loss(model, x, "dpo", beta=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return step


def trl_step(base, batch, device, tok_dir):
    import datasets
    import peft
    from trl import DPOConfig, DPOTrainer

    model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=8,
                                                                      lora_alpha=16, task_type="CAUSAL_LM"))
    tok = T.AutoTokenizer.from_pretrained(tok_dir)
    tok.eos_token = tok.eos_token or tok.sep_token  # MiniLM's has none; TRL only reads it to prepare its dataset
    args = DPOConfig(output_dir=tempfile.mkdtemp(), beta=0.1, report_to="none", use_cpu=device == "cpu",
                     bf16=False, fp16=False)
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}]
    trainer = DPOTrainer(model=model, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(rows))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}

    def step():
        loss = trainer._compute_loss(model, x, return_outputs=False)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a local causal-LM folder (default: SmolLM2-135M's shape, random weights)")
    ap.add_argument("--layers", type=int, default=30, help="of the default model (SmolLM2-135M has 30)")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    load0 = os.getloadavg()
    if a.model:
        base = T.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
        tok_dir = a.model
    else:
        from lora_studio.engine.models import demo_model_path

        base, tok_dir = smollm2_shape(a.layers), demo_model_path()  # TRL's trainer wants a tokenizer; ours never reads it
    base = base.to(a.device)
    batch = make_batch(base.config.vocab_size, a.pairs, a.seq, a.device)
    s_ours, s_trl = ours_step(base, batch, a.device), trl_step(base, batch, a.device, tok_dir)
    first = {"ours": s_ours().item(), "trl": s_trl().item()}  # also warms up
    s_ours(), s_trl()
    times = {"ours": [], "trl": []}
    for i in range(a.reps):
        order = [("ours", s_ours), ("trl", s_trl)][::1 if i % 2 == 0 else -1]
        for key, f in order:
            t0 = time.perf_counter()
            f()
            times[key].append(time.perf_counter() - t0)
    if a.device == "cuda":
        mem = {}
        for key, f in (("ours", s_ours), ("trl", s_trl)):
            torch.cuda.synchronize()
            start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            f()
            mem[key] = torch.cuda.max_memory_allocated() - start
    else:
        from benchmarks.bench_train_step import tensor_peak

        mem = {"ours": tensor_peak(s_ours), "trl": tensor_peak(s_trl)}
    load1 = os.getloadavg()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    paired = statistics.median(o / t for o, t in zip(times["ours"], times["trl"]))
    import trl

    print(f"device {a.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, trl {trl.__version__}, "
          f"model {a.model or f'SmolLM2-135M shape (random), {a.layers} layers'}, {a.pairs} pairs x {a.seq} tokens, "
          f"{a.reps} reps")
    print(f"load average (1, 5, 15 min): before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"step-0 loss: ours {first['ours']:.6f}, TRL {first['trl']:.6f} (ln 2 = {0.6931471805599453:.6f})")
    print("| engine | ms/step (median) | fastest | peak step memory MB |")
    print("|---|---|---|---|")
    for k, name in (("ours", "LoRA Studio"), ("trl", "TRL DPOTrainer + PEFT")):
        print(f"| {name} | {med[k]:.0f} | {min(times[k]) * 1e3:.0f} | {mem[k] / 2**20:.0f} |")
    print(f"ours / TRL: median {med['ours'] / med['trl']:.2f}, paired {paired:.2f}, "
          f"memory {mem['ours'] / max(mem['trl'], 1):.2f}")


if __name__ == "__main__":
    main()
