"""Everything that computes. No Qt import here, ever (tests/engine/test_no_qt.py checks it)."""

import threading

from lora_studio.engine.errors import UserError  # noqa: F401 - the engine's one user-facing error


_import_lock = threading.Lock()
_warm = False


def warm_imports():
    """Import torch and transformers once, one thread at a time.

    torch's first import is not thread-safe: two threads importing it at once (the GUI's model
    probe and the training worker, say) can each see the other's half-initialised modules and
    fail ("partially initialized module 'torch.nn.parameter'"). Every thread that is about to
    use the engine calls this first; after the first call it costs one attribute read.
    """
    global _warm
    if _warm:
        return
    with _import_lock:
        if not _warm:
            import torch  # noqa: F401
            import transformers  # noqa: F401

            import lora_studio.engine.train  # noqa: F401 - so Start does not import it in the GUI thread

            _warm = True
