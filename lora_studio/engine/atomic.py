"""Moved to lora_studio/core/atomic.py (kept so that old imports work)."""

from lora_studio.core.atomic import *  # noqa: F401,F403
from lora_studio.core.atomic import public_mode  # noqa: F401
