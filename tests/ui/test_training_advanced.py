"""Disabled inputs in the dark theme (GUI walkthrough #54): never darker than the panel they sit on."""

from PySide6.QtGui import QColor

from lora_studio.ui import style


def pixel(widget) -> QColor:
    """The colour the widget paints at an inner point clear of its text, frame and arrows."""
    image = widget.grab().toImage()
    return image.pixelColor(image.width() * 2 // 3, image.height() // 2)


def test_disabled_inputs_read_as_inactive(qtbot, window):
    """#54: in the dark theme a disabled input was darker than the panel, so it looked the most
    active thing there; it now has the panel's colour. In the light theme it stays grey on white."""
    held_out, max_length = window.data_panel.split, window.data_panel.max_length
    window.session.set_data(validation_path=window.session.draft.data.path)  # a file: nothing held out
    qtbot.waitUntil(lambda: not held_out.isEnabled(), timeout=5_000)
    try:
        for theme in ("dark", "light"):
            window.set_theme(theme)
            panel = QColor(style.colors(theme)["surface"])
            off, on = pixel(held_out), pixel(max_length)
            if theme == "dark":
                assert off.lightness() >= panel.lightness() and off.lightness() < on.lightness(), off.name()
            else:
                assert off.lightness() < on.lightness() <= panel.lightness(), off.name()
    finally:
        window.set_theme("light")
