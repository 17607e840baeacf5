"""Command lines for torchrun and Slurm (lora_studio.launch): exact text, parsed back with shlex."""

from __future__ import annotations

import shlex

import pytest

from lora_studio.engine.errors import UserError
from lora_studio.launch import cluster_text, slurm_script, torchrun_command


def test_torchrun_one_machine():
    cmd = torchrun_command("/cfg/my run.toml", 4)
    assert cmd == "torchrun --standalone --nproc-per-node 4 -m lora_studio train --config '/cfg/my run.toml'"
    assert shlex.split(cmd)[-1] == "/cfg/my run.toml"


def test_torchrun_several_machines():
    args = shlex.split(torchrun_command("run.toml", 8, nnodes=2, out="/shared/r1", endpoint="node0:29500"))
    assert "--standalone" not in args
    assert args[args.index("--nnodes") + 1] == "2" and args[args.index("--rdzv-endpoint") + 1] == "node0:29500"
    assert args[args.index("--nproc-per-node") + 1] == "8" and args[-2:] == ["--out", "/shared/r1"]
    assert args[args.index("-m") + 1:args.index("-m") + 3] == ["lora_studio", "train"]


def test_slurm_script():
    text = slurm_script("/cfg/run.toml", 8, nnodes=3)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --nodes=3" in lines and "#SBATCH --gpus-per-node=8" in lines
    assert "#SBATCH --ntasks-per-node=1" in lines
    joined = text.replace("\\\n", " ")
    srun = shlex.split(next(l for l in joined.splitlines() if l.startswith("srun")), posix=True)
    assert srun[:2] == ["srun", "torchrun"] and srun[srun.index("--nproc-per-node") + 1] == "8"
    assert srun[srun.index("--config") + 1] == "/cfg/run.toml"
    assert srun[srun.index("--out") + 1] == "runs/$SLURM_JOB_ID"


def test_cluster_text_has_both_and_bad_counts_are_refused():
    text = cluster_text("run.toml", 2)
    assert torchrun_command("run.toml", 2) in text and slurm_script("run.toml", 2) in text
    with pytest.raises(UserError, match="at least 1"):
        torchrun_command("run.toml", 0)
    with pytest.raises(UserError, match="at least 1"):
        slurm_script("run.toml", 1, nnodes=0)
