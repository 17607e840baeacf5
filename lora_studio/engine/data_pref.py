"""Preference data: (prompt, chosen, rejected) rows tokenized into pairs of sequences.

Columns `prompt`, `chosen`, `rejected` (TRL's explicit-prompt preference format): strings, or
message lists (the prompt's messages, then the chosen or rejected assistant message(s)). Message
lists, and strings on a tokenizer with a chat template (the rule of data.uses_template: a one-turn
conversation, unless `chat_template` is off), are rendered through the template (a chat run);
strings on a tokenizer without one are tokenized as prompt + completion. The
loss is on the completion tokens only, with the masking of engine/data.py (prompt-completion and
chat rows); for chat rows the prompt's own assistant turns, if any, are masked too.

A prepared example is the chosen sequence (`input_ids`, `attention_mask`, `labels`, so code
that reads causal examples sees the preferred answer) plus `rejected`, the same for the other.
`collate_pairs` lays a batch out as TRL does: the chosen rows, then the rejected ones, so a pair
never leaves its micro-batch (nor its process). Bad rows (a missing column, an empty chosen or
rejected, chosen == rejected) are refused with the row number, one line.
"""

from __future__ import annotations

import json

from lora_studio.engine.data import (CHARS_PER_TOKEN, IGNORE, Clip, Prepared, _col, _common_prefix, _messages,
                                     _chat_rows, _open, _pick, _prompt_completion_rows, _stats, collate,
                                     load_table, split_indices, uses_template)
from lora_studio.engine.data_io import PAIR_COLUMNS, VALIDATION_SPLITS, preference_columns  # noqa: F401
from lora_studio.engine.errors import UserError


def _value(v):
    """A cell as a string or a message list (a CSV cell may hold JSON)."""
    if isinstance(v, str) and v.lstrip().startswith("[") and v.rstrip().endswith("]"):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _empty(v) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return not v.strip()
    if isinstance(v, list):
        return not v or all(not str(m.get("content", m.get("value", "")) if isinstance(m, dict) else m).strip()
                            for m in v)
    return False


def check_rows(prompts, chosen, rejected, where: str):
    """One line for the first bad row: an empty chosen/rejected, or the two the same."""
    for i, (p, c, r) in enumerate(zip(prompts, chosen, rejected)):
        for name, v in (("prompt", p), ("chosen", c), ("rejected", r)):
            if name != "prompt" and _empty(v):
                raise UserError(f"{where} row {i + 1}: {name} is empty: every pair needs a chosen and a "
                                "rejected answer (remove the row)")
            if v is not None and not isinstance(v, (str, list)):
                raise UserError(f"{where} row {i + 1}: {name} must be a string or a list of messages, "
                                f"not {type(v).__name__}")
        if c == r:
            raise UserError(f"{where} row {i + 1}: chosen and rejected are the same: a pair must differ "
                            "(remove the row)")
        if p is None:
            raise UserError(f"{where} row {i + 1}: prompt is missing (an empty string is allowed)")


def _as_messages(v, role: str, row: int) -> list[dict]:
    return [{"role": role, "content": v}] if isinstance(v, str) else _messages(v, row)


def pair_rows(prompts, completions, tok, chat: bool = False):
    """(ids, loss mask) per row of prompt + completion: through the chat template (`chat`, or
    message lists on either side) with the loss on the completion's assistant turns only, else
    strings as text."""
    chat = chat or any(isinstance(v, list) for v in list(prompts) + list(completions))
    if not chat:
        return _prompt_completion_rows(prompts, completions, tok)
    convs = [_as_messages(p, "user", i) + _as_messages(c, "assistant", i)
             for i, (p, c) in enumerate(zip(prompts, completions))]
    rows = _chat_rows(convs, tok)
    heads = [tok.apply_chat_template(_as_messages(p, "user", i), tokenize=False, add_generation_prompt=True)
             for i, p in enumerate(prompts)]
    head_ids = tok(heads, add_special_tokens=False)["input_ids"]
    out = []
    for row, h in zip(rows, head_ids):
        ids, mask = row
        n = _common_prefix(h, ids)  # the prompt's assistant turns (multi-turn prompts) carry no loss
        out.append((ids, [False] * n + list(mask[n:])))
    return out


def _pairs(table, roles, tok, L: int, where: str, chat: bool):
    clip = Clip(CHARS_PER_TOKEN * L)
    prompts = [_value(v) for v in _col(table, roles["prompt"])]
    chosen = [_value(v) for v in _col(table, roles["chosen"])]
    rejected = [_value(v) for v in _col(table, roles["rejected"])]
    check_rows(prompts, chosen, rejected, where)
    prompts, chosen, rejected = clip(prompts), clip(chosen), clip(rejected)
    examples, lengths, truncated, too_long, empty = [], [], 0, 0, 0
    for c_row, r_row in zip(pair_rows(prompts, chosen, tok, chat), pair_rows(prompts, rejected, tok, chat)):
        if c_row is None or r_row is None or not any(c_row[1]) or not any(r_row[1]):
            empty += 1
            continue
        seqs, cut = [], False
        for ids, mask in (c_row, r_row):
            if len(ids) > L:
                ids, mask, cut = ids[:L], mask[:L], True  # keeps the start: the prompt, then what fits
            seqs.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [t if m else IGNORE for t, m in zip(ids, mask)]})
        if not all(any(t != IGNORE for t in s["labels"]) for s in seqs):
            too_long += 1
            continue
        truncated += cut
        lengths.append(max(len(c_row[0]), len(r_row[0])))
        examples.append({**seqs[0], "rejected": seqs[1]})
    stats = _stats(lengths, L, truncated=truncated, too_long_prompts=too_long, empty=empty)
    stats.clipped = clip.count
    return examples, stats


def prepare_preference(cfg, tokenizer, seed: int = 42) -> Prepared:
    """Load, split, check and tokenize preference pairs (the preference counterpart of data.prepare)."""
    import datasets

    cfg.validate()
    path, validation_path = cfg.path, cfg.validation_path
    source = _open(path)
    table = _pick(source, "train", path)
    if validation_path:
        val_table = load_table(validation_path, "validation")
    elif isinstance(source, datasets.DatasetDict) and any(s in source for s in VALIDATION_SPLITS):
        val_table = _pick(source, "validation", path)
    else:
        train_idx, val_idx = split_indices(len(table), float(cfg.validation_split), seed)
        val_table = table.select(val_idx) if val_idx else None
        table = table.select(train_idx) if val_idx else table
    try:
        roles = preference_columns(table.column_names, cfg.prompt_column)
        if val_table is not None:
            preference_columns(val_table.column_names, cfg.prompt_column)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    L = int(cfg.max_length)
    chat = (uses_template("preference", tokenizer, cfg)
            or any(isinstance(_value(v), list) for c in ("prompt", "chosen") for v in table[roles[c]][:64]))
    train, train_stats = _pairs(table, roles, tokenizer, L, path, chat)
    val, val_stats = _pairs(val_table, roles, tokenizer, L, validation_path or f"{path} (held out)", chat) \
        if val_table is not None else ([], _stats([], L))
    held = val_table if val_table is not None and len(val_table) else table
    prompts = [_value(v) for v in held[roles["prompt"]][:8]]
    # a chat run (runfolder.is_chat_run): samples, try and Try it go through the template
    fmt = "preference-chat" if chat else "preference"
    samples = [_as_messages(p, "user", i) if chat else p for i, p in enumerate(prompts) if p is not None]
    return Prepared(train, val, fmt, roles, [], {"train": train_stats, "validation": val_stats}, samples, chat)


def collate_pairs(examples: list[dict], pad_id: int | None) -> dict:
    """(2P, T) input_ids / attention_mask / labels: the P chosen sequences, then the P rejected."""
    return collate(list(examples) + [e["rejected"] for e in examples], pad_id)
