"""Reading data: files (.jsonl .json .csv .tsv .parquet .txt), `datasets` folders and hub ids
as tables, with one clear error per unreadable input; the format and column roles of a table
(auto-detected, overridable in `DataConfig`); a preview for the GUI. No tokenizer, no torch, no Qt.
"""

from __future__ import annotations

import codecs
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from lora_studio.core.names import ROLES  # noqa: F401 - data format -> the columns it reads
from lora_studio.config import DataConfig
from lora_studio.engine.errors import UserError

EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
              ".txt": "text"}
TEXT_FILES = (".jsonl", ".json", ".csv", ".tsv", ".txt")

PAIR_COLUMNS = ("prompt", "chosen", "rejected")  # a preference row (engine/data_pref.py)

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
EXPECTED = {"text": "a `text` column", "prompt-completion": "`prompt` + `completion` columns",
            "messages": "a `messages` column (chat)", "classification": "`text` + `label` columns"}
VALIDATION_SPLITS = ("validation", "valid", "val", "dev", "test")


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
        raise UserError(_json_problem(path, e, e.lineno)) from None
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


_CONTROL = {"\t": ("tab", "\\t"), "\n": ("line break", "\\n"), "\r": ("carriage return", "\\r")}


def _json_problem(path, e: json.JSONDecodeError, line: int, one_per_line: bool = False) -> str:
    """Where the file stops being JSON and what to change there: json's own messages name no
    character and end mid-sentence ("Invalid control character at")."""
    what = e.msg.removesuffix(" at")
    what = what[:1].lower() + what[1:]
    if e.msg.startswith("Invalid control character"):
        char = e.doc[e.pos]
        name, escape = _CONTROL.get(char, (f"control character U+{ord(char):04X}", f"\\u{ord(char):04x}"))
        what = f"a raw {name} inside a string; write it as {escape}"
    elif one_per_line and e.msg.startswith("Unterminated string"):
        what = "a string not closed on its line; write a line break inside a string as \\n"
    elif one_per_line and e.msg == "Extra data":
        what = "more than one JSON value on the line; write one object per line"
    return f"{path} is not valid JSON at line {line}, column {e.colno}: {what}"


def _read_jsonl(path: Path) -> list[dict]:
    """Parse JSON lines in Python: slower than datasets' reader, but names the first bad line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # columns count within the line, as an editor shows them
            except json.JSONDecodeError as e:
                raise UserError(_json_problem(path, e, number, one_per_line=True)) from None
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
    if task == "preference":  # pairs: the columns are the format (a chat run or not is in the cells)
        return "preference", preference_columns(columns, cfg.prompt_column)
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
        raise UserError(f"task {task!r} unknown: use causal-lm, classification or preference")

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


def preference_columns(columns, prompt_column: str = "") -> dict[str, str]:
    """role -> column for prompt/chosen/rejected (case-insensitive); a UserError names what lacks."""
    lower = {c.lower(): c for c in columns}
    roles = {r: lower.get(r) for r in PAIR_COLUMNS}
    if prompt_column:
        roles["prompt"] = prompt_column if prompt_column in columns else None
    missing = [r for r, c in roles.items() if not c]
    if missing:
        raise UserError(f"preference data needs `prompt`, `chosen` and `rejected` columns; it lacks "
                        f"{', '.join(missing)} (it has: {', '.join(columns) or 'none'})")
    return roles


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
