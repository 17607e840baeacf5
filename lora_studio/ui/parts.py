"""What the main window asks of each part it owns (the tabs and the Will-it-fit panel): one small
interface, so a new tab is one class that overrides what it needs and one entry in the window's
`parts()`.

- `apply_theme(name)`: the application's theme changed ("light" | "dark"); recolour plots.
- `set_run_state(state)`: on every change of the run state, what trains and what is shown.
- `shutdown()`: the window closes: stop timers and background work (the window then waits for
  every TaskRunner, so a part only stops what a TaskRunner does not own).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunState:
    """What every part may need to know about the window's run, in one value."""

    state: str = "idle"  # idle | starting | running | pausing | paused | stopping
    active_run: str = ""  # the run training in this window ("" none)
    shown_run: str = ""  # the run shown: trained here or opened ("" none)
    study_running: bool = False
    paused_step: int | None = None  # the step a paused run holds at

    @property
    def training(self) -> bool:
        return self.state != "idle"


class Part:
    """A mixin for the window's parts: every method does nothing unless the part overrides it."""

    def apply_theme(self, name: str) -> None:
        pass

    def set_run_state(self, state: RunState) -> None:
        pass

    def shutdown(self) -> None:
        pass
