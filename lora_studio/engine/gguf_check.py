"""Check a GGUF in llama.cpp itself (the `xllamacpp` package) against the Hugging Face model.

The figure: next-token log-probabilities of the top tokens after a few probe prompts, fed to
both as the same token ids (so tokenizers cannot differ), max |log p_gguf - log p_hf|. A log-prob
difference is a relative probability difference, and it equals the logit difference up to the
per-prompt log-sum-exp, so it measures the weights, not the sampler. A type's fixed tolerance is
what weight rounding costs a small random model; a real model's f16 file can cost more. When the
export misses it, llama.cpp's own conversion of the BASE (same type, same converter) is measured too,
and the export is judged against that (`base_tolerance`): an export may cost what the format costs.

The generation check (`chat_check`): a few varied chat prompts sent to llama.cpp as messages,
rendered by the GGUF's own chat template, greedy, must give the same answers as the HF model through
its template, and stop on the end-of-turn token where the HF model does: an answer llama.cpp
runs on past HF's whole answer, or none stopping where HF's do, means a broken end-of-turn token or
template (an answer a quantized base took elsewhere at a close choice may end elsewhere).

llama.cpp writes its log to the process's own stdout/stderr (C level): every call runs inside
`quiet_llama`, which sends both to a temporary file (shown only when loading fails).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import torch

from lora_studio.engine.export import PROBE

# max |Δ log p| accepted per GGUF type (f32: float summation order only; f16/q8_0: weight rounding)
TOLERANCE = {"f32": 1e-3, "f16": 3e-2, "q8_0": 6e-2}
TOP = 20


def probe_ids(tokenizer) -> list[list[int]]:
    return [tokenizer(text)["input_ids"][:48] for text in PROBE]


@contextlib.contextmanager
def quiet_llama():
    """File descriptors 1 and 2 go to a temporary file while llama.cpp runs (its log is not ours
    to print); yields a function that returns what was written."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)

        def text() -> str:
            log.seek(0)
            return log.read().decode("utf-8", "replace")

        try:
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def llama_server(gguf_path, lora: str | None = None, n_ctx: int = 512, threads: int = 2):
    """An in-process llama.cpp server on `gguf_path` (+ a LoRA GGUF), its log kept off the output."""
    import xllamacpp as x

    p = x.CommonParams()
    p.model.path = str(gguf_path)
    p.n_ctx = n_ctx
    p.n_parallel = 1
    p.warmup = False
    p.use_jinja = True  # the GGUF's own chat template, as llama-server --jinja renders it
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    if lora:
        info = x.CommonAdapterLoraInfo()
        info.path, info.scale = str(lora), 1.0
        p.lora_adapters = [info]
    with quiet_llama() as log:
        try:
            server = x.Server(p)
        except RuntimeError as e:
            from lora_studio.engine.errors import UserError

            last = [ln for ln in log().splitlines() if ln.strip()][-1:] or [""]
            raise UserError(f"llama.cpp cannot load {Path(gguf_path).name} ({e}; {last[0].strip()[:200]}): "
                            "the file is not usable") from None
        handle = _Handle(server)
        del server  # the handle holds the only reference: the server ends (and logs) inside quiet_llama
        try:
            yield handle
        finally:
            handle.close()


class _Handle:
    """The server's two calls; `close` drops the server (its destructor logs, so it must run while
    the output is redirected, not whenever the caller's frame lets go)."""

    def __init__(self, server):
        self._server = server

    def handle_completions(self, request: dict) -> dict:
        return self._server.handle_completions(request)

    def handle_chat_completions(self, request: dict) -> dict:
        return self._server.handle_chat_completions(request)

    def close(self):
        self._server = None


def llama_logprobs(gguf_path, prompts: list[list[int]], lora: str | None = None, top: int = TOP,
                   threads: int = 2) -> list[dict[int, float]]:
    """{token id: log p} of the `top` most likely next tokens after each prompt, from llama.cpp."""
    out = []
    with llama_server(gguf_path, lora, max(64, 2 * max(len(ids) for ids in prompts)), threads) as server:
        for ids in prompts:
            r = server.handle_completions({"prompt": ids, "n_predict": 1, "n_probs": top, "temperature": 0,
                                           "post_sampling_probs": False, "cache_prompt": False})
            if "choices" not in r:
                raise RuntimeError(f"llama.cpp answered {str(r)[:200]}")
            first = r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            out.append({t["id"]: t["logprob"] for t in first})
    return out


def llama_chat(gguf_path, prompts: list[str], lora: str | None = None, max_tokens: int = 48,
               threads: int = 2) -> list[tuple[str, bool]]:
    """(answer, stopped on an end token) per user prompt, greedy, through the GGUF's chat template."""
    out = []
    with llama_server(gguf_path, lora, 512, threads) as server:
        for prompt in prompts:
            r = server.handle_chat_completions({"messages": [{"role": "user", "content": prompt}],
                                                "max_tokens": max_tokens, "temperature": 0, "top_k": 1,
                                                "cache_prompt": False})
            if "choices" not in r:
                raise RuntimeError(f"llama.cpp answered {str(r)[:200]}")
            choice = r["choices"][0]
            out.append((choice["message"].get("content") or "", choice.get("finish_reason") == "stop"))
    return out


# a short fact, a how-to, a definition and a one-line instruction, each answered by a 135M chat
# model (SmolLM2-135M-Instruct) in a sentence or two: all but the how-to end within 48 tokens. On
# its Q4_1 GGUF (+ a small adapter) llama.cpp answers the fact and the definition as HF does; the
# how-to and the instruction part at a close choice (the base alone differs from HF by ~0.36 in log p)
CHAT_PROMPTS = ("What is the capital of Peru?", "How do I turn off a computer?", "Define gravity in one sentence.",
                "Name three primary colors.")


def chat_check(gguf_path, model, tokenizer, prompts=CHAT_PROMPTS, lora: str | None = None,
               max_tokens: int = 48) -> dict:
    """Greedy answers of llama.cpp (GGUF template) and HF (tokenizer template) to the same chat
    prompts: {"same": all equal, "stops": llama.cpp stops where HF does (see `runs_on`), "answers": [...]}."""
    from lora_studio.engine.generate import generate

    hf = generate(model, tokenizer, list(prompts), True, max_tokens)
    ll = llama_chat(gguf_path, list(prompts), lora, max_tokens)
    answers = [{"prompt": p, "hf": h.text.strip(), "hf_stopped": h.stopped, "llama_cpp": t.strip(), "llama_cpp_stopped": st}
               for p, h, (t, st) in zip(prompts, hf, ll)]
    hf_stops = [a for a in answers if a["hf_stopped"]]
    return {"same": all(a["hf"] == a["llama_cpp"] for a in answers),
            "stops": not any(runs_on(a) for a in answers)
            and (not hf_stops or any(a["llama_cpp_stopped"] for a in hf_stops)), "answers": answers}


def runs_on(a: dict) -> bool:
    """HF stopped, and llama.cpp said the same and went on instead of ending its turn."""
    return a["hf_stopped"] and not a["llama_cpp_stopped"] and a["llama_cpp"].startswith(a["hf"])


def not_stopped(check: dict) -> dict:
    """The answer that shows check["stops"] False: one that runs on, else one HF ends and llama.cpp does not."""
    return next((a for a in check["answers"] if runs_on(a)), None) or \
        next(a for a in check["answers"] if a["hf_stopped"] and not a["llama_cpp_stopped"])


def chat_note(check: dict, why_different: str = "") -> str:
    """What a note says of a chat_check that stopped where HF does: all the same, or how many differ."""
    answers = check["answers"]
    n = f"{len(answers)} chat prompt{'s' if len(answers) != 1 else ''}"
    if check["same"]:
        return f"; {n} through the GGUF's own template: each gives the same greedy answer as HF and stops where HF does"
    bad = [a for a in answers if a["hf"] != a["llama_cpp"]]
    a = bad[0]
    return (f"; {len(bad)} of {n}' greedy answers differ (e.g. {a['prompt']!r}: llama.cpp {a['llama_cpp']!r}, "
            f"HF {a['hf']!r}){why_different}")


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


def base_tolerance(diff: float, base_diff: float, type: str) -> float:
    """What an export may differ by, judged against llama.cpp's own conversion of the base."""
    return max(TOLERANCE[type], 1.5 * base_diff + TOLERANCE["f32"])


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
