"""Checkpoints and exact resume: atomic step folders, RNG states, the data order of an epoch.

A checkpoint holds the adapter (PEFT format, loadable on its own) and `trainer_state.pt`: the
optimizer, scheduler and grad-scaler states, every RNG state and the data position (epoch,
micro-batch). The data order of an epoch is a pure function of (seed, epoch), so resuming from
step N replays steps N+1… bit for bit on a CPU.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

from lora_studio.engine.errors import UserError
from lora_studio.engine.runfolder import CHECKPOINTS, STATE_FILE, checkpoints, step_of


def rng_state(device: torch.device | None = None) -> dict:
    """The RNG states a resume restores. CUDA's only for a run on a GPU: a CPU run on a GPU machine
    must not initialise CUDA (a context on GPU 0) at every checkpoint."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> str:
    """Restore RNG states; returns a note when the GPU states could not all be restored (a run
    resumed on fewer GPUs, or on a CPU: dropout masks then differ from the uninterrupted run)."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    saved = state.get("cuda") or []
    if not torch.cuda.is_available():
        return "GPU random state not restored (no GPU now)" if saved else ""
    n = min(len(saved), torch.cuda.device_count())
    for i in range(n):
        torch.cuda.set_rng_state(saved[i].cpu(), i)
    return f"GPU random state restored for {n} of {len(saved)} GPUs" if n < len(saved) else ""


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def save_checkpoint(model, model_ref: str, run_dir: Path, state: dict, keep: int) -> Path:
    """checkpoints/step-N/ written as .tmp-step-N and renamed: a kill never leaves half of one."""
    from lora_studio.engine.adapters import atomic_save_tensors, save_adapter
    from lora_studio.engine.inits import PRINCIPAL_FILE, principal_state
    from lora_studio.engine.lora import lora_layers

    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step-{state['step']}"
    tmp = root / f".tmp-step-{state['step']}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_adapter(model, tmp, model_ref, residual=True)  # PiSSA/OLoRA: the A, B resume needs
        principal = principal_state(lora_layers(model))  # … and the A0, B0 of its residual base
        if principal:
            atomic_save_tensors(tmp / PRINCIPAL_FILE, principal)
        torch.save(state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half-written folder
    old = checkpoints(run_dir)
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_latest(run_dir) -> tuple[Path | None, dict | None, list[str]]:
    """(checkpoint, trainer state, notes) of the newest readable checkpoint. A damaged one (cut
    short by a kill or a full disk) is skipped for the one before, and the notes say so."""
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.inits import read_principal

    notes = []
    for ckpt in reversed(checkpoints(run_dir)):
        try:
            state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
            read_adapter(ckpt)
            read_principal(ckpt)  # a PiSSA/OLoRA run's residual factors, when it has them
            if state.get("step") != step_of(ckpt):
                raise ValueError(f"it holds step {state.get('step')}")
        except Exception as e:  # noqa: BLE001 - any damage means: use the one before
            notes.append(f"checkpoint {ckpt.name} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:80]}); "
                         "using the one before")
            continue
        return ckpt, state, notes
    if notes:
        raise UserError(f"every checkpoint of {run_dir} is damaged: {notes[-1]}; start a new run with the same "
                        f"settings (--config {run_dir}/run.toml --out NEW_DIR)")
    return None, None, notes
