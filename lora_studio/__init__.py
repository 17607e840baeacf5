"""LoRA Studio: a workbench for Low-Rank Adaptation of transformer models.

The small, stable Python API (see DESIGN.md)::

    from lora_studio import LoraSpec, inject, merge, unmerge, save_adapter, load_adapter

Names are resolved lazily so that `import lora_studio` (and the GUI's first frame) does not pay
for importing torch.
"""

__version__ = "0.1.0"

_API = {
    "LoraSpec": "lora_studio.engine.lora",
    "inject": "lora_studio.engine.lora",
    "merge": "lora_studio.engine.lora",
    "unmerge": "lora_studio.engine.lora",
    "save_adapter": "lora_studio.engine.adapters",
    "load_adapter": "lora_studio.engine.adapters",
}
__all__ = [*_API, "__version__"]


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'lora_studio' has no attribute {name!r}")
