"""Layer selections as text ("0-5,8"), without torch: the config and the GUI thread use them."""

from __future__ import annotations

from lora_studio.engine import UserError


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
