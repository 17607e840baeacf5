"""Writing files so that a kill or a full disk never leaves half of one: a temp name, then rename."""

from __future__ import annotations

import json
import os
from pathlib import Path


def public_mode(path):
    """Give a written file the mode a plain `open` would (0666 less the umask): some writers
    (safetensors) create files 0600, which other users and tools then cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write_bytes(path, data: bytes):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        public_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path, obj):
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())
