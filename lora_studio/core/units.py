"""Numbers for people: bytes and counts with their unit (the CLI, the engine's reports and the GUI
all print them through here)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (binary steps of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_count(n: float, digits: int = 2) -> str:
    """1_234_567 -> '1.23M' (digits after the point; below a thousand, the integer)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{digits}f}{unit}"
    return str(int(n))
