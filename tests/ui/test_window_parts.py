"""The window's parts share one interface (ui/parts.py): theme, run state and shutdown reach every
tab through `parts()`, and a tab that overrides nothing still takes part."""

from lora_studio.engine.errors import Failure
from lora_studio.ui.parts import Part, RunState
from lora_studio.ui.wording import run_failure


def test_every_tab_with_its_own_behaviour_is_a_part(window):
    parts = window.parts()
    assert all(isinstance(p, Part) for p in parts)
    tabs = [window.tabs.widget(i) for i in range(window.tabs.count())]
    for name in ("training", "spectra_tab", "tryit", "runs", "study"):  # shown in a tab (some padded)
        part = getattr(window, name)
        assert part in parts and any(t is part or t.isAncestorOf(part) for t in tabs), name


def test_theme_run_state_and_shutdown_reach_every_part(window, monkeypatch):
    calls = []
    for part in window.parts():
        for method in ("apply_theme", "set_run_state", "shutdown"):
            original = getattr(part, method)
            monkeypatch.setattr(part, method, lambda *a, _p=part, _m=method, _o=original: (calls.append((_p, _m, a)),
                                                                                        _o(*a))[1])
    window.apply_theme("dark")
    window._state_changed("idle")
    window.quiesce(ms=5000)
    for part in window.parts():
        assert [m for p, m, _ in calls if p is part] == ["apply_theme", "set_run_state", "shutdown"], part
    states = {a[0] for p, m, a in calls if m == "set_run_state"}
    assert states == {RunState("idle", "", window.run_dir, False, None)}  # one value, the same for all


def test_run_state_decides_what_each_part_offers(window, finished_run):
    window.run_dir = str(finished_run)
    window.tryit.set_run(str(finished_run), "causal-lm")
    shown = RunState("idle", "", str(finished_run), False, None)
    for part in window.parts():
        part.set_run_state(shown)
    assert window.tryit.run.isEnabled() and window.study.start_button.isEnabled()
    training = RunState("running", str(finished_run), str(finished_run), False, None)
    for part in window.parts():
        part.set_run_state(training)
    assert not window.tryit.run.isEnabled() and "Pause or stop" in window.tryit.source.text()
    assert not window.study.start_button.isEnabled() and window.runs.active == str(finished_run)
    paused = RunState("paused", str(finished_run), str(finished_run), False, 6)
    window.tryit.set_run_state(paused)
    assert window.tryit.run.isEnabled() and window.tryit.paused_at == 6  # Try it on the live weights
    window.runs.set_run_state(RunState(study_running=True))
    assert window.runs.busy and not window.runs.active


def test_shutdown_stops_the_fit_estimate_and_drops_late_results(window):
    window.fit._timer.start()
    generation = window.fit._generation
    window.fit.shutdown()
    assert not window.fit._timer.isActive() and window.fit._generation == generation + 1


def test_a_full_disk_says_where_to_free_space_and_how_to_go_on():
    title, shown = run_failure(Failure("the disk is full (writing x)", "disk", detail="trace", step=7), "/r/run-1")
    assert title == "Disk full" and shown.kind == "user" and shown.step == 7 and shown.detail == ""
    assert "free some space where /r/run-1 is" in shown.message and "Continue a stopped run" in shown.message
    assert run_failure(Failure("x", "oom"), "r")[0] == "Out of memory"
    assert run_failure(Failure("x", "bug"), "r")[0] == "Training failed"
