"""Command lines that start a run elsewhere: torchrun on one or several machines, a Slurm batch
script (docs/distributed.md). Plain strings, no Qt, no torch: the GUI copies them to the clipboard."""

from __future__ import annotations

import shlex

PORT = 29500  # torchrun's rendezvous port on the first machine


def _check(nproc: int, nnodes: int):
    from lora_studio.engine.errors import UserError

    if int(nproc) < 1 or int(nnodes) < 1:
        raise UserError(f"processes per machine and machines must be at least 1, got {nproc} and {nnodes}")


def torchrun_options(nproc: int, nnodes: int = 1, endpoint: str = f"$HEAD:{PORT}") -> list[str]:
    """torchrun's own options: one machine (`--standalone`), or `nnodes` meeting at `endpoint`.
    The one place both the copied command line and `train --nproc` take them from."""
    _check(nproc, nnodes)
    if nnodes == 1:
        opts = ["--standalone"]
    else:
        opts = ["--nnodes", str(nnodes), "--node-rank", "$NODE_RANK", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", endpoint]
    return opts + ["--nproc-per-node", str(nproc)]


def torchrun_command(config_path, nproc: int, nnodes: int = 1, out: str | None = None,
                     endpoint: str = f"$HEAD:{PORT}") -> str:
    """The torchrun line for `config_path` (a run TOML): one machine (`--standalone`) or `nnodes`
    machines meeting at `endpoint` (the same line on every machine; `$NODE_RANK` 0 … nnodes-1)."""
    parts = ["torchrun", *torchrun_options(nproc, nnodes, endpoint), "-m", "lora_studio", "train", "--config",
             shlex.quote(str(config_path))]
    if out:
        parts += ["--out", shlex.quote(str(out))]
    return " ".join(parts)


def slurm_script(config_path, nproc: int, nnodes: int = 1, out: str | None = None, job_name: str = "lora-studio",
                 cpus_per_task: int = 8) -> str:
    """An `sbatch` script: one task per machine, each a torchrun with `nproc` processes (one per GPU)."""
    _check(nproc, nnodes)
    run_out = out or "runs/$SLURM_JOB_ID"
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={nproc}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        "set -euo pipefail",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
        f'srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node {nproc} --rdzv-id "$SLURM_JOB_ID" \\',
        f'     --rdzv-backend c10d --rdzv-endpoint "$head:{PORT}" \\',
        f"     -m lora_studio train --config {shlex.quote(str(config_path))} --out {shlex.quote(run_out) if out else run_out}",
        ""])


def cluster_text(config_path, nproc: int, nnodes: int = 1) -> str:
    """What "Copy command for a cluster" puts on the clipboard: both, with a line saying which is which."""
    return (f"# one machine, {nproc} GPU(s):\n{torchrun_command(config_path, nproc)}\n\n"
            f"# Slurm: save as train.sbatch, then: sbatch train.sbatch\n{slurm_script(config_path, nproc, nnodes)}")
