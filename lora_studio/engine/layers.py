"""The names of what LoRA adapts, without torch: logical projections, layer selections as text
("0-5,8"), and the one validation of LoRA settings (the config, LoraSpec and the GUI use it)."""

from __future__ import annotations

import math
import numbers

from lora_studio.engine.errors import UserError

LOGICAL = ("q", "k", "v", "o", "gate", "up", "down")  # logical projections, attention then MLP
ATTENTION = ("q", "k", "v", "o")
MLP = ("gate", "up", "down")


def check_lora(targets, rank, alpha, dropout) -> tuple[list[str], int, float, float]:
    """Validated (targets, rank, alpha, dropout), or a UserError that says what to change."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = [str(t).strip() for t in (targets or []) if str(t).strip()]
    if not targets:
        raise UserError("no targets: tick at least one projection (e.g. q,v)")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank <= 0:
        raise UserError(f"rank must be a positive integer, got {rank!r} (try 8)")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise UserError(f"alpha must be a number > 0, got {alpha!r} (a common choice is 2 x rank)")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise UserError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return targets, int(rank), float(alpha), float(dropout)


def parse_layers(text: str | None) -> list[int] | None:
    """'0-5,8' -> [0, 1, 2, 3, 4, 5, 8]; '' or None or 'all' -> None (every layer)."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-"))
                if b < a:
                    raise ValueError(part)
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise UserError(f"layers {text!r} not understood: use numbers and ranges like 0-5,8") from None
    return sorted(set(out))


def format_layers(layers: list[int] | None) -> str:
    if not layers:
        return "all"
    parts, start = [], layers[0]
    for a, b in zip(layers, layers[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(parts)
