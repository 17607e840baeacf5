"""Task name -> the objective it trains (engine/objective.py): the one table a new task joins.

Kept apart from objective.py so that an objective in its own module (which subclasses
`objective.Objective`) is imported here, never by objective.py: no import circle.
"""

from __future__ import annotations

from typing import Callable

from lora_studio.engine.objective import CausalLM, Classification, Objective

# task -> a factory of the run's RunConfig (so an objective may read its options, e.g. a preference
# loss's beta, or whether batches are packed)
OBJECTIVES: dict[str, Callable[[object], Objective]] = {
    "causal-lm": lambda config: _packed() if config.train.packing else CausalLM(),
    "classification": lambda config: Classification(),
    "preference": lambda config: _preference(config),  # engine/preference.py: DPO, ORPO, SimPO
}


def _packed() -> Objective:
    from lora_studio.engine.packing import PackedCausalLM

    return PackedCausalLM()


def _preference(config) -> Objective:
    from lora_studio.engine.preference import PreferenceObjective

    return PreferenceObjective(config)


def objective_for(config) -> Objective:
    """The objective of a RunConfig (its `model.task`)."""
    task = config.model.task
    if task not in OBJECTIVES:
        from lora_studio.engine.errors import UserError

        raise UserError(f"task {task!r} has no training objective yet: use one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[task](config)
