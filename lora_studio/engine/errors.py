"""One failure taxonomy for every caller (CLI, GUI, training loop). Torch-free and Qt-free.

Kinds, and what the caller does with them:
    user       the input is wrong: one line that says what to change (CLI: exit 2)
    disk       the disk is full: free space, then resume (the last complete checkpoint is kept)
    oom        out of memory: the message lists what to lower
    nonfinite  the loss became NaN/inf: the step, what to change, the last finite checkpoint kept
    bug        anything else: the traceback goes with it (CLI: exit 1)
"""

from __future__ import annotations

import errno
import traceback
from dataclasses import dataclass

from lora_studio.core.errors import UserError  # noqa: F401 - the one input error, from the core

KINDS = ("user", "disk", "oom", "nonfinite", "bug")


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite at `step`."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclass
class Failure:
    """What went wrong, for a person: the message says what happened and what to do."""

    message: str
    kind: str = "user"  # one of KINDS
    detail: str = ""  # a traceback, for bugs
    step: int = 0  # the training step it happened at (0: before training or not training)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"failure kind {self.kind!r} is not one of {KINDS}")

    @property
    def exit_code(self) -> int:
        return 1 if self.kind == "bug" else 2


def is_out_of_memory(e: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError (and torch.OutOfMemoryError) without importing torch here
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"


# what torch.save (a RuntimeError from its zip writer) and safetensors (SafetensorError) say on a full disk
# ("unexpected pos N vs M": its zip writer found the file shorter than what it wrote)
_DISK_FULL = ("no space left on device", "storagefull", "disk quota exceeded", "file write failed",
              "pytorchstreamwriter failed writing", "unexpected pos")


def is_disk_full(e: BaseException) -> bool:
    """A full disk, also when the writer turned the OSError into another exception."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    seen = set()
    while e is not None and id(e) not in seen:  # the message, or an OSError it was raised from
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(e, (RuntimeError, ValueError, TypeError)) or type(e).__name__ == "SafetensorError":
            if any(k in str(e).lower() for k in _DISK_FULL):
                return True
        e = e.__cause__ or e.__context__
    return False


def failure_of(e: BaseException, step: int = 0, where: str = "") -> Failure:
    """The Failure for an exception. `where`: the folder being written, for disk messages."""
    if isinstance(e, NonFiniteLoss):
        return Failure(str(e), "nonfinite", step=e.step)
    if isinstance(e, UserError):
        return Failure(str(e), "user", step=step)
    if is_out_of_memory(e):
        return Failure("out of memory: close other programs, or lower the batch size or max length", "oom", step=step)
    if is_disk_full(e):
        return Failure(f"the disk is full (writing {getattr(e, 'filename', None) or where or 'the output folder'}): "
                       "free some space and try again", "disk", step=step)
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Failure(f"cannot write {e.filename or where}: {e.strerror}; choose a folder you can write to",
                       "user", step=step)
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return Failure(f"{e.strerror}: {e.filename}", "user", step=step)
    return Failure(f"{type(e).__name__}: {e}", "bug", "".join(traceback.format_exception(e)), step)
