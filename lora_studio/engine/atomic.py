"""Writing files so that a kill or a full disk never leaves half of one: a temp name, then rename."""

from __future__ import annotations

import json
import os
from pathlib import Path


def atomic_write_bytes(path, data: bytes):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path, obj):
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())
