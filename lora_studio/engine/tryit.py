"""Base model vs adapted model on one input: the GUI's Try it and `lora-studio try`.

Two sources: a run folder's newest adapter (loaded once and cached per adapter file, so trying
several prompts loads it once), or the live model of a paused run (`compare_live`, called in the
training thread through Control.call_paused: no second copy of the model on the GPU).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

from lora_studio.engine import runfolder
from lora_studio.engine.errors import UserError

_CACHE: dict = {}
_LOCK = threading.Lock()  # one loaded model at a time, whichever worker thread asks


@dataclass
class Output:
    text: str = ""  # causal LM: the generated continuation
    stopped: bool | None = None  # causal LM: it ended on an end token by itself (not cut at max new tokens)
    label: str = ""  # classification: predicted label
    probabilities: list[tuple[str, float]] | None = None  # classification: (label, p), in label order


@dataclass
class Comparison:
    task: str
    source: str  # which adapter was used, for display
    base: Output
    adapted: Output
    chat: bool = False  # the prompt went through the chat template


def _load(run_dir, device: str | None = None):
    import torch

    from lora_studio.config import RunConfig
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.models import load_model, load_tokenizer, resolve_device
    from lora_studio.engine.setup import initial_heads

    path, source = runfolder.newest_adapter(run_dir)  # runfolder.adapter_of's rule, with which one it took
    key = (str(path), (path / runfolder.ADAPTER_WEIGHTS).stat().st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key] + (source,)
    _CACHE.clear()
    run = runfolder.run_of(Path(run_dir))
    info = runfolder.run_info(run)
    base_ref, task, labels = info.base_model, info.task, info.labels
    seed, cfg = 42, None
    if runfolder.is_run(run):
        cfg = RunConfig.load(run / runfolder.RUN_FILE)
        seed, device = cfg.train.seed, device or cfg.train.device
    dev = resolve_device(device or "cpu")
    torch.manual_seed(seed)  # as engine.train.setup: the untrained head starts the same
    if cfg is not None:  # the base the adapter was trained on: the run's precision, quantization, device
        from lora_studio.engine.setup import load_base, resolve_precision

        precision = resolve_precision(cfg.train.precision, dev) if dev.type == "cuda" else "fp32"
        model = load_base(cfg, base_ref, dev, precision, labels)
    else:  # an adapter folder without its run: full precision
        model = load_model(base_ref, task, dtype=torch.float32, device=dev,
                           id2label=dict(enumerate(labels)) if labels else None,
                           allow_pickle=info.allow_pickle, trust_remote_code=info.trust_remote_code)
    tok = load_tokenizer(base_ref, info.trust_remote_code)  # the run's own trust flags
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    heads0 = initial_heads(model)
    load_adapter(model, path)
    model.eval()  # after the adapter is in: its LoRA dropout must be off, or answers are random
    _CACHE[key] = (model, tok, task, heads0)
    return _CACHE[key] + (source,)


@contextlib.contextmanager
def _base(model, heads0):
    """The model as training started: adapters bypassed and the untrained head swapped back."""
    import torch

    from lora_studio.engine.lora import adapters_disabled

    state = model.state_dict()
    trained = {k: state[k].detach().clone() for k in heads0}
    with torch.no_grad():
        for k, v in heads0.items():
            state[k].copy_(v)
    try:
        with adapters_disabled(model):
            yield model
    finally:
        with torch.no_grad():
            for k, v in trained.items():
                state[k].copy_(v)


def compare(run_dir, text: str, max_new_tokens: int = 40, chat: bool | None = None, device: str | None = None
            ) -> Comparison:
    """Base vs adapted answers for `text`, from the newest adapter of `run_dir`. `chat` None: through
    the chat template for a chat run (runfolder.is_chat_run), as raw text otherwise."""
    if not str(text).strip():
        raise UserError("type a text to try (the input is empty)")
    if chat is None:
        chat = runfolder.is_chat_run(run_dir)
    with _LOCK:
        model, tok, task, heads0, source = _load(run_dir, device)
        return _compare(model, tok, task, heads0, source, text, max_new_tokens, chat)


def compare_live(setup, text: str, max_new_tokens: int = 40, chat: bool | None = None) -> Comparison:
    """Base vs adapted answers from the live model of a paused run (called in its thread)."""
    if chat is None:
        chat = setup.data.chat
    model = setup.model
    was_training = model.training
    model.eval()
    try:
        return _compare(model, setup.tokenizer, setup.config.model.task, setup.heads0,
                        f"the live weights of {setup.config.out}", text, max_new_tokens, chat)
    finally:
        model.train(was_training)


def _compare(model, tok, task, heads0, source, text, max_new_tokens, chat) -> Comparison:
    import torch

    device = next(model.parameters()).device
    if task == "classification":
        enc = tok([text], return_tensors="pt", truncation=True).to(device)
        names = [model.config.id2label.get(i, str(i)) for i in range(model.config.num_labels)]

        def classify() -> Output:
            with torch.no_grad():
                p = torch.softmax(model(**enc).logits.float()[0], -1).tolist()
            best = max(range(len(p)), key=p.__getitem__)
            return Output(label=names[best], probabilities=list(zip(names, p)))

        adapted = classify()
        with _base(model, heads0):
            base = classify()
        return Comparison(task, source, base, adapted)

    from lora_studio.engine.generate import generate, has_template

    chat = bool(chat) and has_template(tok)  # a model without a template is tried with the raw text

    def answer() -> Output:
        a = generate(model, tok, [text], chat, max_new_tokens)[0]
        return Output(text=a.text, stopped=a.stopped)

    adapted = answer()
    with _base(model, heads0):
        base = answer()
    return Comparison(task, source, base, adapted, chat)


def forget():
    """Drop the cached model (a new run started)."""
    with _LOCK:
        _CACHE.clear()
