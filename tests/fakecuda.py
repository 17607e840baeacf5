"""Taking the CUDA-only branches on a machine without a GPU.

Three tools, from the weakest to the strongest:

- `visible(monkeypatch, gpus=1)`: torch.cuda answers as on a machine with `gpus` GPUs (is_available,
  device_count, current_device, capability, name, properties, memory counters). `set_device` checks its
  argument the way the real one does (a torch.device without an index raises ValueError) and records it.
  No CUDA tensor exists: code that would create one must be stubbed by the test (e.g. load_model).
- `fake_tensors()`: FakeTensorMode with a shim, in which `cuda:0` tensors exist (shapes and dtypes only,
  no data), and a CPU tensor meeting a CUDA one raises FakeTensorDeviceMismatchError as on a GPU.
- `spawn(fn, world, *args)`: `world` processes on gloo through torch.multiprocessing.spawn and a
  FileStore (no port), for the DDP / FSDP2 branches.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

GiB = 2**30


def visible(monkeypatch, gpus: int = 1, capability=(8, 0), total_memory: int = 24 * GiB,
            name: str = "NVIDIA Fake GPU") -> SimpleNamespace:
    """torch.cuda as on a machine with `gpus` GPUs. Returns a record: `.set_device` holds the indices
    set_device was called with."""
    rec = SimpleNamespace(set_device=[], current=0)
    cuda = torch.cuda

    def index(device) -> int:
        # the real set_device's argument check (torch.cuda._get_device_index with optional=False)
        if isinstance(device, str):
            device = torch.device(device)
        if isinstance(device, torch.device):
            if device.type != "cuda":
                raise ValueError(f"Expected a cuda device, but got: {device}")
            if device.index is None:
                raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
            device = device.index
        if not 0 <= int(device) < gpus:
            raise RuntimeError("CUDA error: invalid device ordinal")
        return int(device)

    def set_device(device):
        rec.current = index(device)
        rec.set_device.append(rec.current)

    props = SimpleNamespace(name=name, total_memory=total_memory, major=capability[0], minor=capability[1],
                            multi_processor_count=132)
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(cuda, "current_device", lambda: rec.current)
    monkeypatch.setattr(cuda, "set_device", set_device)
    monkeypatch.setattr(cuda, "get_device_capability",
                        lambda d=None: (index(d) if d is not None else 0, tuple(capability))[1])
    monkeypatch.setattr(cuda, "get_device_name", lambda d=None: name)
    monkeypatch.setattr(cuda, "get_device_properties", lambda d=None: props)
    monkeypatch.setattr(cuda, "is_bf16_supported", lambda *a, **k: capability[0] >= 8)
    monkeypatch.setattr(cuda, "is_initialized", lambda: False)
    for counter in ("memory_allocated", "max_memory_allocated", "memory_reserved"):
        monkeypatch.setattr(cuda, counter, lambda d=None: 0)
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda d=None: None)
    monkeypatch.setattr(cuda, "empty_cache", lambda: None)
    return rec


# -- fake CUDA tensors ---------------------------------------------------------------------------
CUDA0 = torch.device("cuda", 0)
CPU = torch.device("cpu")
_NOT_LINKED = "not linked with support for cuda"


def _fix(d):
    if (isinstance(d, str) and d == "cuda") or (isinstance(d, torch.device) and d.type == "cuda" and d.index is None):
        return CUDA0
    return d


def fake_tensors(monkeypatch):
    """(FakeTensorMode, shim) to enter together (`with mode, shim:`): cuda:0 tensors on a CPU-only build.
    The shim presents CUDA arguments as CPU for the few C++ entry points that need a CUDA device guard."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten, tree_map

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    mode = FakeTensorMode(allow_non_fake_inputs=True)

    class Shim(TorchFunctionMode):
        def _fake(self, t):
            if isinstance(t, torch.Tensor) and not isinstance(t, FakeTensor):
                t = mode.from_tensor(t)
            if isinstance(t, FakeTensor):
                t.constant = None
            return t

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if "device" in kwargs:
                kwargs = {**kwargs, "device": _fix(kwargs["device"])}
            if func in (torch.Tensor.to, torch.Tensor.cuda):
                args = (self._fake(args[0]),) + tuple(_fix(a) for a in args[1:])
                if func is torch.Tensor.cuda:
                    return args[0].to(CUDA0)
            if func is torch.tensor and kwargs.get("device") is not None and \
                    torch.device(kwargs["device"]).type == "cuda":
                dev = kwargs.pop("device")
                return self._fake(func(*args, **kwargs)).to(_fix(dev))
            try:
                return func(*args, **kwargs)
            except RuntimeError as e:
                if _NOT_LINKED not in str(e):
                    raise
            flat, _ = tree_flatten((args, kwargs))
            flipped = [t for t in flat if isinstance(t, FakeTensor) and t.fake_device.type == "cuda"]
            for t in flipped:
                t.fake_device = CPU
            try:
                out = func(*args, **kwargs)
            finally:
                for t in flipped:
                    t.fake_device = CUDA0

            def back(x):
                if isinstance(x, FakeTensor) and x.fake_device.type == "cpu" and flipped:
                    x.fake_device = CUDA0
                return x

            return tree_map(back, out)

    return mode, Shim()


# -- several processes on gloo -------------------------------------------------------------------
def _entry(rank: int, world: int, store: str, fn, args):
    import torch.distributed as td

    torch.set_num_threads(1)
    td.init_process_group("gloo", store=td.FileStore(store, world), rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        if td.is_initialized():  # (train() ends its own group) no process tears the group down while
            td.barrier()  # another still has work in flight on it
    finally:
        if td.is_initialized():
            td.destroy_process_group()


def spawn(fn, world: int, *args, store_dir: str | Path | None = None):
    """fn(rank, world, *args) in `world` processes that share a gloo group (fn must be importable:
    a module-level function of a test module)."""
    import torch.multiprocessing as mp

    folder = Path(store_dir or tempfile.mkdtemp())
    store = folder / f"store-{fn.__name__}-{world}"
    mp.spawn(_entry, args=(world, str(store), fn, args), nprocs=world, join=True)
