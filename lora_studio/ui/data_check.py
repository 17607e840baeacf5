"""The Data tab's "what is trained" part: the data check's warnings (above the table) and, for the
row selected in the table, its tokens with the trained ones highlighted. The check runs in a
worker (engine/datacheck.py: the same tokenizing and masking as training)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field, replace

from PySide6.QtWidgets import QTextBrowser, QVBoxLayout, QWidget

from lora_studio.ui.style import colors, current
from lora_studio.ui.widgets import label

ROWS = 50  # rows whose tokens come back (the preview table shows as many)


@dataclass
class TokenRow:
    row: int  # 1-based
    kept: bool
    pieces: list[str]
    trained: list[bool]


@dataclass
class CheckView:
    """What the worker hands the view: the summary, warnings and the first rows' tokens."""

    format: str
    max_length: int
    warnings: list  # datacheck.DataWarning
    trained_tokens: dict
    end_tokens: list[str]
    rows: dict[int, TokenRow] = field(default_factory=dict)


def run_check(cfg, task: str, model_ref: str, trust_remote_code: bool = False, rows: int = ROWS) -> CheckView | None:
    """In a worker: the data check of the training file with the model's tokenizer (None for
    classification, where no token is trained)."""
    from lora_studio.engine import datacheck
    from lora_studio.engine.models import demo_model_path, load_tokenizer
    from lora_studio.ui.probes import data_files

    if task != "causal-lm":
        return None
    path, _ = data_files(cfg, task)
    ref = model_ref or demo_model_path()
    tok = load_tokenizer(ref, trust_remote_code)
    c = datacheck.check(path, tok, replace(cfg), task, model=ref, end_ids=datacheck.model_end_ids(ref))
    out = CheckView(c.format, c.max_length, list(c.warnings), dict(c.trained_tokens), list(c.end_tokens))
    for r in c.detail[:rows]:
        out.rows[r.row] = TokenRow(r.row, r.kept, datacheck.pieces(tok, r.ids), list(r.trained))
    return out


def token_html(row: TokenRow, max_length: int, theme: str = "light") -> str:
    """The row's tokens as HTML: trained ones on a green background, alternate tokens a shade apart
    so that boundaries show, the cut at max length marked ✂, special characters made visible."""
    c = colors(theme)
    lighter = _mix(c["ok"], c["surface"], 0.3)  # every other trained token: the boundaries show
    out = []
    for i, (piece, trained) in enumerate(zip(row.pieces, row.trained)):
        if i == max_length:
            out.append(f'<span style="color:{c["bad"]}; font-weight:700"> ✂ cut at {max_length} tokens ✂ </span>')
        text = html.escape(piece).replace("\n", "↵<br>").replace(" ", "&nbsp;") or "∅"
        if trained:
            style = f'background:{lighter if i % 2 else c["ok"]}; color:#ffffff'
        else:
            style = f'color:{c["muted"]}; background:{c["alt"] if i % 2 else c["surface"]}'
        out.append(f'<span style="{style}">{text}</span>')
    return "".join(out)


def _mix(a: str, b: str, t: float) -> str:
    """Colour a moved a fraction t towards b (#rrggbb)."""
    x, y = (tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in (a, b))
    return "#" + "".join(f"{round(p + (q - p) * t):02x}" for p, q in zip(x, y))


class TrainedView(QWidget):
    """Warnings of the data check, and one row's tokens with the trained ones highlighted.
    `show_check(CheckView | None)` when a check arrives; `show_row(n)` for the table's row n (1-based)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        self.warnings = label("", "Error", wrap=True, selectable=True)
        self.summary = label("", "Hint", wrap=True)
        self.tokens = QTextBrowser()
        self.tokens.setObjectName("Mono")
        self.tokens.setMaximumHeight(150)
        self.tokens.setPlaceholderText("Select a row to see its tokens; the trained ones are highlighted.")
        for w in (self.warnings, self.summary, self.tokens):
            lay.addWidget(w)
        self.check: CheckView | None = None
        self.row = 0
        self.show_check(None)

    def show_check(self, check: CheckView | None, message: str = ""):
        self.check = check
        self.warnings.setVisible(bool(check and check.warnings))
        from lora_studio.ui.wording import for_gui

        self.warnings.setText("\n".join(f"⚠ {for_gui(w.message)}  [{w.code}]" for w in check.warnings) if check else "")
        self.setVisible(check is not None or bool(message))
        if check is None:
            self.summary.setText(message)
            self.tokens.clear()
            return
        y = check.trained_tokens
        ends = f" · end tokens {' '.join(check.end_tokens)}" if check.end_tokens else ""
        self.summary.setText((f"Trained tokens per row: min {y['min']} · median {y['median']:.0f} · max {y['max']}"
                              if y else "No row trains any token") + ends)
        self.show_row(self.row or 1)

    def show_row(self, n: int):
        self.row = n
        row = self.check.rows.get(n) if self.check else None
        if row is None:
            self.tokens.setPlainText("" if self.check is None else f"row {n}: only the first {ROWS} rows are shown")
            return
        head = (f"<b>row {n}</b>: {sum(row.trained)} of {len(row.pieces)} tokens trained" if row.kept
                else f"<b>row {n}</b>: trains nothing (training drops it)")
        self.tokens.setHtml(f"<div>{head}</div><div>{token_html(row, self.check.max_length, current())}</div>")

