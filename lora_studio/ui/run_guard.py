"""What the window checks before it touches a run (issue 22): one run at a time in this window, a
run another process trains left alone, a base this machine cannot train refused before Start; and
what a relaunch finds. Plain functions on the main window `w` (its dialogs are its own)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from lora_studio.ui.runs import runs_root, same_run, trained_elsewhere


def refuse_busy(w, run_dir: str, what: str) -> bool:
    """True (after a dialog saying why) when `what` ("open" | "continue" | "export") must not
    touch `run_dir` now: another run trains in this window, or a process trains this one."""
    active = w.active_run()
    name = Path(run_dir).name
    if active and (what != "export" or same_run(active, run_dir)):
        doing = "is training" if w.controller.state != "paused" else "is paused"
        if same_run(active, run_dir):
            text = f"{name} {doing} in this window: export it once it has finished or been stopped."
        else:
            text = (f"{Path(active).name} {doing} in this window, and the Training tab stays on it until it "
                    f"ends. Stop it first to {what} {name}; meanwhile the Runs tab shows its curves.")
        QMessageBox.information(w, f"Cannot {what} {name} now", text)
        return True
    if w.study.running and what != "export":
        QMessageBox.information(w, f"Cannot {what} {name} now", "A study is running in the Study tab: "
                                "stop it or let it finish first.")
        return True
    owner = trained_elsewhere(run_dir)
    if owner:
        QMessageBox.information(w, f"Cannot {what} {name} now",
                                f"{name} is being trained by {owner}. The Runs tab follows it live; {what} it "
                                "once that process has ended.")
        return True
    return False


def ask_replace(w, out: str) -> bool:
    """Start into a folder that holds files: the user confirms that the run in it is replaced."""
    answer = QMessageBox.question(w, "Replace this run?",
                                  f"{out} already holds files. Start a new run there? The run in it (its adapter, "
                                  "metrics and checkpoints) is replaced; other files are kept.")
    return answer == QMessageBox.Yes


def refuse_preflight(w, config, what: str) -> bool:
    """A base this machine cannot train on is refused before Start; one it trains slowly is asked."""
    from lora_studio.ui.training import preflight

    error, warning = preflight.check(config)
    if error:
        QMessageBox.warning(w, f"Cannot {what} this run here", error)
        return True
    if warning:
        answer = QMessageBox.question(w, "Train on this base?", f"{warning}\n\n{what.capitalize()} anyway?")
        return answer != QMessageBox.Yes
    return False


def say_interrupted(w):
    """After a relaunch: if the newest run did not finish and has a checkpoint, say so and offer
    to continue it (a run left by closing the window mid-training, or by a crash)."""
    newest = w.runs.rows[0] if w.runs.rows else None
    if newest is None or not newest.resumable or newest.state not in ("stopped", "killed"):
        return
    how = "was stopped" if newest.state == "stopped" else "was interrupted (its process ended)"
    w.training.show_interrupted(newest.path, newest.step, how)
    w.tabs.setCurrentWidget(w.training.parentWidget())  # where the banner offers to continue it
    w.statusBar().showMessage(f"{newest.name} {how} and can be continued: see the Training tab", 10000)


def open_study(w, folder: str = ""):
    """Show a study (its sweep.json) in the Study tab: after a restart, or from another machine."""
    from PySide6.QtWidgets import QFileDialog

    folder = folder or QFileDialog.getExistingDirectory(w, "Open a study folder", str(runs_root()))
    if not folder:
        return
    if not (Path(folder) / "sweep.json").is_file():
        QMessageBox.information(w, "Not a study", f"{folder} holds no sweep.json: choose a study's folder.")
        return
    if w.study.running:
        QMessageBox.information(w, "A study is running", "Stop it or let it finish first.")
        return
    w.study.load(folder)
    w.tabs.setCurrentWidget(w.study)
