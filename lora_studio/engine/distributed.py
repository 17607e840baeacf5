"""Many processes under torchrun: process group, DDP / FSDP2 wrapping, data shards, full checkpoints.

The training loop (engine/train.py `_loop`) is the same in one process and in many; it asks a
`Dist` for what differs. `Dist()` is one process and every method is then a no-op, so a
single-process run computes exactly what it did before.

Data: with per-process batch b and N processes, micro-batch k of the run takes the same N·b
indices of the epoch's order as one process with batch N·b, and rank r takes the r-th slice of
b. Loss: each rank's mean is rescaled by (its target count / the global count) · N, so that the
gradient DDP/FSDP2 average over ranks equals the single-process mean over the global batch.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import torch
import torch.distributed as td
import torch.nn as nn

from lora_studio.core.names import DISTRIBUTED as MODES
from lora_studio.engine.errors import UserError

TIMEOUT_S = float(os.environ.get("LORA_STUDIO_DIST_TIMEOUT", "300"))  # a stuck collective fails after this


class LossModule(nn.Module):
    """The objective's loss as one module's forward, so DDP's and FSDP2's root hooks run (the fused
    loss reads the head's weight without calling the head). Returns (loss, stats)."""

    def __init__(self, model: nn.Module, objective=None):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict, targets=None, fn=None):
        """The objective's (loss, stats) of `batch`, or fn(model, batch): evaluation passes its own `fn`,
        so that its forward goes through the root too (FSDP2 must see the root's forward first, where
        it lazily initialises; each block then gathers and frees its own shards as in training).
        `targets` is the batch's host-found target rows (setup.Batch.targets) as an argument of its own:
        DDP and FSDP2 on CUDA rebuild the batch dict when they move inputs (`type(obj)(items)`), which
        drops the attribute, and the fused loss would then find the rows on the GPU (a sync per
        micro-batch)."""
        from lora_studio.engine.step import Batch

        if targets is not None or not isinstance(batch, Batch):
            batch = Batch(batch)
            batch.targets = targets
        if fn is not None:
            return fn(self.model, batch)
        if self.objective is None:
            from lora_studio.engine.objective import Objective

            self.objective = Objective()
        return self.objective.loss(self.model, batch)


def refuse_sharded_bnb(mode: str, optimizer: str):
    """bitsandbytes' 8-bit and paged optimizers call kernels that take no DTensor (FSDP2's sharded
    parameters): refused by name before anything is loaded, not a NotImplementedError at step 1."""
    if mode == "fsdp" and optimizer in ("adamw8bit", "paged_adamw"):
        raise UserError(f"--optimizer {optimizer} cannot step FSDP2's sharded parameters (bitsandbytes takes "
                        "no DTensor): use --optimizer adamw with --distributed fsdp, or --distributed ddp")


def launched() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE > 1), or in an initialised group."""
    return (td.is_available() and td.is_initialized()) or int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
    nccl with this process's GPU cuda:LOCAL_RANK, gloo on CPUs."""
    if td.is_initialized():
        return
    local = int(os.environ.get("LOCAL_RANK", "0"))
    # any CUDA device (auto, cuda, cuda:N as the GUI saves it) means nccl and this process's own GPU
    cuda = torch.cuda.is_available() and (device in ("auto", "cuda") or str(device).startswith("cuda:"))
    if cuda:
        if local >= torch.cuda.device_count():
            raise UserError(f"process {local} on this machine has no GPU of its own ({torch.cuda.device_count()} "
                            f"visible): use --nproc-per-node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
    td.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=TIMEOUT_S),
                          **({"device_id": torch.device("cuda", local)} if cuda else {}))


class Dist:
    """One process (the defaults) or one rank of a process group."""

    def __init__(self, rank: int = 0, world: int = 1, mode: str = "single"):
        self.rank, self.world, self.mode = rank, world, mode
        self.runner = None  # the wrapped LossModule (DDP or the FSDP2 root); None in one process
        self.device = torch.device("cpu")

    @classmethod
    def from_env(cls, device: str = "auto") -> "Dist":
        if not launched():
            return cls()
        init_from_env(device)
        return cls(td.get_rank(), td.get_world_size(), "pending")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1

    # -- wrapping -------------------------------------------------------------------------------
    def choose(self, mode: str, model: nn.Module, device: torch.device) -> tuple[str, str]:
        """(mode, why) for `auto`: DDP when the whole model fits one device with room for activations."""
        if mode not in MODES:
            raise UserError(f"distributed mode {mode!r} unknown: use one of {', '.join(MODES)}")
        if mode != "auto":
            return mode, f"--distributed {mode}"
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        if device.type != "cuda":
            return "ddp", f"on {device.type.upper()} every process holds the model ({size / 2**30:.2f} GiB) in host memory"
        free = torch.cuda.get_device_properties(device).total_memory
        if size < 0.6 * free:
            return "ddp", f"the model ({size / 2**30:.1f} GiB) fits one GPU ({free / 2**30:.0f} GiB) with room to train"
        return "fsdp", f"the model ({size / 2**30:.1f} GiB) needs over 60% of one GPU ({free / 2**30:.0f} GiB): " \
                       f"sharded over {self.world} GPUs"

    def wrap(self, model: nn.Module, mode: str, device: torch.device, objective=None,
             optimizer: str = "adamw") -> str:
        """Wrap the objective's loss of `model` for `mode` (ddp | fsdp | auto); returns the sentence
        that says what was chosen and why ("" in one process: nothing is wrapped)."""
        if not self.many:
            return ""
        self.mode, why = self.choose(mode, model, device)
        refuse_sharded_bnb(self.mode, optimizer)
        self.device = device
        runner = LossModule(model, objective)
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            # N17: no buffer broadcast each forward: the frozen base's buffers (rotary tables) are the same
            # on every process, and no trained module keeps running statistics
            self.runner = DDP(runner, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)
        else:  # N5: process 0's host copy fills the shards of the processes that built on meta
            from lora_studio.engine import fsdp_load

            state = fsdp_load.host_state(runner, model)
            self.runner = _fully_shard(runner, model)
            fsdp_load.fill_from_rank0(self.runner, model, state, device)
        what = "DDP (the model on every process)" if self.mode == "ddp" else "FSDP2 (the frozen base sharded)"
        return f"{self.world} processes, {what}: {why}"

    def loss(self, objective, model: nn.Module, batch: dict, count: int) -> tuple[torch.Tensor, dict]:
        """(loss, stats) of this process's micro-batch. With many processes the mean loss is
        weighted by (`count` / the global count) · N, so that the gradient DDP/FSDP2 average over
        the processes is the mean over the global micro-batch (count 0: a padding part)."""
        if self.runner is None:
            return objective.loss(model, batch)
        loss, stats = self.runner(dict(batch), getattr(batch, "targets", None))
        return loss * self.weight(_on(torch.tensor(count), self.device)), stats

    def autocast(self, s):
        from lora_studio.engine.step import autocast

        return autocast(s)  # FSDP2 too (GPU N13): the same casts as one process, never fp32 GEMMs under bf16

    def sync(self, last: bool):
        """Gradients are reduced across ranks only on the last micro-batch of a step."""
        if self.runner is None or last:
            return contextlib.nullcontext()
        if self.mode == "ddp":
            return self.runner.no_sync()
        return _fsdp_no_sync(self.runner)

    # -- the loop's forks ----------------------------------------------------------------------------
    def per_process_batch(self, bs: int, kept_global: int | None) -> tuple[int, str | None]:
        """(batch size per process, note): a run resumed on another number of processes keeps its
        global micro-batch (`kept_global` examples over all processes, from the checkpoint)."""
        if kept_global is None or kept_global == bs * self.world:
            return bs, None
        if kept_global % self.world:
            raise UserError(f"this run's micro-batch holds {kept_global} examples over all processes, which "
                            f"{self.world} processes cannot share evenly: resume with a number of processes "
                            f"that divides {kept_global}")
        return kept_global // self.world, (
            f"the run's micro-batch of {kept_global} examples is kept: batch size {kept_global // self.world} "
            f"per process (was {bs}) on {self.world} process{'es' if self.many else ''}")

    def should_stop(self, control, agreed: bool) -> bool:
        """Stop before the next step? One process: the user's request as it is now; many: only the
        stop every process agreed on at the last step (`agree`), so that all stop together."""
        return control.stop_requested if self.stops_alone else agreed

    @property
    def stops_alone(self) -> bool:
        """A stop acts at once, also inside an evaluation (one process); with many, only at a step's
        end, agreed, or the processes' collectives would part ways."""
        return not self.many

    @property
    def can_pause(self) -> bool:
        """Pause (and Try it while paused) is for one process."""
        return not self.many

    def scalar(self, x: torch.Tensor) -> float:
        """A 0-d tensor as a float (a DTensor, e.g. FSDP2's gradient norm, made whole first). Syncs."""
        return float(x.full_tensor() if hasattr(x, "full_tensor") else x)

    def sum_number(self, x: float) -> float:
        """A host number summed over the processes."""
        if not self.many:
            return float(x)
        return float(self.reduce_sum(torch.tensor(float(x), dtype=torch.float64, device=self.device)))

    def weighted_means(self, sums: dict, count: float) -> dict[str, float]:
        """{name: sum over the step's units / their count}, over all processes: `sums` are device
        tensors (the objective's stats x count), `count` this process's host count. Syncs once."""
        if not sums:
            return {}
        names = list(sums)
        x = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32) for k in names] +
                        [torch.tensor(float(count), device=sums[names[0]].device)])
        x = self.reduce_sum(x).tolist()
        return {k: v / max(x[-1], 1) for k, v in zip(names, x)}

    # -- data -------------------------------------------------------------------------------------
    def shard(self, idx: list[int], bs: int) -> tuple[list[int], bool]:
        """This rank's part of a global micro-batch, and whether it is real (an empty part, at an
        epoch's short tail, computes on one example with weight 0 so every rank joins the reduction)."""
        if not self.many:
            return idx, True
        part = idx[self.rank * bs:(self.rank + 1) * bs]
        return (part, True) if part else (idx[:1], False)

    def weight(self, local: torch.Tensor) -> torch.Tensor:
        """Factor for this rank's mean loss: local count / global count · N (count: target tokens
        for a causal LM, examples for classification; 0 for a padding part)."""
        total = local.clone().float()
        td.all_reduce(total)
        return local.float() * self.world / total.clamp_min(1)

    def reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.many:
            x = x.clone()
            td.all_reduce(x)
        return x

    def agree(self, *flags) -> list:
        """The flags as one process sees them; with many, each is true if it is on any rank (a stop
        seen by one rank stops all at the same step)."""
        if not self.many:
            return list(flags)
        t = _on(torch.tensor([float(bool(f)) for f in flags]), self.device)
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def seed(self, seed: int, step: int):
        """Per-rank dropout streams (one process keeps the checkpoint's RNG state as it is)."""
        if self.many:
            torch.manual_seed((seed * 1009 + self.rank) * 100_003 + step)

    def barrier(self):
        if self.many:
            td.barrier()

    def forward(self, model: nn.Module, fn, batch: dict):
        """fn(model, batch) for evaluation. Under FSDP2 through the wrapped root (a forward that goes
        around it makes the first block initialise as a root of its own: "FSDP state has already been
        lazily initialized"); one process and DDP call the model as it is (no collective)."""
        if self.mode != "fsdp" or self.runner is None:
            return fn(model, batch)
        return self.runner(dict(batch), getattr(batch, "targets", None), fn)

    # -- checkpoints -----------------------------------------------------------------------------
    def gather(self, model: nn.Module, optimizer) -> tuple[dict | None, dict | None]:
        """(full adapter tensors by parameter name, optimizer state in one process's layout), on CPU;
        collective on every rank. One process, and ranks other than 0: (None, None); one process
        reads the model itself."""
        if self.runner is None:
            return None, None
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        names = _trainable_names(self.runner)
        # the trained tensors only: the frozen base is never gathered (for a 70B base under FSDP2 that
        # would be 140 GB into rank 0's host memory at every checkpoint)
        msd = get_model_state_dict(self.runner, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                          ignore_frozen_params=True))
        osd = get_optimizer_state_dict(self.runner, optimizer, options=opts)
        if not self.main:  # with cpu_offload the full state lands on rank 0 only
            return None, None
        # keep the trained tensors only (a tied lm_head.weight may still come with ignore_frozen_params)
        adapter = {n: msd[n] for n in names}
        index = {n: i for i, n in enumerate(_optimizer_names(self.runner, optimizer))}
        state = {index[n]: v for n, v in osd["state"].items() if n in index}
        groups = [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]
        return adapter, {"state": state, "param_groups": groups}

    @contextlib.contextmanager
    def full_params(self, model: nn.Module, adapter: dict | None):
        """The model's trained parameters replaced by the gathered full tensors while saving (rank 0)."""
        if adapter is None:
            yield
            return
        saved = []
        for name, t in adapter.items():
            mod_name, _, pname = name.removeprefix("model.").rpartition(".")
            mod = model.get_submodule(mod_name)
            saved.append((mod, pname, mod._parameters[pname]))
            mod._parameters[pname] = nn.Parameter(t, requires_grad=False)
        try:
            yield
        finally:
            for mod, pname, p in saved:
                mod._parameters[pname] = p

    def load_optimizer(self, optimizer, state: dict):
        """A checkpoint's optimizer state (one process's layout) into this run, on every rank."""
        if self.runner is None:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = _optimizer_names(self.runner, optimizer)
        fqn = {"state": {names[i]: v for i, v in state["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(self.runner, optimizer, fqn, options=StateDictOptions(full_state_dict=True))

    def close(self):
        if self.many and td.is_initialized():
            td.destroy_process_group()


def _on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor onto `device` without a host sync (a pageable copy to a GPU waits for it:
    once per micro-batch that would be N9's sync again)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _trainable_names(runner: nn.Module) -> list[str]:
    """Trained parameter names as get_model_state_dict spells them (no DDP `module.` prefix), in
    the order of the optimizer's parameters."""
    inner = runner.module if hasattr(runner, "no_sync") and hasattr(runner, "module") else runner
    return [n for n, p in inner.named_parameters() if p.requires_grad]


def _optimizer_names(runner: nn.Module, optimizer) -> list[str]:
    """The names of the optimizer's parameters in the order one process's state_dict() numbers
    them (group after group: LoRA+ puts A and B in different groups)."""
    inner = runner.module if hasattr(runner, "no_sync") and hasattr(runner, "module") else runner
    name = {id(p): n for n, p in inner.named_parameters()}
    return [name[id(p)] for g in optimizer.param_groups for p in g["params"]]


def _fully_shard(runner: LossModule, model: nn.Module) -> nn.Module:
    """FSDP2: one unit per decoder block, then the root. A block whose fp32 adapters sit over a
    half-precision base stays one unit (FSDP2 all-gathers a unit's mixed dtypes as bytes; the
    gradients it reduce-scatters are the adapters', all fp32): units of their own per adapted layer
    cost ~8 all-gathers and 4 reduce-scatters more per block and step, all latency-bound (GPU N13)."""
    from torch.distributed.fsdp import fully_shard

    from lora_studio.engine.targets import decoder_blocks

    for block in decoder_blocks(model):
        fully_shard(block)
    fully_shard(runner)
    return runner


def _fsdp_no_sync(runner):
    @contextlib.contextmanager
    def ctx():
        runner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            runner.set_requires_gradient_sync(True)

    return ctx()
