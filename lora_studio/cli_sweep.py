"""`lora-studio sweep`: the rank study (engine/sweep.py) from the command line."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from lora_studio.engine.errors import UserError


def cmd_sweep(a) -> int:
    from lora_studio.cli_train import Progress, config_from_args
    from lora_studio.engine.events import Control
    from lora_studio.engine.sweep import parse_ranks, parse_targets_sets, run_sweep

    if not a.out:
        raise UserError("give the sweep folder with --out DIR")
    config = config_from_args(a)
    from lora_studio.cli_train import check_quantize

    check_quantize(config)
    control = Control()
    old = signal.signal(signal.SIGINT, lambda *_: control.stop())
    try:
        doc = run_sweep(config, a.out, parse_ranks(a.ranks), a.seeds,
                        parse_targets_sets(a.targets_sets, config.lora.targets), a.fixed_budget,
                        Progress(a.quiet), control, a.overwrite)
    finally:
        signal.signal(signal.SIGINT, old)
    if not doc["complete"]:
        print(f"sweep stopped after {len(doc['runs'])} run(s): run the same command again to continue", file=sys.stderr)
        return 130
    print(f"{len(doc['runs'])} runs; summary in {Path(a.out) / 'sweep.json'} and {Path(a.out) / 'report.md'}")
    return 0
