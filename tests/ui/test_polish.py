"""Issue 13 leftovers: card sub-lines shown whole, disabled buttons that look disabled."""

import pytest
from PySide6.QtWidgets import QLabel, QPushButton

from lora_studio.engine.events import Eval, Started, Step


def lines_fit(lab: QLabel) -> bool:
    """Every line of the text fits the label's width, and all lines its height (nothing elided)."""
    fm, rect = lab.fontMetrics(), lab.contentsRect()
    lines = lab.text().split("\n")
    return (all(fm.horizontalAdvance(line) <= rect.width() for line in lines)
            and len(lines) * fm.lineSpacing() <= rect.height() + 2 and QLabel.text(lab) == lab.text())


def _step(step=120, total=300, **kw):
    args = dict(step=step, total_steps=total, epoch=1.2345, loss=0.71234, lr=1.234e-4, grad_norm=0.8,
                tokens_per_s=12345.0, elapsed=61.0, eta=3723.0, mem_allocated=1_300_000_000,
                mem_peak=1_400_000_000)
    args.update(kw)
    return Step(**args)


@pytest.mark.parametrize("size", [(1280, 800), (1366, 768)])
def test_card_lines_show_eval_and_accuracy_whole(qtbot, window, tmp_path, size):
    window.resize(*size)
    window.tabs.setCurrentWidget(window.training.parentWidget())
    qtbot.waitUntil(lambda: window.width() == size[0], timeout=2_000)
    view, c = window.training, window.controller
    c.started.emit(Started(out=str(tmp_path), total_steps=300, start_step=0, device="cpu", device_name="CPU",
                           precision="fp32", trainable_params=10, total_params=100, train_examples=1200,
                           validation_examples=300, task="classification"))
    c.stepped.emit(_step())
    c.evaluated.emit(Eval(120, 0.767812, 0.7523))
    qtbot.waitUntil(lambda: view.step.value.text() == "120 / 300", timeout=2_000)
    qtbot.wait(50)
    assert view.loss.sub.text() == "eval 0.7678\nacc. 75.2%"
    assert view.step.sub.text() == "epoch 1.23\nlr 1.23e-04"
    for card in (view.step, view.loss, view.speed, view.eta, view.memory):
        assert lines_fit(card.value), card.value.text()
    for lab in (view.step.sub, view.loss.sub):
        assert lines_fit(lab), lab.text()


def _luminance(c) -> float:
    def lin(v):
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return 0.2126 * lin(c.red()) + 0.7152 * lin(c.green()) + 0.0722 * lin(c.blue())


def _contrast(image) -> float:
    """WCAG contrast of the button's text: the pixel farthest in luminance from its face colour
    (the middle of its left padding)."""
    from PySide6.QtGui import QColor

    face = _luminance(QColor(image.pixel(6, image.height() // 2)))
    lum = [_luminance(QColor(image.pixel(x, y))) for y in range(4, image.height() - 4)
           for x in range(8, image.width() - 8)]
    far = max(lum, key=lambda v: abs(v - face))
    return (max(far, face) + 0.05) / (min(far, face) + 0.05)


@pytest.mark.parametrize("theme", ["dark", "light"])
@pytest.mark.parametrize("name", ["", "Primary"])
def test_disabled_buttons_look_disabled(qtbot, qapp, theme, name):
    from PySide6.QtWidgets import QWidget, QHBoxLayout

    from lora_studio.ui import style

    style.apply(qapp, theme)
    try:
        box = QWidget()
        qtbot.addWidget(box)
        lay = QHBoxLayout(box)
        on, off = QPushButton("Export adapter"), QPushButton("Export adapter")
        for b in (on, off):
            b.setObjectName(name)
            lay.addWidget(b)
        off.setEnabled(False)
        box.show()
        qtbot.waitExposed(box)
        c = style.colors(theme)
        assert c["disabled"] != c["text"] and c["disabled"] != c["muted"]
        from PySide6.QtGui import QPalette

        assert qapp.palette().color(QPalette.Disabled, QPalette.ButtonText).name() == c["disabled"]
        on_img, off_img = on.grab().toImage(), off.grab().toImage()
        # the text of a disabled button has at most half the contrast of an enabled one's, and a
        # disabled primary button loses its accent colour
        if not name:
            assert _contrast(off_img) < 0.5 * _contrast(on_img), (_contrast(off_img), _contrast(on_img))
        else:
            from PySide6.QtGui import QColor

            face = [QColor(img.pixel(6, img.height() // 2)) for img in (on_img, off_img)]
            assert face[0].name() == c["accent"] and face[1].name() == c["chip"]
    finally:
        style.apply(qapp, "light")
