"""Issue 13 item 5: the Spectra tab at 1280×800 and 1366×768: no sideways scrolling, the effective
rank heatmap whole, legends under the plots instead of over the curves."""

import pytest
from PySide6.QtCore import QPoint, QRect

from lora_studio import LoraSpec, inject
from lora_studio.engine.events import Spectra
from lora_studio.engine.spectra import analyse

import tiny


@pytest.fixture(scope="module")
def modules():
    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q", "k", "v", "o"], rank=4, alpha=8))
    return analyse(tiny.randomize_adapters(model, seed=2))


def inside(widget, ancestor) -> bool:
    """`widget`'s rectangle lies within `ancestor`'s width (its full height may scroll)."""
    top_left = widget.mapTo(ancestor, QPoint(0, 0))
    return top_left.x() >= 0 and top_left.x() + widget.width() <= ancestor.width()


@pytest.mark.parametrize("size", [(1280, 800), (1366, 768)])
def test_spectra_fit_laptop_widths(qtbot, window, modules, size):
    window.resize(*size)
    tab = window.spectra_tab
    window.tabs.setCurrentWidget(tab)
    tab.event_arrived(Spectra(12, modules), shown=True, live=True)
    view = tab.view
    qtbot.waitUntil(lambda: window.width() == size[0] and view.stack.currentIndex() == 1, timeout=5_000)
    qtbot.wait(100)
    scroll = view.parentWidget().parentWidget()
    assert scroll.horizontalScrollBar().maximum() == 0  # nothing to scroll sideways to
    assert view.width() <= scroll.viewport().width()
    assert view.wide is False  # the narrow arrangement: three rows
    assert inside(view.eff, view) and view.eff.width() >= 150 and view.eff.height() >= 150
    assert inside(view.table, view) and inside(view.resize_button, view) and inside(view.open_button, view)
    for plot in (view.sigma, view.cumulative):
        assert plot.legend.isVisible() and plot.legend_entries()  # the first layer is selected
        below = plot.legend.mapTo(view, QPoint(0, 0)).y() >= plot.mapTo(view, QPoint(0, 0)).y() + plot.height()
        assert below, "the legend is under the plot, not over its curves"
        names = [name for name, _ in plot.legend_entries()]
        assert all(name in plot.legend.text().replace("&nbsp;", " ") for name in names)


def test_spectra_wide_window_uses_one_row(qtbot, window, modules):
    window.resize(1920, 1080)
    tab = window.spectra_tab
    window.tabs.setCurrentWidget(tab)
    tab.event_arrived(Spectra(12, modules), shown=True, live=True)
    view = tab.view
    qtbot.waitUntil(lambda: view.width() > 1300, timeout=5_000)
    top = view.splitters[0]
    assert view.wide and [top.widget(i) for i in range(top.count())] == list(view.sections[:3])
    assert QRect(QPoint(0, 0), view.size()).contains(QRect(view.eff.mapTo(view, QPoint(0, 0)), view.eff.size()))
