"""Light and dark appearance: Fusion style, a palette and one small stylesheet with colour tokens."""

from __future__ import annotations

import re
from importlib.resources import files

from PySide6.QtGui import QColor, QFont, QGuiApplication, QPalette
from PySide6.QtCore import Qt

LIGHT = {
    "bg": "#f4f5f8", "surface": "#ffffff", "input": "#ffffff", "alt": "#f8f9fb", "border": "#e1e4ea",
    "input_off": "#f4f5f8",  # a disabled input: greyer than the white panel
    "text": "#1b2130", "muted": "#6a7385", "chip": "#e8ebf0",
    "accent": "#5b50e8", "accent_hover": "#4a3fd6", "soft": "#eeecfd", "accent_border": "#cfcaf9",
    "ok": "#138a4b", "ok_soft": "#e3f5ea", "warn": "#b25e00", "warn_soft": "#fdf0dc",
    "bad": "#d23c3c", "bad_soft": "#fde8e8", "disabled": "#a9afbb", "disabled_border": "#eceef2",
}
DARK = {
    "bg": "#14161b", "surface": "#1c1f26", "input": "#23272f", "alt": "#20232a", "border": "#2e333d",
    "input_off": "#1c1f26",  # a disabled input: the panel's own colour, never darker (darker reads as active)
    "text": "#e7e9ef", "muted": "#9199a8", "chip": "#2c313b",
    "accent": "#8c84ff", "accent_hover": "#9d96ff", "soft": "#2a2850", "accent_border": "#4b4690",
    "ok": "#4ccb85", "ok_soft": "#173325", "warn": "#f0a44b", "warn_soft": "#3a2a14",
    "bad": "#ff6b6b", "bad_soft": "#3d1d1f", "disabled": "#5a606c", "disabled_border": "#23262d",
}
# plot colours (pyqtgraph) per theme: train loss, smoothed, eval, accuracy, learning rate
PLOT = {
    "light": {"raw": "#c4bff8", "ema": "#5b50e8", "eval": "#e0772b", "acc": "#138a4b", "lr": "#2f8fd8",
              "grid": 0.18},  # grid: alpha for pyqtgraph's showGrid (the spectra plots use it)
    "dark": {"raw": "#6b66b8", "ema": "#a39dff", "eval": "#f5a25d", "acc": "#4ccb85", "lr": "#5ab0ff",
             "grid": 0.22},
}
FONTS = ["Inter", "Segoe UI", "SF Pro Text", "Helvetica Neue", "Cantarell", "Noto Sans", "DejaVu Sans"]


def system_is_dark() -> bool:
    app = QGuiApplication.instance()
    hints = app.styleHints() if app else None
    scheme = hints.colorScheme() if hints is not None and hasattr(hints, "colorScheme") else None
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    return app is not None and app.palette().color(QPalette.Window).lightness() < 128


def resolve(theme: str) -> str:
    """"system" | "light" | "dark" -> "light" | "dark"."""
    if theme in ("light", "dark"):
        return theme
    return "dark" if system_is_dark() else "light"


def colors(theme: str) -> dict[str, str]:
    return DARK if resolve(theme) == "dark" else LIGHT


def stylesheet(theme: str) -> str:
    c = colors(theme)
    qss = (files("lora_studio.resources") / "style.qss").read_text(encoding="utf-8")
    return re.sub(r"@([a-z_]+)", lambda m: c.get(m.group(1), m.group(0)), qss)


def apply(app, theme: str = "system") -> str:
    """Style the whole application; returns the resolved theme ("light" or "dark")."""
    name = resolve(theme)
    c = colors(name)
    app.setStyle("Fusion")
    pal = QPalette()
    for role, key in ((QPalette.Window, "bg"), (QPalette.Base, "input"), (QPalette.AlternateBase, "alt"),
                      (QPalette.Text, "text"), (QPalette.WindowText, "text"), (QPalette.Button, "surface"),
                      (QPalette.ButtonText, "text"), (QPalette.Highlight, "accent"), (QPalette.ToolTipBase, "surface"),
                      (QPalette.ToolTipText, "text"), (QPalette.PlaceholderText, "muted"), (QPalette.Mid, "border"),
                      (QPalette.Link, "accent")):
        pal.setColor(role, QColor(c[key]))
    pal.setColor(QPalette.HighlightedText, QColor("#ffffff"))
    for role in (QPalette.Text, QPalette.WindowText):
        pal.setColor(QPalette.Disabled, role, QColor(c["muted"]))
    pal.setColor(QPalette.Disabled, QPalette.ButtonText, QColor(c["disabled"]))  # dimmer than muted labels
    pal.setColor(QPalette.Disabled, QPalette.Button, QColor(c["bg"]))
    app.setPalette(pal)
    font = QFont()
    font.setFamilies(FONTS)
    font.setPointSizeF(10)
    app.setFont(font)
    app.setStyleSheet(stylesheet(name))
    app.setProperty("lora_theme", name)
    return name


def current(app=None) -> str:
    app = app or QGuiApplication.instance()
    return (app.property("lora_theme") if app else None) or "light"


def repolish(widget):
    """Re-apply the stylesheet after a dynamic property (state, kind…) changed."""
    widget.style().unpolish(widget)
    widget.style().polish(widget)
