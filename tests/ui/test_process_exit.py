"""Code review (issue 22): a failed multi-process run is blamed on the user only when the command
said so (exit 2); a bug (exit 1), a kill or torchrun's own failure is not the user's fault."""

from __future__ import annotations

import pytest

from lora_studio.config import RunConfig


@pytest.mark.parametrize("code, lines, kind", [
    (2, ["error: --lr must be positive"], "user"),
    (2, ["error: the disk is full (writing x): free some space and try again"], "disk"),
    (1, ["Traceback (most recent call last):", "error: RuntimeError: boom (a bug: please report it)"], "bug"),
    (-1, ["torch.distributed.elastic.multiprocessing.errors.ChildFailedError"], "bug"),
])
def test_exit_code_decides_whose_fault(qtbot, tmp_path, code, lines, kind):
    from lora_studio.ui.training.process import RunProcess

    proc = RunProcess(RunConfig().replace(out=str(tmp_path / "run")), 2)
    got = []
    proc.event.connect(got.append)
    proc.output = list(lines)
    proc._end(code)
    assert len(got) == 1 and got[0].kind == kind, got
