"""Classification data's labels: class names or ids to class ids (the run's own classes on a
resume), and the check that the text and label columns are not swapped. Read by data.prepare."""

from __future__ import annotations

import math

from lora_studio.engine.errors import UserError


def _col(table, name: str) -> list:
    return table[name][:]  # one Arrow -> Python conversion, not one per row


def check_text_and_label(texts: list, labels: list, roles: dict, fixed=None):
    """Refuse text and label columns that look swapped: a text column that holds no text (numbers,
    or nothing), or class names that are nearly all different and longer than the texts."""
    tc, lc = roles["text"], roles["label"]
    swap = (f"are the columns swapped? Name them with --text-column {lc} --label-column {tc}" if tc != lc else
            "name the columns with --text-column and --label-column")
    strings = [t for t in texts if isinstance(t, str) and t.strip()]
    if texts and not strings:
        kinds = sorted({type(t).__name__ for t in texts if t is not None}) or ["nothing"]
        raise UserError(f"the text column {tc!r} holds {'/'.join(kinds)}, not text: {swap}")
    names = [str(v) for v in labels if v is not None]
    if fixed or len(names) < 20 or not strings:
        return
    distinct = len(set(names))
    longer = sum(map(len, names)) / len(names) > 2 * sum(map(len, strings)) / len(strings)
    if distinct > 0.9 * len(names) and longer:
        raise UserError(f"the label column {lc!r} has {distinct} different values in {len(names)} rows, longer "
                        f"than the texts in {tc!r}: a label is a class name; {swap}")


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
