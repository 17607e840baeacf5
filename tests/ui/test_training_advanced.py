"""The Training section's Advanced fold (GUI walkthrough #55): warmup, weight decay, gradient clipping
and the checkpoints kept, typed, loaded, saved and refused; and disabled inputs in the dark theme
(#54): never darker than the panel they sit on."""

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor

from gui_helpers import captured_start, make_draft, open_window, shut, typed
from lora_studio.config import RunConfig
from lora_studio.engine.train import read_metrics
from lora_studio.ui import style


def unfold(qtbot, s):
    if s.advanced_folded:
        qtbot.mouseClick(s.advanced, Qt.LeftButton)
    assert s.warmup.isVisible() and s.keep.isVisible()


def test_the_fold_starts_folded_says_its_values_and_remembers(qtbot, window, tiny_model, tiny_data, tmp_path):
    s = window.train_settings
    assert s.advanced_folded and not s.warmup.isVisible() and not s.clip.isVisible()
    assert s.advanced_summary.text() == "warmup 0 % · decay off · clip 1 · keep 3"  # the draft's warmup_ratio 0
    unfold(qtbot, s)
    assert not s.advanced_summary.isVisible()
    assert QSettings().value("sections/Training/advanced/collapsed", type=bool) is False
    other = open_window(qtbot, make_draft(tiny_model, tiny_data, tmp_path / "other"))
    try:
        assert not other.train_settings.advanced_folded and other.train_settings.warmup.isVisible()
    finally:
        shut(other)


def test_typed_values_count_on_ctrl_enter_and_reach_run_toml(qtbot, tiny_model, tiny_data, tmp_path):
    out = tmp_path / "run"
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, out, max_steps=6, save_every=2, eval_every=0))
    try:
        s = w.train_settings
        unfold(qtbot, s)
        for field, text in ((s.warmup, "50"), (s.decay, "0.05"), (s.clip, "0.25"), (s.keep, "1")):
            typed(qtbot, field, text)
        with qtbot.waitSignal(w.controller.finished, timeout=120_000):
            qtbot.keyClick(s.keep, Qt.Key_Return, Qt.ControlModifier)  # "1" still in the field, not left
        t = RunConfig.load(out / "run.toml").train
        assert (t.warmup_ratio, t.warmup_steps, t.weight_decay, t.max_grad_norm, t.keep_checkpoints) == \
               (0.5, 0, 0.05, 0.25, 1)
        lrs = [r["lr"] for r in read_metrics(out) if "loss" in r]
        assert lrs == pytest.approx([2e-3 / 3, 2e-3 * 2 / 3, 2e-3, 2e-3, 2e-3 * 2 / 3, 2e-3 / 3])  # 3 warmup steps
        assert [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-6"]
    finally:
        shut(w)


def test_a_configuration_loads_into_the_fields_and_saves_from_them(qtbot, window, tmp_path):
    s = window.train_settings
    path = tmp_path / "advanced.toml"
    config = window.session.build()
    config.train.warmup_ratio, config.train.weight_decay, config.train.max_grad_norm = 0.2, 0.01, 0.0
    config.train.keep_checkpoints = 7
    config.save(path)
    window.files.load_config(str(path))
    qtbot.waitUntil(lambda: window.session.draft.train.keep_checkpoints == 7, timeout=10_000)
    assert s.advanced_summary.text() == "warmup 20 % · decay 0.01 · clip off · keep 7"
    unfold(qtbot, s)
    assert (s.warmup.value(), s.decay.value(), s.keep.value()) == (20, 0.01, 7)
    assert s.clip.text() == "off"

    config.train.warmup_steps = 4  # steps override the share: said, until a share is typed
    config.save(path)
    window.files.load_config(str(path))
    qtbot.waitUntil(lambda: window.session.draft.train.warmup_steps == 4, timeout=10_000)
    assert s.warmup_steps.isVisible() and "4 warmup steps" in s.warmup_steps.text()
    typed(qtbot, s.warmup, "10")
    typed(qtbot, s.keep, "2")
    assert not s.warmup_steps.isVisible()

    saved = tmp_path / "saved.toml"
    window.files.save_config(str(saved))
    t = RunConfig.load(saved).train
    assert (t.warmup_ratio, t.warmup_steps, t.weight_decay, t.max_grad_norm, t.keep_checkpoints) == \
           (0.1, 0, 0.01, 0.0, 2)


def test_out_of_range_input_is_refused_with_a_clear_message(qtbot, window, monkeypatch):
    started = captured_start(window, monkeypatch)
    s = window.train_settings
    unfold(qtbot, s)
    problem = s.advanced_problem
    assert not problem.isVisible()
    before = s.warmup.value()
    typed(qtbot, s.warmup, "150")  # the 0 is dropped, and the field shows the value it keeps
    assert problem.isVisible() and problem.text() == "Warmup takes 0 to 99.9 % of the steps, not 150"
    qtbot.waitUntil(lambda: s.warmup.text() == s.warmup.textFromValue(before) + s.warmup.suffix(), timeout=2_000)
    qtbot.keyClick(s.warmup, Qt.Key_Return)  # Enter no longer takes the "15" left by the dropped key
    assert s.warmup.value() == before and problem.isVisible()
    typed(qtbot, s.warmup, "15")
    qtbot.keyClick(s.warmup, Qt.Key_Return)
    assert s.warmup.value() == 15 and not problem.isVisible()
    typed(qtbot, s.warmup, "150")
    assert problem.text() == "Warmup takes 0 to 99.9 % of the steps, not 150"
    typed(qtbot, s.clip, "-1")
    assert problem.text() == "Gradient clipping takes a norm of 0 (off) to 1000, not -1"
    assert window.session.draft.train.max_grad_norm >= 0
    typed(qtbot, s.keep, "0")  # under the minimum: refused when it is committed, here by Ctrl+Enter
    qtbot.keyClick(s.keep, Qt.Key_Return, Qt.ControlModifier)
    assert problem.text() == "Keep takes 1 to 10000 checkpoints, not 0"
    assert started[-1].train.keep_checkpoints == 3 and started[-1].train.warmup_ratio == 0.15
    typed(qtbot, s.decay, "0.1")  # a value taken (on Enter): the message goes
    qtbot.keyClick(s.decay, Qt.Key_Return)
    assert not problem.isVisible() and window.session.draft.train.weight_decay == 0.1


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
