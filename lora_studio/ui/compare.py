"""Base model vs adapted model on one input, for the Try it tab. Runs in a worker thread.

Qt-free; a candidate for engine/ (it only loads and runs what engine/ saved). The loaded model
is cached per adapter file, so trying several prompts loads it once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

_CACHE: dict = {}


@dataclass
class Output:
    text: str = ""  # causal LM: the generated continuation
    label: str = ""  # classification: predicted label
    probabilities: list[tuple[str, float]] | None = None  # classification: (label, p), in label order


@dataclass
class Comparison:
    task: str
    source: str  # which adapter was used, for display
    base: Output
    adapted: Output


def adapter_source(run_dir) -> tuple[Path, str]:
    """The freshest adapter of a run: its newest checkpoint or the run folder, by file time."""
    from lora_studio.engine.train import latest_checkpoint

    run = Path(run_dir)
    options = []
    if (run / "adapter_model.safetensors").is_file():
        options.append((run / "adapter_model.safetensors").stat().st_mtime_ns)
    ckpt = latest_checkpoint(run) if (run / "checkpoints").is_dir() else None
    if ckpt is not None and (ckpt / "adapter_model.safetensors").is_file():
        t = (ckpt / "adapter_model.safetensors").stat().st_mtime_ns
        if not options or t > options[0]:
            return ckpt, f"checkpoint {ckpt.name} of {run}"
    if options:
        return run, f"adapter in {run}"
    from lora_studio.engine import UserError

    raise UserError(f"{run} holds no adapter yet: train first (or wait for the first checkpoint)")


def _load(run_dir):
    import torch

    from lora_studio.config import RunConfig
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.export import run_info
    from lora_studio.engine.models import load_model, load_tokenizer, resolve_device

    path, source = adapter_source(run_dir)
    key = (str(path), (path / "adapter_model.safetensors").stat().st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key] + (source,)
    _CACHE.clear()
    run = Path(run_dir)
    base_ref, task, labels = run_info(run)
    seed, device = 42, "cpu"
    if (run / "run.toml").is_file():
        cfg = RunConfig.load(run / "run.toml")
        seed, device = cfg.train.seed, cfg.train.device
    dev = resolve_device(device)
    torch.manual_seed(seed)  # as engine.train.setup: the untrained head starts the same
    model = load_model(base_ref, task, dtype=torch.float32, device=dev,
                       id2label=dict(enumerate(labels)) if labels else None).eval()
    tok = load_tokenizer(base_ref)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    heads0 = {k: v.detach().clone() for k, v in model.state_dict().items()
              if k.split(".")[0] in ("classifier", "score", "pre_classifier")}
    load_adapter(model, path)
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


def compare(run_dir, text: str, max_new_tokens: int = 40, chat: bool = False) -> Comparison:
    import torch

    model, tok, task, heads0, source = _load(run_dir)
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

    if chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
    else:
        ids = tok([text], return_tensors="pt")
    ids = {k: v.to(device) for k, v in ids.items()}
    n = ids["input_ids"].shape[1]

    def generate() -> Output:
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        return Output(text=tok.decode(out[0, n:], skip_special_tokens=True))

    adapted = generate()
    with _base(model, heads0):
        base = generate()
    return Comparison(task, source, base, adapted)


def forget():
    """Drop the cached model (a new run started)."""
    _CACHE.clear()
