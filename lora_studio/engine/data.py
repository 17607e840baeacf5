"""Data: loading tables (files, `datasets` folders, hub ids), formats and column roles,
tokenization with loss masks, and per-batch padding.

Formats, by columns (auto-detected, overridable in `DataConfig`):
  text               plain causal LM, loss on every token
  prompt-completion  loss on the completion only (prompt tokens get label -100)
  messages           chat through the tokenizer's chat template, loss on assistant turns only
  classification     text + label, one class id per example

Everything is tokenized once, in `prepare`; `collate` only pads. Qt-free.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.config import DataConfig
from lora_studio.engine.errors import UserError

EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
              ".txt": "text"}
TEXT_FILES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
IGNORE = -100  # label of tokens that carry no loss (prompt, non-assistant turns, padding)

# column names tried, in order, for each role (case-insensitive); DataConfig overrides win
CANDIDATES = {
    "messages": ("messages", "conversations", "conversation", "chat", "dialog"),
    "prompt": ("prompt", "instruction", "question", "input", "query"),
    "completion": ("completion", "response", "answer", "output"),
    "text": ("text", "content", "document"),
    "label": ("label", "labels", "class", "category", "intent", "sentiment", "target"),
}
CLASSIFICATION_TEXT = ("text", "sentence", "content", "review", "document", "utterance", "message",
                       "query", "question", "input")
ROLES = {"text": ("text",), "prompt-completion": ("prompt", "completion"), "messages": ("messages",),
         "classification": ("text", "label")}
EXPECTED = {"text": "a `text` column", "prompt-completion": "`prompt` + `completion` columns",
            "messages": "a `messages` column (chat)", "classification": "`text` + `label` columns"}
VALIDATION_SPLITS = ("validation", "valid", "val", "dev", "test")
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

    @property
    def dropped(self) -> int:
        return self.too_long_prompts + self.empty

    def summary(self) -> str:
        s = (f"{self.examples} examples, tokens mean {self.mean_tokens:.0f} / median {self.median_tokens:.0f}"
             f" / p95 {self.p95_tokens:.0f} / max {self.max_tokens}")
        if self.truncated:
            s += f"; {self.truncated} truncated at {self.max_length}"
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


@dataclass
class Preview:
    """The first rows of a table, as strings, for the GUI's table view."""

    columns: list[str]
    rows: list[dict[str, str]]
    format: str  # detected format, "" when none fits
    roles: dict[str, str]
    num_rows: int
    problem: str = ""  # why no format fits (the UserError message), "" when one does


# -- loading ---------------------------------------------------------------------------------
def _quiet_datasets():
    """No progress bars; datasets' own error logs are dropped (every failure becomes a UserError)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(logging.CRITICAL)


def load_table(path_or_id: str, split: str = "train"):
    """One split as a `datasets.Dataset`: a data file, a folder saved by `datasets`
    (`save_to_disk`), or a hub dataset id (needs a network)."""
    return _pick(_open(path_or_id), split, path_or_id)


def _open(ref):
    """A Dataset (files) or a DatasetDict (folders, hub ids)."""
    import datasets

    _quiet_datasets()
    ref = str(ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            try:
                return datasets.load_from_disk(str(path))
            except Exception as e:
                raise UserError(f"cannot read the datasets folder {ref}: {_first_line(e)}") from None
        try:  # a folder of data files (e.g. a downloaded hub repository)
            return datasets.load_dataset(str(path))
        except Exception as e:
            raise UserError(f"{ref} is neither a folder saved by datasets (save_to_disk) nor a folder of "
                            f"data files: {_first_line(e)}") from None
    if path.is_file():
        return _read_file(path)
    if path.suffix.lower() in EXTENSIONS or ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1:
        raise UserError(f"data file {ref} does not exist: check the path")
    try:
        return datasets.load_dataset(ref)
    except Exception as e:
        raise UserError(f"cannot load dataset {ref!r} from the Hugging Face hub ({_first_line(e)}): "
                        "give a local file, or check the id and the network") from None


def _pick(table, split: str, ref):
    import datasets

    if isinstance(table, datasets.Dataset):
        return table
    names = list(table)
    if split in table:
        return table[split]
    aliases = VALIDATION_SPLITS if split in VALIDATION_SPLITS else ("train",) if split == "train" else ()
    for name in aliases:
        if name in table:
            return table[name]
    if split == "train" and len(names) == 1:
        return table[names[0]]
    raise UserError(f"{ref} has no {split!r} split (it has: {', '.join(names)})")


def _read_file(path: Path):
    import datasets

    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        raise UserError(f"{path.name}: unsupported file type {ext or '(none)'}; "
                        f"use one of {', '.join(EXTENSIONS)} or a folder saved by datasets")
    if path.stat().st_size == 0:
        raise UserError(f"data file {path} is empty")
    if ext in TEXT_FILES:
        _check_utf8(path)
    if ext == ".json":
        return _read_json(path)
    kwargs = {".tsv": {"sep": "\t"}, ".txt": {"encoding": "utf-8-sig"}}.get(ext, {})  # -sig: drop a BOM
    try:
        table = datasets.load_dataset(EXTENSIONS[ext], data_files=str(path), split="train", **kwargs)
    except Exception as e:
        if "corresponds to no data" in str(e):
            raise UserError(f"data file {path} has no rows") from None
        if ext == ".jsonl":  # a bad line (raises, naming it), else rows datasets' reader refused
            return _from_list(_read_jsonl(path), path)
        if ext == ".parquet":
            raise UserError(f"{path} is not a readable Parquet file: {_first_line(e)}") from None
        raise UserError(f"cannot read {path}: {_first_line(e)}") from None
    if ext == ".txt":  # one example per non-empty line
        table = table.filter(lambda t: bool(t.strip()), input_columns="text")
    if len(table) == 0:
        raise UserError(f"data file {path} has no rows")
    return table


def _read_json(path: Path):
    """A .json file: a list of records, {"data": [records]}, columns {name: [values]}, or JSON lines."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise UserError(f"data file {path} is empty")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines with a .json name (Dataset.to_json writes these)
            return _from_list(_read_jsonl(path), path)
        raise UserError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(obj) == 1 and lists and all(isinstance(r, dict) for r in lists[0]):
            obj = lists[0]
        elif obj and len(lists) == len(obj) and len({len(v) for v in lists}) == 1:
            obj = [dict(zip(obj, values)) for values in zip(*obj.values())]
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise UserError(f"{path}: expected a list of objects (one per example), "
                        "or JSON lines (one object per line, .jsonl)")
    return _from_list(obj, path)


def _from_list(rows: list[dict], path):
    """A Dataset from parsed records; a column mixing types becomes `datasets.Json`."""
    import datasets

    if not rows:
        raise UserError(f"data file {path} has no rows")
    try:
        try:
            return datasets.Dataset.from_list(rows, on_mixed_types="use_json")
        except TypeError:  # datasets < 5: no Json type
            return datasets.Dataset.from_list(rows)
    except Exception as e:
        _check_consistent(rows, path)
        raise UserError(f"cannot read {path}: {_first_line(e)}") from None


def _check_utf8(path: Path, chunk: int = 1 << 20):
    """Stream the file through a strict UTF-8 decoder; say where the first bad byte is."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset, line, blank = 0, 1, True  # offset: bytes before `block`
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            carried = len(decoder.getstate()[0])  # bytes of a character split across blocks
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                data = e.object
                line += data[carried:max(carried, e.start)].count(b"\n")
                raise UserError(f"{path} is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} "
                                f"(byte {offset - carried + e.start}); re-save the file as UTF-8") from None
            blank = blank and not text.strip()
            if not block:
                break
            line += block.count(b"\n")
            offset += len(block)
    if blank:
        raise UserError(f"data file {path} is empty (only whitespace)")


def _read_jsonl(path: Path) -> list[dict]:
    """Parse JSON lines in Python: slower than datasets' reader, but names the first bad line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {number} is not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {number} is not a JSON object ({{\"column\": value, …}})")
            rows.append(row)
    return rows


def _kind(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "text", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _check_consistent(rows: list[dict], path):
    """Arrow needs one type per column: name the first row that mixes, say, numbers and text."""
    seen: dict[str, tuple[str, int]] = {}
    for number, row in enumerate(rows, 1):
        for key, value in row.items():
            kind = _kind(value)
            if kind is None:
                continue
            first = seen.setdefault(key, (kind, number))
            if first[0] != kind:
                raise UserError(f"{path}: column {key!r} is {kind} in row {number} but {first[0]} in row "
                                f"{first[1]}; use one type per column (e.g. quote the labels)")


def _first_line(e: Exception) -> str:
    cause = e.__cause__ or e.__context__
    msg = str(e).strip() or type(e).__name__
    if cause is not None and "error occurred while generating" in msg:
        msg = str(cause).strip() or type(cause).__name__
    return msg.splitlines()[0][:300]


# -- formats ---------------------------------------------------------------------------------
def _find(columns: list[str], names) -> str:
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    return ""


def detect_format(columns, task: str, cfg: DataConfig | None = None) -> tuple[str, dict[str, str]]:
    """(format, roles) for a table with these columns: roles maps text/prompt/completion/messages/label
    to column names. `cfg` overrides the format and any column; missing columns are a UserError."""
    cfg = cfg or DataConfig()
    columns = list(columns)
    overrides = {"text": cfg.text_column, "prompt": cfg.prompt_column, "completion": cfg.completion_column,
                 "messages": cfg.messages_column, "label": cfg.label_column}
    for role, column in overrides.items():
        if column and column not in columns:
            raise UserError(f"{role} column {column!r} (--{role}-column) is not in the data "
                            f"(columns: {', '.join(columns)})")
    if task == "classification":
        if cfg.format not in ("auto", "classification"):
            raise UserError(f"format {cfg.format} is for causal-lm; classification needs `text` + `label` columns")
        formats = ["classification"]
    elif task == "causal-lm":
        if cfg.format == "classification":
            raise UserError("format classification needs the classification task (the model is a causal LM)")
        formats = ["messages", "prompt-completion", "text"] if cfg.format == "auto" else [cfg.format]
        overridden = [f for f in formats if any(overrides[r] for r in ROLES[f])]
        formats = overridden or formats
    else:
        raise UserError(f"task {task!r} unknown: use causal-lm or classification")

    for fmt in formats:
        roles = {}
        for role in ROLES[fmt]:
            names = CLASSIFICATION_TEXT if (fmt, role) == ("classification", "text") else CANDIDATES[role]
            roles[role] = overrides[role] or _find(columns, names)
        if fmt == "classification" and roles["label"] and not roles["text"]:
            others = [c for c in columns if c != roles["label"]]
            if len(others) == 1:
                roles["text"] = others[0]
        if all(roles.values()):
            return fmt, roles
    expected = " or ".join(EXPECTED[f] for f in formats)
    missing = [r for r in ROLES[fmt] if not roles[r]] if len(formats) == 1 else ["text"]
    flags = " ".join(f"--{r}-column NAME" for r in missing)
    raise UserError(f"no usable columns (the data has: {', '.join(columns) or 'none'}): {task} data needs "
                    f"{expected}; rename the columns, or name them: {flags}")


def preview(path: str, n: int = 20, task: str | None = None, cfg: DataConfig | None = None) -> Preview:
    """The first `n` rows as strings, with the detected format (task None: guess from the columns)."""
    table = load_table(path, "train")
    columns = list(table.column_names)
    rows = [{c: _cell(row[c]) for c in columns} for row in table.select(range(min(n, len(table))))]
    if task is None:
        task = "classification" if (cfg and cfg.label_column) or _find(columns, CANDIDATES["label"]) \
            else "causal-lm"
    try:
        fmt, roles = detect_format(columns, task, cfg)
        problem = ""
    except UserError as e:
        fmt, roles, problem = "", {}, str(e)
    return Preview(columns, rows, fmt, roles, len(table), problem)


def _cell(value, limit: int = 300) -> str:
    if value is None:
        return ""
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit - 1] + "…"


# -- preparation -----------------------------------------------------------------------------
def demo_path(task: str) -> tuple[str, str]:
    """(train, validation or "") of the packaged demo dataset of a task."""
    from importlib.resources import files

    root = files("lora_studio.resources") / "data"
    if task == "classification":
        return str(root / "demo_classification_train.jsonl"), str(root / "demo_classification_validation.jsonl")
    if task == "causal-lm":
        return str(root / "demo_causal.jsonl"), ""
    raise UserError(f"task {task!r} unknown: use causal-lm or classification")


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) row indices: a seeded random `fraction` held out, each kept in file order."""
    import numpy as np

    if fraction <= 0 or n < 2:
        return list(range(n)), []
    n_val = min(n - 1, max(1, round(n * fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def prepare(cfg: DataConfig, tokenizer, task: str, seed: int = 42,
            label_names: list[str] | None = None) -> Prepared:
    """Load, split, detect the format, tokenize (once) and mask: examples ready for `collate`.
    `label_names` fixes the class ids (a resumed run keeps its mapping)."""
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
        labels, val_labels, names = _label_ids(table, val_table, roles["label"], label_names)
        train, train_stats = _classification(_col(table, roles["text"]), labels, tokenizer, L)
        val, val_stats = _classification(_col(val_table, roles["text"]), val_labels, tokenizer, L) \
            if val_table is not None else ([], LengthStats(max_length=L))
    else:
        train, train_stats = _causal(fmt, table, roles, tokenizer, L)
        val, val_stats = _causal(fmt, val_table, roles, tokenizer, L) \
            if val_table is not None else ([], LengthStats(max_length=L))
    return Prepared(train, val, fmt, roles, names, {"train": train_stats, "validation": val_stats})


def _col(table, name: str) -> list:
    return table[name][:]  # one Arrow -> Python conversion, not one per row


def _label_ids(table, val_table, column: str, fixed: list[str] | None):
    """Class ids of both splits and the class names. Strings: sorted unique names; integers: kept
    as ids (names "0", "1", …); a `datasets.ClassLabel` column: its own names."""
    import datasets

    feature = table.features.get(column)
    class_label = isinstance(feature, datasets.ClassLabel)
    splits = [_normalize_labels(_col(table, column), column, class_label)]
    if val_table is not None:
        splits.append(_normalize_labels(_col(val_table, column), column, class_label))
    values = [v for s in splits for v in s if v is not None]
    numeric = all(isinstance(v, int) for v in values)
    if not numeric:
        splits = [[None if v is None else str(v) for v in s] for s in splits]
        values = [str(v) for v in values]
    if fixed:
        names = list(fixed)
        if numeric:
            bad = sorted({v for v in values if not 0 <= v < len(names)})
        else:
            bad = sorted(set(values) - set(names))
        if bad:
            raise UserError(f"label(s) {', '.join(map(str, bad[:5]))} are not among the run's classes "
                            f"({', '.join(names)})")
    elif class_label:
        names = list(feature.names)
    elif numeric:
        if any(v < 0 for v in values):
            raise UserError(f"label column {column!r} has negative numbers: use class ids 0, 1, … or names")
        names = [str(i) for i in range(max(values, default=-1) + 1)]
    else:
        names = sorted(set(values))
    index = {name: i for i, name in enumerate(names)}
    ids = [[v if v is None or numeric else index[v] for v in s] for s in splits]
    classes = {v for v in ids[0] if v is not None}
    if len(classes) < 2:
        only = ", ".join(names[c] for c in classes) or "none"
        raise UserError(f"label column {column!r} has {len(classes)} class ({only}) in the training data: "
                        "classification needs at least two")
    return ids[0], ids[1] if len(ids) > 1 else [], names


def _normalize_labels(values, column: str, class_label: bool) -> list:
    out = []
    for v in values:
        if v is None or (isinstance(v, str) and not v.strip()) or (class_label and v < 0):
            out.append(None)  # missing (ClassLabel -1 marks an unlabeled row)
        elif isinstance(v, bool):
            out.append(str(v))
        elif isinstance(v, float):
            if math.isnan(v):
                out.append(None)
            elif not v.is_integer():
                raise UserError(f"label column {column!r} has non-integer numbers ({v}): classification needs "
                                "class names or ids (regression is not supported)")
            else:
                out.append(int(v))
        elif isinstance(v, (int, str)):
            out.append(v.strip() if isinstance(v, str) else v)
        else:
            raise UserError(f"label column {column!r} holds {type(v).__name__} values: use one name or id per row")
    return out


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


def _causal(fmt: str, table, roles: dict, tok, L: int) -> tuple[list[dict], LengthStats]:
    """Untruncated (ids, loss mask) per row, then truncation, masking and the counts."""
    if fmt == "text":
        rows = _text_rows(_col(table, roles["text"]), tok)
    elif fmt == "prompt-completion":
        rows = _prompt_completion_rows(_col(table, roles["prompt"]), _col(table, roles["completion"]), tok)
    else:
        rows = _chat_rows(_col(table, roles["messages"]), tok)
    examples, lengths = [], []
    truncated = too_long = empty = 0
    for row in rows:
        if row is None or not any(row[1]):
            empty += 1
            continue
        ids, mask = row
        if len(ids) > L:
            ids, mask = ids[:L], mask[:L]  # cuts the end: the completion / last turns
            if not any(mask):
                too_long += 1
                continue
            truncated += 1
        lengths.append(len(row[0]))
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [t if m else IGNORE for t, m in zip(ids, mask)]})
    return examples, _stats(lengths, L, truncated=truncated, too_long_prompts=too_long, empty=empty)


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
