"""The command line's side of a Hub download (engine/hub.py): a progress line on stderr (rewritten
in place on a terminal, a line every few seconds otherwise); Ctrl-C stops it and keeps what was
fetched, and the next run continues from there."""

from __future__ import annotations

import sys
import time

from lora_studio.engine.errors import UserError


def fetch(ref: str, allow_pickle: bool = False, tokenizer_only: bool = False, stream=None) -> None:
    """Download hub id `ref` into the HF cache unless it is there already (a folder: nothing to do)."""
    from lora_studio.engine import hub

    if not hub.is_hub_id(ref) or hub.cached(ref, tokenizer_only) or hub.offline():
        return  # offline: the loader says what is missing
    stream = stream or sys.stderr
    tty = stream.isatty()
    shown = {"at": 0.0, "width": 0}

    def progress(p: hub.Progress):
        now = time.monotonic()
        finished = p.files_done == p.files
        if not finished and now - shown["at"] < (0.5 if tty else 5.0):
            return
        shown["at"] = now
        line = p.line()
        if tty:
            stream.write("\r" + line.ljust(shown["width"]))
            shown["width"] = len(line)
            if finished:
                stream.write("\n")
        else:
            stream.write(line + "\n")
        stream.flush()

    try:
        folder = hub.download(ref, progress, allow_pickle=allow_pickle, tokenizer_only=tokenizer_only)
    except KeyboardInterrupt:
        stream.write(f"\ndownload of {ref} stopped: what was fetched is kept, run the command again to continue\n")
        raise
    except hub.Cancelled as e:  # (only a GUI cancels; kept for callers that pass their own callback)
        raise UserError(str(e)) from None
    stream.write(f"{ref} is in the Hugging Face cache ({folder})\n")
    stream.flush()
