"""Issue 22: the GUI never acts on the wrong run and never aborts.

Opening, continuing or exporting another run while one trains or is paused is refused and leaves
the live view and its controls alone; the banner's actions act on the run that produced them; a
finished run is never resumed (rewritten); a run another process trains is neither opened nor
continued; a 4-bit base on a machine with no CUDA GPU is refused before Start; a task still
running when its runner is dropped never makes Qt abort."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from gui_helpers import make_draft, open_window, shut
from lora_studio.engine import runfolder


def _stamps(run):
    return {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}


def _stopped_run(tiny_model, tiny_data, out, at=3, **lora):
    """A run stopped (resumable) at step `at`, trained by the engine."""
    from lora_studio.engine.events import Control
    from lora_studio.engine.train import train

    control = Control()
    draft = make_draft(tiny_model, tiny_data, out, max_steps=50, eval_every=0, save_every=0)
    for k, v in lora.items():
        setattr(draft.lora, k, v)
    train(draft.build(), lambda ev: type(ev).__name__ == "Step" and ev.step == at and control.stop(), control)
    return out


def test_dropping_a_runner_with_a_running_task_does_not_abort(tmp_path):
    """Code review 1: wait_all used to drop a QThread still running; Qt then aborted (exit 134)."""
    script = textwrap.dedent("""
        import gc, sys, time
        from PySide6.QtWidgets import QApplication
        app = QApplication(sys.argv)
        from lora_studio.ui.tasks import TaskRunner
        r = TaskRunner()
        r.start(time.sleep, 1.0, what="a long merge")
        still = r.wait_all(ms=100)
        assert still == ["a long merge"], still
        del r
        gc.collect()
        time.sleep(1.5)
        app.processEvents()
        print("alive")
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alive" in done.stdout


def test_export_dialog_closes_only_after_its_export(qtbot, tmp_path):
    """Closing the export dialog during a long export neither blocks nor aborts: it says so and
    closes once the export has ended."""
    import threading

    from lora_studio.ui.export_dialog import ExportDialog

    dialog = ExportDialog("")
    qtbot.addWidget(dialog)
    dialog.show()
    release = threading.Event()
    dialog.tasks.start(release.wait, 30, on_done=lambda r: dialog._done({}), what="the export")
    dialog.reject()
    assert dialog.isVisible() and "still running" in dialog.state.text()
    release.set()
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=10_000)
    qtbot.waitUntil(lambda: not dialog.tasks.busy, timeout=10_000)


def test_another_run_is_not_opened_continued_or_exported_while_one_trains(qtbot, tiny_model, tiny_data, tmp_path,
                                                                          finished_run, dialogs):
    """GUI N1: Runs ▸ Open / Continue / Export of run A while run B is paused leaves B's view and
    controls; A's files are not touched."""
    from PySide6.QtCore import QSettings

    root = tmp_path / "runs"
    root.mkdir()
    a = root / "a-finished"
    shutil.copytree(finished_run, a)
    before = _stamps(a)
    QSettings().setValue("folders/runs_root", str(root))
    b = root / "b-live"
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, b, max_steps=2000, eval_every=0))
    try:
        with qtbot.waitSignal(w.controller.paused, timeout=90_000):
            qtbot.mouseClick(w.header.start, Qt.LeftButton)
            qtbot.waitSignal(w.controller.stepped, timeout=60_000).wait()
            w.controller.pause()
        w.runs.refresh()
        w.runs.select([a])
        assert not w.runs.open_button.isEnabled() and not w.runs.continue_button.isEnabled()
        w.open_run(str(a))  # what a double-click does
        w.continue_run(str(a))
        qtbot.wait(300)
        assert [s.kind for s in dialogs.shown] == ["information", "information"]
        assert "b-live" in dialogs.shown[0].text and "Stop it first" in dialogs.shown[0].text
        assert w.run_dir == str(b) and w.training.run_dir == str(b)  # the live view stays on B
        assert w.controller.state == "paused" and w.header.pause.isEnabled() and w.header.stop.isEnabled()
        w.runs.select([b])  # B itself: Export refused while it trains, Open shows its live view
        assert not w.runs.export_button.isEnabled() and w.runs.open_button.isEnabled()
        w.export(str(b))
        assert len(dialogs.shown) == 3 and not hasattr(w, "export_dialog")

        with qtbot.waitSignal(w.controller.finished, timeout=30_000):
            w.controller.stop()
        assert _stamps(a) == before
        w.run_dir = str(a)  # whatever the window shows next, the banner's Continue is about B
        with qtbot.waitSignal(w.controller.started, timeout=60_000) as started:
            qtbot.mouseClick(w.training.banner.first, Qt.LeftButton)
        assert started.args[0].out == str(b) and started.args[0].start_step > 0
        with qtbot.waitSignal(w.controller.finished, timeout=30_000):
            w.controller.stop()
        assert _stamps(a) == before
    finally:
        shut(w)


def test_a_finished_run_is_never_continued(window, finished_run, dialogs):
    before = _stamps(finished_run)
    window.continue_run(str(finished_run))
    assert not window.controller.running
    assert dialogs.shown[-1].title == "Nothing to continue" and "finished" in dialogs.shown[-1].text
    assert _stamps(finished_run) == before


@pytest.fixture
def cli_process():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p
    p.kill()
    p.wait()


def test_a_run_another_process_trains_is_refused(window, finished_run, tmp_path, cli_process, dialogs):
    """Run lock: run_state.json names a live process that is not this one."""
    run = tmp_path / "cli-run"
    shutil.copytree(finished_run, run)
    runfolder.write_run_state(run, "running", 4, 8)
    import json

    st = json.loads((run / runfolder.RUN_STATE_FILE).read_text())
    st["pid"] = cli_process.pid
    (run / runfolder.RUN_STATE_FILE).write_text(json.dumps(st))
    before = _stamps(run)
    window.open_run(str(run))
    window.continue_run(str(run))
    window.export(str(run))
    assert len(dialogs.shown) == 3
    assert all(f"process {cli_process.pid}" in s.text for s in dialogs.shown)
    assert not window.controller.running and window.run_dir != str(run)
    assert _stamps(run) == before


def test_a_base_this_machine_cannot_train_is_refused_before_start(window, monkeypatch, dialogs):
    """GUI N2: engine.quantize.preflight's error is a dialog that says what to change, before any
    thread starts or any folder is made; its warning (4-bit on a CPU: slow) is asked."""
    from lora_studio.engine import quantize

    said = {"nf4": ("this machine cannot train on a nf4 base (no kernel)", None)}
    monkeypatch.setattr(quantize, "preflight", lambda q, device="auto": said.get(q, (None, None)))
    window.variants.quantize.setCurrentIndex(window.variants.quantize.findData("nf4"))
    assert window.session.draft.model.quantize == "nf4"
    out = window.session.draft.out
    window.header.start.click()
    assert [s.kind for s in dialogs.shown] == ["warning"]
    assert "cannot train on a nf4 base" in dialogs.shown[0].text and "Base precision" in dialogs.shown[0].text
    assert not window.controller.running and not os.path.exists(out)
    said["nf4"] = (None, "a base quantized to nf4 on the CPU: slow")
    dialogs.answer = QMessageBox.No
    window.header.start.click()
    assert dialogs.shown[-1].kind == "question" and "slow" in dialogs.shown[-1].text
    assert not window.controller.running and not os.path.exists(out)


def test_continue_loads_the_runs_settings(window, tiny_model, tiny_data, tmp_path, qtbot):
    """GUI N4: the sidebar shows the settings of the run that trains (rank 2, not the draft's 8)."""
    run = _stopped_run(tiny_model, tiny_data, tmp_path / "r2", rank=2, alpha=4)
    assert window.session.draft.lora.rank == 8
    with qtbot.waitSignal(window.controller.started, timeout=60_000):
        window.continue_run(str(run))
    assert window.session.draft.lora.rank == 2 and window.session.draft.lora.alpha == 4
    with qtbot.waitSignal(window.controller.finished, timeout=30_000):
        window.controller.stop()


def test_closing_with_a_task_still_running_asks_and_never_aborts(window, qtbot, dialogs):
    """Code review 1, the window's side: closing while a long task runs says what runs and lets the
    user keep the window (No) or quit once it has finished (Yes)."""
    import threading

    release = threading.Event()
    window.session.tasks.start(release.wait, 60, what="a long merge")
    dialogs.answer = QMessageBox.No
    window.close()
    assert window.isVisible()
    assert dialogs.shown[-1].title == "Still running" and "a long merge" in dialogs.shown[-1].text
    dialogs.answer = QMessageBox.Yes
    window.close()
    assert window.isVisible()  # waits for the task …
    release.set()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)  # … then closes by itself
