"""FSDP2 without a whole model on every GPU (review finding N5).

Under torchrun with FSDP2 (asked for, or chosen by `auto` for a base over 60 % of one GPU), process 0
alone reads the weights, into host memory; every other process builds the same model on the meta
device (shapes, no memory). The adapters are injected everywhere alike. `Dist.wrap` then shards the
model (process 0's blocks go to its GPU one at a time, as they are sharded), gives the meta processes
empty shards on their GPU, and fills every shard from process 0's host copy
(`set_model_state_dict(..., broadcast_from_rank0=True)`), buffers included. No process ever holds
more than its shards plus one block on its GPU.

Not taken (every process loads as before): a quantized base (bitsandbytes loads onto a GPU), and
PiSSA / OLoRA initialisation (it needs the real weights on every process).
"""

from __future__ import annotations

import torch
import torch.distributed as td
import torch.nn as nn

FLAG = "lora_studio_fsdp_from_rank0"  # set on the model of every process that took this path


def plan(config, ref: str, device: torch.device, precision: str) -> str | None:
    """None (load as usual), "host" (process 0: load into host memory) or "meta" (the other processes)."""
    from lora_studio.core.names import PRINCIPAL_INITS

    # under torchrun, in its process group (distributed.launched() and initialised)
    if not (td.is_available() and td.is_initialized()) or config.model.quantize != "none" or \
            config.lora.init in PRINCIPAL_INITS:
        return None
    mode = config.train.distributed
    if mode == "auto":
        if device.type != "cuda":
            return None  # auto picks DDP off GPUs
        from lora_studio.engine.models import base_dtype, skeleton

        skel = skeleton(ref, config.model.task, 2, config.model.trust_remote_code)
        size = sum(p.numel() for p in skel.parameters()) * torch.finfo(base_dtype(device, precision)).bits // 8
        if size < 0.6 * torch.cuda.get_device_properties(device).total_memory:
            return None  # DDP (Dist.choose decides the same on the loaded model)
    elif mode != "fsdp":
        return None
    return "host" if td.get_rank() == 0 else "meta"


def build_on_meta(config, ref: str, dtype: torch.dtype, label_names=None) -> nn.Module:
    """The model `load_model` would give, on the meta device: the same config, labels and dtype."""
    from lora_studio.engine.models import auto_class, load_config

    cfg = load_config(ref, config.model.trust_remote_code)
    if config.model.task == "classification":
        n = len(label_names) if label_names else 2
        cfg.num_labels = n
        if label_names:
            cfg.id2label = dict(enumerate(label_names))
            cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    with torch.device("meta"):
        return auto_class(config.model.task).from_config(cfg, dtype=dtype,
                                                         trust_remote_code=config.model.trust_remote_code)


def host_state(runner: nn.Module, model: nn.Module) -> dict | None:
    """Process 0's full state (parameters and buffers, on the host), taken before sharding; None elsewhere
    and when the model was loaded as usual."""
    if not getattr(model, FLAG, False) or td.get_rank() != 0:
        return None
    return {k: v.detach() for k, v in runner.state_dict().items()}  # no copy: the host holds the model once


def fill_from_rank0(runner: nn.Module, model: nn.Module, state: dict | None, device: torch.device):
    """After fully_shard: empty shards on `device` for the meta processes, then every shard and buffer
    from process 0's host copy. Collective: every process calls it (it returns at once when the model
    was loaded as usual, on every process alike)."""
    if not getattr(model, FLAG, False):
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if any(p.device.type == "meta" for p in runner.parameters()):
        runner.to_empty(device=device)
    # every key (a tied head's name too: named_parameters() lists a shared weight once, load_state_dict wants both)
    set_model_state_dict(runner, state if state is not None else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for name, buf in runner.named_buffers():  # rotary tables and other buffers (some not in state_dict)
        if buf.device.type == "meta":
            raise RuntimeError(f"buffer {name} still on the meta device after sharding")
        if td.get_rank() == 0 and state is not None and name in state:
            buf.copy_(state[name].to(buf.device))
        td.broadcast(buf, src=0)
