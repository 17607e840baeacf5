"""The GUI's chat demo preset and the Training tab's Samples view."""

from __future__ import annotations

import json

import tiny
from lora_studio.engine.events import Samples


def test_samples_view_shows_base_and_chosen_step_with_changes_highlighted(window, qtbot):
    view = window.training.samples
    assert window.training.views.tabText(1) == "Samples"
    window.controller.samples.emit(Samples(0, [{"step": 0, "prompt": "Capital of Peru?", "text": "Lima is a city.",
                                                "stopped": False}]))
    window.controller.samples.emit(Samples(10, [{"step": 10, "prompt": "Capital of Peru?",
                                                 "text": "In short: Lima is the capital.", "stopped": True}]))
    assert [view.step.itemData(i) for i in range(view.step.count())] == [0, 10]
    assert view.shown_step() == 10  # the newest step, as it arrives
    page = view.table.toHtml()
    assert "Capital of Peru?" in page and "Lima is a city." in page and "[cut]" in page  # the base was cut
    from lora_studio.ui.training.samples_view import highlight

    marked = highlight("Lima is a city.", "In short: Lima is the capital.")
    assert marked.count("<span") == 2 and "In short:</span> Lima is" in marked  # "Lima is" unchanged
    view.step.setCurrentIndex(0)
    view.step.activated.emit(0)
    assert view.shown_step() == 0
    window.controller.samples.emit(Samples(20, [{"step": 20, "prompt": "Capital of Peru?", "text": "x",
                                                 "stopped": True}]))
    assert view.shown_step() == 0  # the user's pick stays


def test_opened_run_loads_its_samples(window, finished_run, tmp_path):
    rows = [{"step": s, "prompt": "p", "text": f"answer {s}", "stopped": True} for s in (0, 4, 8)]
    (finished_run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        window.training.show_history([], str(finished_run), None)
        assert sorted(window.training.samples.rows) == [0, 4, 8]
    finally:
        (finished_run / "samples.jsonl").unlink()


def test_chat_demo_preset_sets_model_chat_data_and_settings(window, qtbot, monkeypatch, tmp_path):
    from lora_studio.engine import demo_chat
    from lora_studio.ui.model_panel import CHAT_DEMO

    folder = tiny.llama_gguf_folder(tmp_path / "chat-model")  # stands in for the converted SmolLM2
    monkeypatch.setattr(demo_chat, "chat_model_path", lambda say=None: str(folder))
    combo = window.model_panel.path
    combo.setCurrentIndex(combo.findText(CHAT_DEMO))
    combo.activated.emit(combo.currentIndex())
    s = window.session
    qtbot.waitUntil(lambda: s.info is not None and s.draft.model.path == str(folder), timeout=60_000)
    train, validation = demo_chat.data_paths()
    assert s.draft.model.task == "causal-lm"
    assert (s.draft.data.path, s.draft.data.validation_path, s.draft.data.format) == (train, validation, "messages")
    assert sorted(s.draft.lora.targets) == ["k", "o", "q", "v"]
    assert (s.draft.train.max_steps, s.draft.train.lr) == (demo_chat.SETTINGS["train"]["max_steps"],
                                                           demo_chat.SETTINGS["train"]["lr"])


def test_try_it_uses_the_chat_template_for_a_chat_run(window, tmp_path):
    chat_run, plain_run = tmp_path / "chat", tmp_path / "plain"
    for folder in (chat_run, plain_run):
        folder.mkdir()
    (chat_run / "chat.json").write_text("{}")
    panel = window.tryit
    panel.set_run(str(chat_run), "causal-lm")
    assert panel.chat.isChecked()
    panel.set_run(str(plain_run), "causal-lm")
    assert not panel.chat.isChecked()
