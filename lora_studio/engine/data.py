"""Data preparation: tokenization with loss masks (once, in `prepare`), and per-batch padding.
Reading files and detecting formats is `data_io` (its names are re-exported here).

Formats, by columns (auto-detected, overridable in `DataConfig`):
  text               plain causal LM, loss on every token
  prompt-completion  loss on the completion only (prompt tokens get label -100); on a tokenizer
                     with a chat template, a one-turn conversation (user = prompt, assistant =
                     completion) masked as `messages` (`DataConfig.chat_template` off: plain text)
  messages           chat through the tokenizer's chat template, loss on assistant turns only
  classification     text + label, one class id per example

Everything is tokenized once, in `prepare`; `collate` only pads. Qt-free.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

from lora_studio.config import DataConfig
from lora_studio.engine.data_io import (  # noqa: F401 - re-exported: `from lora_studio.engine.data import …`
    CANDIDATES, CLASSIFICATION_TEXT, EXPECTED, EXTENSIONS, ROLES, TEXT_FILES, VALIDATION_SPLITS, Preview,
    _check_utf8, _first_line, _open, _pick, _read_jsonl, detect_format, load_table, preview)
from lora_studio.engine.data_labels import _col, _label_ids, _normalize_labels, check_text_and_label  # noqa: F401
from lora_studio.engine.errors import UserError

IGNORE = -100  # label of tokens that carry no loss (prompt, non-assistant turns, padding)
# No token is longer than this many characters in practice, so cutting a text at CHARS_PER_TOKEN x
# max_length characters before tokenizing changes nothing that truncation keeps, and bounds the time
# and memory of a huge text (a 50 MB line otherwise tokenizes whole, for its length statistics).
CHARS_PER_TOKEN = 64
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "system": "system", "tool": "tool"}


# -- results ---------------------------------------------------------------------------------
@dataclass
class LengthStats:
    """Token lengths of one split. Lengths are measured before truncation, over the kept examples."""

    examples: int = 0  # examples kept
    mean_tokens: float = 0.0
    median_tokens: float = 0.0
    p95_tokens: float = 0.0
    max_tokens: int = 0
    max_length: int = 0  # the truncation length used
    truncated: int = 0  # kept examples cut at max_length
    too_long_prompts: int = 0  # dropped: the prompt alone fills max_length, no token left to learn
    empty: int = 0  # dropped: missing text/label/completion, or no assistant turn
    clipped: int = 0  # kept examples cut to CHARS_PER_TOKEN x max_length characters before tokenizing

    @property
    def dropped(self) -> int:
        return self.too_long_prompts + self.empty

    def summary(self) -> str:
        s = (f"{self.examples} examples, tokens mean {self.mean_tokens:.0f} / median {self.median_tokens:.0f}"
             f" / p95 {self.p95_tokens:.0f} / max {self.max_tokens}")
        if self.truncated:
            s += f"; {self.truncated} truncated at {self.max_length}"
        if self.clipped:
            s += (f" ({self.clipped} over {CHARS_PER_TOKEN * self.max_length:,} characters cut before "
                  "tokenizing: lengths above count to there)")
        if self.too_long_prompts:
            s += f"; {self.too_long_prompts} dropped (prompt alone >= {self.max_length} tokens)"
        if self.empty:
            s += f"; {self.empty} dropped (nothing to learn from)"
        return s


@dataclass
class Prepared:
    """Tokenized data, ready for `collate`."""

    train: list[dict]  # {"input_ids": [int], "attention_mask": [int], "labels": [int] | int}
    validation: list[dict]
    format: str  # text | prompt-completion | messages | classification
    roles: dict[str, str]  # role -> column name
    label_names: list[str] = field(default_factory=list)  # class id -> name (classification only)
    stats: dict[str, LengthStats] = field(default_factory=dict)  # "train", "validation"
    # the first held-out prompts, for samples: a message list before the first assistant turn
    # (messages), the prompt (prompt-completion), or the text's first words (text)
    sample_prompts: list = field(default_factory=list)
    chat: bool = False  # rendered through the chat template: a chat run (runfolder.is_chat_run)


# -- preparation -----------------------------------------------------------------------------
def demo_path(task: str) -> tuple[str, str]:
    """(train, validation or "") of the packaged demo dataset of a task."""
    from importlib.resources import files

    root = files("lora_studio.resources") / "data"
    if task == "classification":
        return str(root / "demo_classification_train.jsonl"), str(root / "demo_classification_validation.jsonl")
    if task == "causal-lm":
        return str(root / "demo_causal.jsonl"), ""
    if task == "preference":  # preferred style vs plain answers for the chat demo model (resources/data)
        return str(root / "preference_chat_train.jsonl"), str(root / "preference_chat_validation.jsonl")
    raise UserError(f"task {task!r} unknown: use causal-lm or classification")


def uses_template(fmt: str, tokenizer, cfg: DataConfig) -> bool:
    """Whether rows of `fmt` go through the tokenizer's chat template (making a chat run): `messages`
    always; prompt + completion strings (also preference pairs) when the tokenizer has a template,
    unless `cfg.chat_template` is off."""
    if fmt == "messages":
        return True
    return (fmt in ("prompt-completion", "preference") and bool(cfg.chat_template)
            and bool(getattr(tokenizer, "chat_template", None)))


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) row indices: a seeded random `fraction` held out, each kept in file order."""
    import numpy as np

    if fraction <= 0 or n < 2:
        return list(range(n)), []
    n_val = min(n - 1, max(1, round(n * fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def prepare(cfg: DataConfig, tokenizer, task: str, seed: int = 42,
            label_names: list[str] | None = None, trace: dict | None = None) -> Prepared:
    """Load, split, detect the format, tokenize (once) and mask: examples ready for `collate`.
    `label_names` fixes the class ids (a resumed run keeps its mapping). A `trace` dict receives,
    per split of a causal format, one `Traced` per row (what `datacheck` shows)."""
    import datasets

    cfg.validate()
    path, validation_path = (cfg.path, cfg.validation_path) if cfg.path else demo_path(task)
    source = _open(path)
    table = _pick(source, "train", path)
    if validation_path:
        val_table = load_table(validation_path, "validation")
    elif isinstance(source, datasets.DatasetDict) and any(s in source for s in VALIDATION_SPLITS):
        val_table = _pick(source, "validation", path)  # the folder or hub dataset has its own
    else:
        train_idx, val_idx = split_indices(len(table), float(cfg.validation_split), seed)
        val_table = table.select(val_idx) if val_idx else None
        table = table.select(train_idx) if val_idx else table
    try:
        fmt, roles = detect_format(table.column_names, task, cfg)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    if val_table is not None:
        missing = [c for c in roles.values() if c not in val_table.column_names]
        if missing:
            raise UserError(f"validation data {validation_path or path} lacks column(s) {', '.join(missing)} "
                            f"(it has: {', '.join(val_table.column_names)})")
    L = int(cfg.max_length)
    names: list[str] = []
    if fmt == "classification":
        check_text_and_label(_col(table, roles["text"]), _col(table, roles["label"]), roles, label_names)
        labels, val_labels, names = _label_ids(table, val_table, roles["label"], label_names)
    stats, chat = {}, uses_template(fmt, tokenizer, cfg)
    for split, t in (("train", table), ("validation", val_table)):
        if t is None:
            stats[split] = ([], LengthStats(max_length=L))
            continue
        clip = Clip(CHARS_PER_TOKEN * L)
        if fmt == "classification":
            ids = labels if split == "train" else val_labels
            stats[split] = _classification(clip(_col(t, roles["text"])), ids, tokenizer, L)
        else:
            rows = trace.setdefault(split, []) if trace is not None else None
            stats[split] = _causal(fmt, t, roles, tokenizer, L, clip, rows, chat)
        stats[split][1].clipped = clip.count
    (train, train_stats), (val, val_stats) = stats["train"], stats["validation"]
    prompts = held_out_prompts(fmt, val_table, roles) if val_table is not None and fmt != "classification" else []
    return Prepared(train, val, fmt, roles, names, {"train": train_stats, "validation": val_stats}, prompts, chat)


def held_out_prompts(fmt: str, table, roles: dict, n: int = 8) -> list:
    """Up to `n` prompts from the first held-out rows that have one (see Prepared.sample_prompts)."""
    out = []
    for r in range(min(len(table), 4 * n)):
        cell = table[r][roles["messages" if fmt == "messages" else "prompt" if fmt == "prompt-completion" else "text"]]
        if fmt == "messages":
            try:
                msgs = _messages(cell, r)
            except UserError:
                continue
            first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), 0)
            prompt = msgs[:first] if first and msgs[first - 1]["role"] == "user" else None
        elif fmt == "prompt-completion":
            prompt = cell if isinstance(cell, str) and cell.strip() else None
        else:
            words = cell.split() if isinstance(cell, str) else []
            prompt = " ".join(words[:max(1, min(8, len(words) // 2))]) if len(words) > 1 else None
        if prompt:
            out.append(prompt)
        if len(out) == n:
            break
    return out


class Clip:
    """Cuts each text (a cell, or the contents of a conversation taken together) to `limit`
    characters, counting the cells it cut."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0

    def __call__(self, values: list) -> list:
        return [self.one(v) for v in values]

    def one(self, value):
        if isinstance(value, str):
            if len(value) <= self.limit:
                return value
            self.count += 1
            return value[:self.limit]
        if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):  # messages
            out, left = [], self.limit
            for m in value:
                text = next((m[k] for k in ("content", "value", "text") if isinstance(m.get(k), str)), "")
                if left <= 0:
                    self.count += 1
                    break
                if len(text) > left:
                    key = next(k for k in ("content", "value", "text") if m.get(k) is text)
                    m = {**m, key: text[:left]}
                    self.count += 1
                    out.append(m)
                    break
                out.append(m)
                left -= len(text)
            return out
        return value


def _stats(lengths: list[int], max_length: int, **counts) -> LengthStats:
    if not lengths:
        return LengthStats(max_length=max_length, **counts)
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return LengthStats(examples=len(lengths), mean_tokens=sum(lengths) / len(lengths),
                       median_tokens=float(statistics.median(ordered)), p95_tokens=float(p95),
                       max_tokens=ordered[-1], max_length=max_length, **counts)


def _classification(texts, labels, tok, L: int) -> tuple[list[dict], LengthStats]:
    keep = [i for i, (t, y) in enumerate(zip(texts, labels)) if isinstance(t, str) and t.strip() and y is not None]
    kept_texts = [texts[i] for i in keep]
    ids = tok(kept_texts, add_special_tokens=True)["input_ids"] if kept_texts else []
    lengths = [len(x) for x in ids]
    long = [j for j, n in enumerate(lengths) if n > L]
    if long:  # re-tokenize with truncation so that the tokenizer keeps its closing special token
        cut = tok([kept_texts[j] for j in long], add_special_tokens=True, truncation=True, max_length=L)["input_ids"]
        for j, x in zip(long, cut):
            ids[j] = x
    examples = [{"input_ids": x, "attention_mask": [1] * len(x), "labels": labels[i]} for i, x in zip(keep, ids)]
    return examples, _stats(lengths, L, truncated=len(long), empty=len(texts) - len(keep))


@dataclass
class Traced:
    """One row of a causal format as `prepare` saw it: the untruncated ids and loss mask (None:
    nothing to learn from), and the example training gets from it (None: dropped)."""

    ids: list[int] | None
    mask: list[bool] | None
    example: dict | None


def _causal(fmt: str, table, roles: dict, tok, L: int, clip=None, trace: list | None = None,
            chat: bool = False) -> tuple[list[dict], LengthStats]:
    """Untruncated (ids, loss mask) per row, then truncation, masking and the counts. `chat`:
    prompt + completion rows go through the chat template as one-turn conversations."""
    clip = clip or Clip(CHARS_PER_TOKEN * L)
    if fmt == "text":
        rows = _text_rows(clip(_col(table, roles["text"])), tok)
    elif fmt == "prompt-completion":
        prompts, completions = clip(_col(table, roles["prompt"])), clip(_col(table, roles["completion"]))
        rows = (_chat_rows(one_turn(prompts, completions), tok) if chat
                else _prompt_completion_rows(prompts, completions, tok))
    else:
        rows = _chat_rows(clip(_col(table, roles["messages"])), tok)
    examples, lengths = [], []
    truncated = too_long = empty = 0
    for row in rows:
        example = _example(row, L)
        if trace is not None:
            trace.append(Traced(*(row or (None, None)), example))
        if example is None:
            if row is None or not any(row[1]):
                empty += 1
            else:
                too_long += 1
            continue
        truncated += len(row[0]) > L
        lengths.append(len(row[0]))
        examples.append(example)
    return examples, _stats(lengths, L, truncated=truncated, too_long_prompts=too_long, empty=empty)


def _example(row, L: int) -> dict | None:
    """The training example of one (ids, loss mask) row cut to L tokens; None when it trains nothing."""
    if row is None or not any(row[1]):
        return None
    ids, mask = row[0][:L], row[1][:L]  # cuts the end: the completion / last turns
    if not any(mask):
        return None
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [t if m else IGNORE for t, m in zip(ids, mask)]}


def _with_eos(ids: list[int], tok) -> list[int]:
    eos = tok.eos_token_id
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def _text_rows(texts, tok):
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    ids = tok([texts[i] for i in keep], add_special_tokens=True)["input_ids"] if keep else []
    rows = [None] * len(texts)
    for i, x in zip(keep, ids):
        x = _with_eos(x, tok)
        rows[i] = (x, [True] * len(x))
    return rows


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _prompt_completion_rows(prompts, completions, tok):
    """prompt + completion tokenized as one text (as the model will see it at inference); the
    prompt's tokens are the common prefix with the prompt tokenized alone."""
    keep = [i for i, (p, c) in enumerate(zip(prompts, completions))
            if isinstance(p, str) and isinstance(c, str) and c.strip()]
    rows = [None] * len(prompts)
    if not keep:
        return rows
    full = tok([prompts[i] + completions[i] for i in keep], add_special_tokens=True)["input_ids"]
    alone = tok([prompts[i] for i in keep], add_special_tokens=True)["input_ids"]
    for i, x, p in zip(keep, full, alone):
        x = _with_eos(x, tok)
        n_prompt = _common_prefix(p, x)
        rows[i] = (x, [False] * n_prompt + [True] * (len(x) - n_prompt))
    return rows


def one_turn(prompts, completions) -> list[list[dict] | None]:
    """prompt + completion strings as one-turn conversations (user = prompt, assistant =
    completion); None where the row has no completion to learn (as `_prompt_completion_rows`)."""
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": c}]
            if isinstance(p, str) and isinstance(c, str) and c.strip() else None
            for p, c in zip(prompts, completions)]


def _messages(value, row: int) -> list[dict]:
    if isinstance(value, str):  # a CSV cell holding JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise UserError(f"row {row + 1}: messages must be a list of {{\"role\": …, \"content\": …}}")
    out = []
    for m in value:
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        role = SHAREGPT_ROLES.get(str(role).lower(), role) if role is not None else None
        if role is None:
            raise UserError(f"row {row + 1}: a message has no role (expected role/content or from/value keys)")
        out.append({"role": role, "content": "" if content is None else content})
    return out


def _chat_rows(conversations, tok):
    """Loss on assistant turns: turn i spans from the end of the rendered prefix messages[:i]
    (with the generation prompt) to the end of messages[:i+1], both compared as token prefixes
    of the whole conversation, so templates that re-render earlier turns stay exact."""
    if not getattr(tok, "chat_template", None):
        raise UserError("the tokenizer has no chat template, so `messages` data cannot be rendered: use a "
                        "chat/instruct model, or convert the data to prompt + completion")

    def render(msgs, generation=False) -> str:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation)

    def opening(msgs) -> str:
        """What precedes an assistant turn that opens the conversation (transformers refuses to
        render an empty one): its rendering up to where its content starts."""
        text, content = render(msgs[:1]), str(msgs[0]["content"])
        return text[:text.rfind(content)] if content and content in text else ""

    texts, plans = [], []
    for r, value in enumerate(conversations):
        if value is None:
            plans.append(None)
            continue
        msgs = _messages(value, r)
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        try:
            rendered = [render(msgs)]
            for i in turns:
                rendered += [render(msgs[:i], True) if i else opening(msgs), render(msgs[:i + 1])]
        except Exception as e:  # jinja raises on roles the template refuses (e.g. not alternating)
            raise UserError(f"row {r + 1}: the chat template refused this conversation: {_first_line(e)}") from None
        plans.append((len(texts), len(turns)))
        texts += rendered
    ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    rows = []
    for plan in plans:
        if plan is None:
            rows.append(None)
            continue
        at, n_turns = plan
        full = ids[at]
        mask = [False] * len(full)
        for k in range(n_turns):
            before, after = ids[at + 1 + 2 * k], ids[at + 2 + 2 * k]
            start = _common_prefix(before, full) if before else 0
            end = _common_prefix(after, full)
            mask[start:end] = [True] * max(0, end - start)
        rows.append((full, mask))
    return rows


# -- batching --------------------------------------------------------------------------------
def collate(examples: list[dict], pad_id: int | None, pad_to_multiple_of: int | None = None) -> dict:
    """Pad one batch on the right to its longest example: input_ids (B, T) with pad_id,
    attention_mask (B, T) with 0, labels (B, T) with -100 (causal) or (B,) class ids."""
    import torch

    pad_id = 0 if pad_id is None else int(pad_id)
    T = max(len(e["input_ids"]) for e in examples)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    ids, attention, labels = [], [], []
    for e in examples:
        n = len(e["input_ids"])
        ids.append(list(e["input_ids"]) + [pad_id] * (T - n))
        attention.append(list(e.get("attention_mask") or [1] * n) + [0] * (T - n))
        if "labels" in e and not isinstance(e["labels"], int):
            labels.append(list(e["labels"]) + [IGNORE] * (T - n))
        elif "labels" in e:
            labels.append(e["labels"])
    batch = {"input_ids": torch.tensor(ids, dtype=torch.long),
             "attention_mask": torch.tensor(attention, dtype=torch.long)}
    if labels:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch
