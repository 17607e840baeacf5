"""Moved to lora_studio/core/names.py (kept so that old imports work)."""

from lora_studio.core.names import ATTENTION, LOGICAL, MLP, check_lora, format_layers, parse_layers  # noqa: F401
