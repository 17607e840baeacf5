"""The window at laptop sizes (issue 13 items 3, 5): nothing that carries a number is cut off, the
window can be narrower than 1024 px, and the sidebar's sections fold."""

import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QLabel


def fully_visible(w) -> bool:
    """The widget is shown, whole, inside every scroll viewport and the window."""
    if not w.isVisible():
        return False
    return w.visibleRegion().boundingRect() == QRect(0, 0, w.width(), w.height())


def not_elided(lab: QLabel) -> bool:
    return lab.wordWrap() or lab.fontMetrics().horizontalAdvance(lab.text()) <= lab.contentsRect().width()


@pytest.mark.parametrize("size", [(1280, 800), (1366, 768)])
def test_numbers_are_fully_visible_at_laptop_sizes(qtbot, window, size):
    window.resize(*size)
    window.tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: window.width() == size[0], timeout=2_000)
    qtbot.wait(50)
    d = window.details
    numbers = [lab for lab in d.findChildren(QLabel) if any(ch.isdigit() for ch in lab.text()) and lab.isVisible()]
    assert numbers, "the budget shows numbers"
    for lab in numbers:  # per-projection counts, the memory table's both columns
        assert fully_visible(lab) and not_elided(lab), lab.text()
    for card in (window.cards.trainable, window.cards.share, window.cards.file, window.cards.memory):
        assert fully_visible(card.value) and not_elided(card.value), card.value.text()
    table = d.modules  # the module names are not cut
    for c in range(table.columnCount()):
        assert table.columnViewportPosition(c) + table.columnWidth(c) <= table.viewport().width()


def test_minimum_width_and_folding_sections(qtbot, window):
    assert window.minimumSizeHint().width() <= 1024
    window.resize(1280, 800)
    s = window.train_settings
    for section in (window.model_panel, window.adapter_panel, window.data_panel):
        qtbot.mouseClick(section.toggle, Qt.LeftButton)
        assert section.collapsed and not section.content.isVisible()
    qtbot.waitUntil(lambda: fully_visible(s.lr), timeout=2_000)  # Training fields reachable without scrolling
    qtbot.mouseClick(window.model_panel.toggle, Qt.LeftButton)
    assert window.model_panel.content.isVisible()


def test_a_short_laptop_window_keeps_the_plots(qtbot, window):
    """GUI N6/N7: the window fits a 1366 × 768 laptop (~700 px usable under a title bar and a panel),
    and with a banner up the loss plot keeps a readable height instead of ~40 px of curve."""
    assert window.minimumSizeHint().height() <= 700
    window.resize(1366, 768)
    window.tabs.setCurrentWidget(window.training.parentWidget())
    window.training.banner.show_message("Done: 60 steps, adapter saved in /home/someone/Documents/LoRA Studio/"
                                        "runs/run-2026-12-06-024131. Eval loss 0.2345, accuracy 91.5%.", "info",
                                        ("Try it", None), ("Export…", None))
    qtbot.waitUntil(lambda: window.height() == 768, timeout=2_000)
    qtbot.waitUntil(lambda: window.training.plots.loss.height() >= 140, timeout=5_000)  # (laid out lazily)
    assert window.training.plots.loss.getAxis("left").labelText == "nats / example"  # a classifier's loss


def test_targets_numbers_whole_at_the_minimum_width(qtbot, window):
    """GUI N7: at the minimum width the numbers move below the grid rather than being cut."""
    width = window.minimumSizeHint().width()
    window.resize(width, 800)
    window.tabs.setCurrentIndex(0)
    qtbot.waitUntil(lambda: window.width() == width, timeout=2_000)
    qtbot.wait(50)
    area = window.tabs.widget(0).details  # the numbers' scroll area
    viewport = area.viewport()
    numbers = [lab for lab in area.widget().findChildren(QLabel)
               if any(ch.isdigit() for ch in lab.text()) and lab.isVisible()]
    assert numbers
    for lab in numbers:
        right = lab.mapTo(viewport, lab.rect().topRight()).x()
        assert right <= viewport.width() and not_elided(lab), lab.text()
    body = window.sidebar.widget()
    assert body.width() >= body.minimumSizeHint().width()  # the sidebar's fields are not cut either


def test_header_state_chip_whole_at_1280(qtbot, window):
    """GUI N16: the chip showed "Training · 1…", "Data not usable: see t…"; the model chip gives way."""
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.width() == 1280, timeout=2_000)
    chip = window.header.state
    for text in ("Evaluating base model… 128/200", "Training · 1,234/2,000", "Data not usable: see the Data tab",
                 "Pausing after the eval … 128/200"):
        window.header.set_state(text, "running")
        qtbot.waitUntil(lambda: chip.width() >= chip.sizeHint().width(), timeout=2_000)


def test_study_plots_name_their_axes(qtbot):
    """GUI N19: the Study plots had no y-axis name."""
    from lora_studio.ui.study.plots import LiveLoss, LossVsRank

    for cls in (LiveLoss, LossVsRank):
        plot = cls()
        qtbot.addWidget(plot)
        assert plot.plot_item.getAxis("left").labelText == "loss (nats)"


def test_header_model_chip_whole_in_a_wide_window(qtbot, window):
    """Walkthrough: "all-MiniLM-L6-v…" was elided even at 1920 px, with the room beside it empty;
    at 1280 it still gives way to the state chip (test above)."""
    from PySide6.QtWidgets import QLabel

    chip = window.header.model
    chip.setText("all-MiniLM-L6-v2 · bert · classification")
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: window.width() == 1920, timeout=2_000)
    qtbot.waitUntil(lambda: QLabel.text(chip) == chip.text(), timeout=2_000)  # whole, not elided
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.width() == 1280, timeout=2_000)
    assert chip.maximumWidth() == 150
