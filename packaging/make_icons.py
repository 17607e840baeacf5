"""Render resources/icons/lora-studio.svg to the PNG icon set (16 … 512 px).

    QT_QPA_PLATFORM=offscreen python packaging/make_icons.py
"""

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"

app = QGuiApplication(sys.argv)
renderer = QSvgRenderer(str(ICONS / "lora-studio.svg"))
for size in (16, 24, 32, 48, 64, 128, 256, 512):
    img = QImage(size, size, QImage.Format_ARGB32)
    img.fill(Qt.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.Antialiasing)
    renderer.render(p)
    p.end()
    name = "lora-studio.png" if size == 256 else f"lora-studio-{size}.png"
    img.save(str(ICONS / name))
    print(ICONS / name)
