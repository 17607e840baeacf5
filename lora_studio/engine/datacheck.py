"""See what is trained: a data file tokenized and masked exactly as training does it (through
`data.prepare`, never a copy of its masking), row by row, with warnings a user can act on.

Warnings (each with a `code`, the 1-based `rows` it concerns and a `message`):
  no_trained_tokens   rows that train nothing (no completion / assistant turn, or the prompt alone
                      fills max length): training drops them
  answer_truncated    rows whose trained tokens run past max length: their end is cut
  eos_not_trained     rows whose answer (each trained span) holds no end token, so the model never
                      learns to stop (measured before truncation: a cut answer is answer_truncated)
  no_chat_template    chat (`messages`) data on a tokenizer without a chat template: training refuses it
Qt-free and torch-free (the tokenizer is passed in).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field, replace

from lora_studio.config import DataConfig
from lora_studio.engine import data
from lora_studio.engine.errors import UserError

CODES = ("no_trained_tokens", "answer_truncated", "eos_not_trained", "no_chat_template")


@dataclass
class DataWarning:
    code: str
    rows: list[int]  # 1-based row numbers of the file
    message: str


@dataclass
class Row:
    """One row as training sees it. `ids` are the tokens before truncation; `trained[i]` is true
    where training computes the loss on ids[i] (the example's label is not -100); ids past
    `max_length` are cut (never trained)."""

    row: int  # 1-based
    ids: list[int]
    trained: list[bool]
    kept: bool  # False: training drops the row

    @property
    def trained_tokens(self) -> int:
        return sum(self.trained)


@dataclass
class Check:
    path: str
    model: str
    format: str
    roles: dict[str, str]
    rows: int  # rows in the file (the training split of a folder)
    kept: int  # rows training uses
    max_length: int
    chat: bool = False  # rows rendered through the chat template (messages; prompt-completion on a templated model)
    tokens: dict[str, float] = field(default_factory=dict)  # min, median, p95, max, mean (before truncation)
    trained_tokens: dict[str, float] = field(default_factory=dict)  # per kept row: min, median, max, mean, total
    end_tokens: list[str] = field(default_factory=list)  # what counts as "the model stops here"
    warnings: list[DataWarning] = field(default_factory=list)
    detail: list[Row] = field(default_factory=list, repr=False)

    def warning(self, code: str) -> DataWarning | None:
        return next((w for w in self.warnings if w.code == code), None)


# -- the check -------------------------------------------------------------------------------
def check(path: str, tokenizer, cfg: DataConfig | None = None, task: str = "causal-lm", model: str = "",
          end_ids: set[int] | None = None) -> Check:
    """Tokenize and mask every row of `path` as training would (no validation split held out).
    `end_ids`: token ids that end an answer besides the tokenizer's eos and the chat template's
    end of turn (e.g. the model's generation_config eos_token_id)."""
    cfg = replace(cfg or DataConfig(), path=path, validation_path="", validation_split=0.0)
    L = int(cfg.max_length)
    table = data.load_table(path, "train")
    fmt, roles = data.detect_format(table.column_names, task, cfg)
    out = Check(path, model, fmt, roles, len(table), 0, L)
    if fmt == "messages" and not getattr(tokenizer, "chat_template", None):
        out.warnings.append(DataWarning("no_chat_template", list(range(1, len(table) + 1)),
                                    "the tokenizer has no chat template, so training refuses `messages` data: use a "
                                    "chat/instruct model (--model), or convert the rows to prompt + completion"))
        return out
    trace: dict = {}
    prepared = data.prepare(cfg, tokenizer, task, trace=trace)
    out.chat = prepared.chat
    if fmt == "classification":
        s = prepared.stats["train"]
        out.kept = s.examples
        out.tokens = {"median": s.median_tokens, "p95": s.p95_tokens, "max": s.max_tokens, "mean": s.mean_tokens}
        return out
    ends = end_token_ids(tokenizer) | set(end_ids or ())
    out.end_tokens = [tokenizer.convert_ids_to_tokens(i) for i in sorted(ends)]
    for number, t in enumerate(trace.get("train", []), 1):
        if t.ids is None:
            out.detail.append(Row(number, [], [], False))
            continue
        trained = [y != data.IGNORE for y in t.example["labels"]] if t.example else []
        out.detail.append(Row(number, t.ids, trained + [False] * (len(t.ids) - len(trained)), t.example is not None))
    out.kept = sum(r.kept for r in out.detail)
    out.tokens = _summary([len(r.ids) for r in out.detail if r.ids], p95=True)
    out.trained_tokens = _summary([r.trained_tokens for r in out.detail if r.kept], total=True)
    out.warnings = _warnings(out, trace.get("train", []), ends, tokenizer)
    return out


def _summary(values: list[int], p95: bool = False, total: bool = False) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    s = {"min": ordered[0], "median": float(statistics.median(ordered)), "max": ordered[-1],
         "mean": round(sum(ordered) / len(ordered), 2)}
    if p95:  # the same rank as the Data tab's LengthStats
        s["p95"] = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    if total:
        s["total"] = sum(ordered)
    return s


def _spans(mask: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    spans, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _warnings(c: Check, traced: list, ends: set[int], tok) -> list[DataWarning]:
    L, nothing, cut, no_end = c.max_length, [], [], []
    for row, t in zip(c.detail, traced):
        if not row.kept:
            nothing.append(row.row)
        if t.mask is None or not any(t.mask):
            continue
        if any(t.mask[L:]):
            cut.append(row.row)
        if any(not any(i in ends for i in t.ids[a:b]) for a, b in _spans(t.mask)):
            no_end.append(row.row)
    out = []
    if nothing:
        out.append(DataWarning("no_trained_tokens", nothing,
                           f"{_rows(nothing)} train nothing (no completion or assistant turn, or the prompt alone "
                           f"fills max length {L}): training drops them"))
    if cut:
        longest = max(len(c.detail[r - 1].ids) for r in cut)
        out.append(DataWarning("answer_truncated", cut,
                           f"{_rows(cut)} lose trained tokens past max length {L} (the longest has {longest} "
                           f"tokens): raise --max-length to {longest}, or shorten those rows"))
    if no_end:
        what = (f"an end token ({', '.join(c.end_tokens)})" if c.end_tokens
                else "an end token (the tokenizer has none)")
        how = ("check the chat template: it must close each assistant turn" if c.chat
               else "use a tokenizer with an eos token")
        out.append(DataWarning("eos_not_trained", no_end,
                           f"{_rows(no_end)} never train {what} after the answer, so the model does not learn to "
                           f"stop: {how}"))
    return out


def _rows(rows: list[int]) -> str:
    head = ", ".join(map(str, rows[:5])) + (", …" if len(rows) > 5 else "")
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''} ({head})"


def end_token_ids(tok) -> set[int]:
    """The eos token and the token the chat template closes an assistant turn with (e.g. <|im_end|>,
    <|eot_id|>, <end_of_turn>): the first special token rendered after an assistant message."""
    ends = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    if not getattr(tok, "chat_template", None):
        return ends
    marker = "Zq7 answer Zq7"
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "hello"}, {"role": "assistant", "content": marker}],
                                       tokenize=False)
    except Exception:  # a template that refuses this conversation: nothing more to learn from it
        return ends
    after = text[text.rfind(marker) + len(marker):] if marker in text else ""
    special = set(tok.all_special_ids) | {i for i, t in getattr(tok, "added_tokens_decoder", {}).items()
                                          if getattr(t, "special", False)}
    for i in tok(after, add_special_tokens=False)["input_ids"] if after else []:
        if i in special:
            ends.add(i)
            break
    return ends


def generation_end_ids(model_dir: str) -> set[int]:
    """eos_token_id(s) of a model folder's generation_config.json / config.json (no torch)."""
    from pathlib import Path

    out: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        f = Path(model_dir) / name
        try:
            value = json.loads(f.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        out |= {int(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)}
    return out


def model_end_ids(ref: str) -> set[int]:
    """The end tokens a model's own config declares: a folder, or a hub id in the HF cache."""
    from pathlib import Path

    if Path(ref).is_dir():
        return generation_end_ids(ref)
    try:
        import huggingface_hub

        found = huggingface_hub.try_to_load_from_cache(ref, "config.json")
    except Exception:  # noqa: BLE001 - not a valid id: the tokenizer alone decides
        return set()
    return generation_end_ids(str(Path(found).parent)) if isinstance(found, str) else set()


# -- showing it ------------------------------------------------------------------------------
def pieces(tok, ids: list[int], window: int = 8) -> list[str]:
    """The text of each token, so that "".join(pieces) is the decoded row (special tokens shown):
    each piece is what decoding it adds to the `window` tokens before it (linear time, and the
    spaces sentencepiece tokenizers add stay); a character split over several byte tokens goes
    with its last byte."""
    def text(a: int, b: int) -> str:
        return tok.decode(ids[a:b], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    out, done = [], 0  # ids[:done] have their text in `out`
    for n in range(1, len(ids) + 1):
        start = max(0, done - window)
        before, after = text(start, done), text(start, n)
        if after.endswith("\ufffd") and n < len(ids):  # an incomplete character: wait for its other bytes
            out.append("")
            continue
        k = len(before) if after.startswith(before) else len(os.path.commonprefix([before, after]))
        out.append(after[k:])
        done = n
    return out


def marked(tok, row: Row, max_length: int, color: bool = False) -> str:
    """The row's text with trained tokens in [[ ]] (or green when `color`), and a ✂ mark where
    max length cuts it."""
    on, off = ("\x1b[42;30m", "\x1b[0m") if color else ("[[", "]]")
    texts, out, inside = pieces(tok, row.ids), [], False
    for i, (piece, trained) in enumerate(zip(texts, row.trained)):
        if i == max_length:
            out.append(off if inside else "")
            out.append("\x1b[31m✂\x1b[0m" if color else "✂")
            inside = False
        if trained != inside:
            out.append(on if trained else off)
            inside = trained
        out.append(piece)
    if inside:
        out.append(off)
    return "".join(out)


def to_json(c: Check, tok=None, show: int = 0) -> dict:
    out = {k: v for k, v in asdict(c).items() if k != "detail"}
    out["trained_per_row"] = [r.trained_tokens for r in c.detail]  # 0 for a row training drops
    if show and tok is not None:
        out["shown"] = [{"row": r.row, "kept": r.kept, "trained_tokens": r.trained_tokens,
                         "tokens": [{"id": i, "text": p, "trained": m}
                                    for i, p, m in zip(r.ids, pieces(tok, r.ids), r.trained)]}
                        for r in c.detail[:show]]
    return out


def report(c: Check) -> str:
    """The plain-text summary the CLI prints."""
    lines = [f"{c.path}: format {c.format}{' through the chat template' if c.chat else ''} ({', '.join(f'{k} <- {v}' for k, v in c.roles.items())}), "
             f"{c.rows} rows, {c.kept} trained" + (f"; tokenizer of {c.model}" if c.model else "")]
    t, y = c.tokens, c.trained_tokens
    if t:
        low = f"min {t['min']} / " if "min" in t else ""
        lines.append(f"tokens per row: {low}median {t['median']:.0f} / p95 {t['p95']:.0f} / max {t['max']}"
                     f" (max length {c.max_length})")
    if y:
        lines.append(f"trained tokens per row: min {y['min']} / median {y['median']:.0f} / max {y['max']}; "
                     f"{y['total']} in all")
    elif c.format == "classification":
        lines.append("classification: each row trains its label (no token is trained)")
    if c.end_tokens:
        lines.append(f"end tokens: {' '.join(c.end_tokens)}")
    for w in c.warnings:
        lines.append(f"warning [{w.code}]: {w.message}")
    if not c.warnings:
        lines.append("no warnings")
    return "\n".join(lines)

