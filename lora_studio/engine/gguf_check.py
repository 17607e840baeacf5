"""Check a GGUF in llama.cpp itself (the `xllamacpp` package) against the Hugging Face model.

The figure: next-token log-probabilities of the top tokens after a few probe prompts, fed to
both as the same token ids (so tokenizers cannot differ), max |log p_gguf - log p_hf|. A log-prob
difference is a relative probability difference, and it equals the logit difference up to the
per-prompt log-sum-exp, so it measures the weights, not the sampler.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lora_studio.engine.export import PROBE

# max |Δ log p| accepted per GGUF type (f32: float summation order only; f16/q8_0: weight rounding)
TOLERANCE = {"f32": 1e-3, "f16": 3e-2, "q8_0": 6e-2}
TOP = 20


def probe_ids(tokenizer) -> list[list[int]]:
    return [tokenizer(text)["input_ids"][:48] for text in PROBE]


def llama_logprobs(gguf_path, prompts: list[list[int]], lora: str | None = None, top: int = TOP,
                   threads: int = 2) -> list[dict[int, float]]:
    """{token id: log p} of the `top` most likely next tokens after each prompt, from llama.cpp."""
    import xllamacpp as x

    p = x.CommonParams()
    p.model.path = str(gguf_path)
    p.n_ctx = max(64, 2 * max(len(ids) for ids in prompts))
    p.n_parallel = 1
    p.warmup = False
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    if lora:
        info = x.CommonAdapterLoraInfo()
        info.path, info.scale = str(lora), 1.0
        p.lora_adapters = [info]
    try:
        server = x.Server(p)
    except RuntimeError as e:
        from lora_studio.engine.errors import UserError

        raise UserError(f"llama.cpp cannot load {Path(gguf_path).name} ({e}): the file is not usable") from None
    out = []
    try:
        for ids in prompts:
            r = server.handle_completions({"prompt": ids, "n_predict": 1, "n_probs": top, "temperature": 0,
                                           "post_sampling_probs": False, "cache_prompt": False})
            if "choices" not in r:
                raise RuntimeError(f"llama.cpp answered {str(r)[:200]}")
            first = r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            out.append({t["id"]: t["logprob"] for t in first})
    finally:
        del server
    return out


def hf_logprobs(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Full next-token log-probabilities (vocab,) after each prompt, float64."""
    out = []
    with torch.no_grad():
        for ids in prompts:
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
            out.append(logits.log_softmax(-1))
    return out


def max_diff(gguf_lp: list[dict[int, float]], hf_lp: list[torch.Tensor]) -> float:
    return max(abs(lp - float(ref[t])) for got, ref in zip(gguf_lp, hf_lp) for t, lp in got.items())


def verify_against_hf(gguf_path, hf_dir: Path, tokenizer, type: str, task: str, model=None, lora=None):
    """(max |Δ log p|, tolerance, note); (None, None, why) when it cannot be checked here."""
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return None, None, "not verified: llama.cpp's Python binding is missing (pip install 'lora-studio[gguf]')"
    if task != "causal-lm":
        return None, None, "not verified: llama.cpp gives no next-token logits for a classification model"
    if model is None:
        from lora_studio.engine.models import load_model

        model = load_model(str(hf_dir), task, dtype=torch.float32).eval()
    prompts = probe_ids(tokenizer)
    diff = max_diff(llama_logprobs(gguf_path, prompts, lora=lora), hf_logprobs(model, prompts))
    return diff, TOLERANCE[type], f"max |log p(llama.cpp) - log p(HF)| over the top {TOP} next tokens of {len(prompts)} prompts"
