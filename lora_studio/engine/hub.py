"""A model from the Hugging Face Hub into the local HF cache: with progress (bytes, speed, ETA),
cancellable, and resumable — a stopped download leaves `<blob>.part` in the cache and the next
attempt asks only for the rest (HTTP Range). huggingface_hub (>= 1.0) deletes its partial files
on failure, so the bytes are fetched here; the files land in its cache layout (blobs/, snapshots/,
refs/), where `from_pretrained(hub_id)` finds them. HF_ENDPOINT and HF_HUB_OFFLINE apply.

Progress goes to a plain callback `progress(Progress) -> bool | None`: False cancels (the GUI
wraps it; the CLI prints it). No torch, no Qt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lora_studio.engine.errors import UserError

CHUNK = 256 * 1024  # bytes per read; the progress callback runs at most every REPORT_S seconds and per file
REPORT_S = 0.2
WANTED = (".json", ".safetensors", ".txt", ".model", ".tiktoken", ".jinja", ".py")  # config, weights, tokenizer
TOKENIZER = ("tokenizer", "vocab", "merges", "special_tokens_map", "added_tokens", "chat_template",
             "config.json", "generation_config.json", "spiece")


class Cancelled(Exception):
    """The user cancelled a download; what was fetched stays in the cache for the next attempt."""


@dataclass
class Progress:
    repo: str
    file: str  # the file being fetched
    done: int  # bytes on disk of all planned files (what an earlier attempt left counts)
    total: int  # bytes of all planned files
    speed: float  # bytes/s over this attempt
    eta: float | None  # seconds left at that speed (None until measurable)
    files_done: int
    files: int

    def line(self) -> str:
        eta = "" if self.eta is None else f", {_duration(self.eta)} left"
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        return (f"downloading {self.repo}: {_mib(self.done)} of {_mib(self.total)}{pct} at {_mib(self.speed)}/s"
                f"{eta} [{self.files_done}/{self.files} files, {self.file}]")


@dataclass
class Planned:
    name: str
    size: int
    etag: str
    url: str  # where the bytes are (after the hub's own redirect)


@dataclass
class Plan:
    repo: str
    commit: str
    folder: Path  # the repo's folder in the cache
    files: list[Planned] = field(default_factory=list)

    @property
    def snapshot(self) -> Path:
        return self.folder / "snapshots" / self.commit


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode() or any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_hub_id(ref: str) -> bool:
    """`org/name` or `name` that is not a path on this machine."""
    if not ref or Path(ref).expanduser().exists() or ref.startswith((".", "/", "~")) or "\\" in ref:
        return False
    return ref.count("/") <= 1 and not ref.endswith("/")


def _wanted(names: list[str], allow_pickle: bool, tokenizer_only: bool) -> list[str]:
    top = [n for n in names if "/" not in n]  # sub-folders hold other formats (onnx/, original/, gguf …)
    if tokenizer_only:
        return [n for n in top if n.startswith(TOKENIZER) or n in ("config.json", "generation_config.json")
                or n.endswith((".model", ".tiktoken", ".jinja"))]
    keep = [n for n in top if n.endswith(WANTED)]
    if allow_pickle and not any(n.endswith(".safetensors") for n in top):
        keep += [n for n in top if n.endswith(".bin")]
    return keep


def plan(repo: str, revision: str = "main", allow_pickle: bool = False, tokenizer_only: bool = False,
         cache: Path | str | None = None, timeout: float = 10.0) -> Plan:
    """Which files to fetch, their sizes and blob names: one API call and one HEAD per file, each
    with a short timeout, so that an unknown name or an unreachable hub fails in seconds."""
    from huggingface_hub import HfApi, errors, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import repo_folder_name

    if offline():
        raise UserError(f"model {repo!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                        "unset it to download the model, or give a model folder")
    api = HfApi(endpoint=endpoint())
    what = f"model {repo!r} is neither a local folder nor in the Hugging Face cache"
    try:
        info = api.model_info(repo, revision=revision, timeout=timeout)
    except (errors.RepositoryNotFoundError, errors.HFValidationError):
        raise UserError(f"{what}, and the hub has no model of that name (check the spelling, "
                        "or log in for a private or gated one)") from None
    except errors.RevisionNotFoundError:
        raise UserError(f"model {repo!r} has no revision {revision!r}") from None
    except Exception as e:  # network: DNS, timeout, proxy
        raise UserError(f"{what}, and the hub cannot be reached ({str(e).splitlines()[0][:120]}): "
                        "check the name and the network, or give a model folder") from None
    names = _wanted([s.rfilename for s in info.siblings or []], allow_pickle, tokenizer_only)
    if not tokenizer_only and "config.json" not in names:
        raise UserError(f"{repo} has no config.json at its top level: it is not a transformers model")
    if not tokenizer_only and not allow_pickle and not any(n.endswith(".safetensors") for n in names):
        raise UserError(f"{repo} has only pickled weights (.bin), which can run code when loaded; allow "
                        "pickles (--allow-pickle) if you trust the source")
    out = Plan(repo, info.sha, Path(cache or cache_dir()) / repo_folder_name(repo_id=repo, repo_type="model"))
    for name in names:
        try:
            meta = get_hf_file_metadata(hf_hub_url(repo, name, revision=info.sha, endpoint=endpoint()), timeout=timeout)
        except Exception as e:  # noqa: BLE001 - the hub answered the API call but not this file
            raise UserError(f"cannot read {name} of {repo} from the hub ({str(e).splitlines()[0][:120]})") from None
        if meta.etag is None or meta.size is None:
            raise UserError(f"the hub gave no size or ETag for {name} of {repo}: try again later")
        out.files.append(Planned(name, int(meta.size), meta.etag, meta.location))
    return out


def download(repo: str, progress: Callable[[Progress], bool | None] | None = None, revision: str = "main",
             allow_pickle: bool = False, tokenizer_only: bool = False, cache: Path | str | None = None,
             timeout: float = 10.0) -> Path:
    """Fetch what `repo` needs that the cache lacks; returns its snapshot folder. Raises Cancelled
    when `progress` returns False (the partial file is kept), UserError on a bad name or network."""
    p = plan(repo, revision, allow_pickle, tokenizer_only, cache, timeout)
    blobs = p.folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    total = sum(f.size for f in p.files)

    def on_disk(f: Planned) -> int:
        blob = blobs / f.etag
        return f.size if blob.exists() else (_size(blob.with_name(blob.name + ".part")))

    start, start_bytes, last = time.monotonic(), sum(on_disk(f) for f in p.files), 0.0
    done = start_bytes

    def report(name: str, files_done: int, force: bool = False):
        nonlocal last
        now = time.monotonic()
        if progress is None or (not force and now - last < REPORT_S):
            return
        last = now
        speed = (done - start_bytes) / max(now - start, 1e-6)
        eta = (total - done) / speed if speed > 0 and now - start > 0.5 else None
        if progress(Progress(repo, name, done, total, speed, eta, files_done, len(p.files))) is False:
            raise Cancelled(f"download of {repo} cancelled at {_mib(done)} of {_mib(total)}")

    for k, f in enumerate(p.files):
        blob = blobs / f.etag
        if not blob.exists():
            part = blob.with_name(blob.name + ".part")
            for got in _fetch(f, part, timeout):
                done += got
                report(f.name, k)
            _verify(part, f)
            os.replace(part, blob)
        _link(p.snapshot / f.name, blob)
        report(f.name, k + 1, force=True)
    refs = p.folder / "refs"
    refs.mkdir(exist_ok=True)
    if revision != p.commit:
        (refs / revision).write_text(p.commit)
    return p.snapshot


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fetch(f: Planned, part: Path, timeout: float):
    """Stream f into `part`, continuing what is there; yields the bytes of each chunk written."""
    try:  # huggingface_hub >= 2 depends on httpx2, 1.x on httpx (the same API)
        import httpx2 as httpx
    except ImportError:
        import httpx
    from huggingface_hub.utils import build_hf_headers

    have = _size(part)
    if have > f.size:  # not this file's bytes: start again
        part.unlink()
        have = 0
    if have == f.size:
        return
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with httpx.stream("GET", f.url, headers=headers, follow_redirects=True,
                          timeout=httpx.Timeout(timeout, read=60.0)) as r:
            if r.status_code == 416 and have:  # the server thinks we have it all: check it
                return
            r.raise_for_status()
            mode = "ab" if have and r.status_code == 206 else "wb"  # 200: the server ignored Range
            with open(part, mode) as out:
                if mode == "wb" and have:
                    yield -have
                for chunk in r.iter_bytes(CHUNK):
                    out.write(chunk)
                    yield len(chunk)
    except httpx.HTTPError as e:
        raise UserError(f"downloading {f.name} failed ({str(e).splitlines()[0][:120] or type(e).__name__}); "
                        f"{_mib(_size(part))} kept: run again to continue") from None


def _verify(part: Path, f: Planned):
    """Size, and the content hash where the ETag is one (sha256 for LFS files, git's blob sha1 otherwise)."""
    size = _size(part)
    if size != f.size:
        raise UserError(f"{f.name}: downloaded {size} bytes, expected {f.size}; run again to continue")
    etag = f.etag.lower()
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
        h = hashlib.sha256()
    elif len(etag) == 40 and all(c in "0123456789abcdef" for c in etag):
        h = hashlib.sha1(f"blob {size}\0".encode())
    else:
        return
    with open(part, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != etag:
        part.unlink()
        raise UserError(f"{f.name}: the downloaded bytes do not match the hub's checksum (deleted); run again")


def _link(dest: Path, blob: Path):
    """snapshots/<commit>/<name> -> ../../blobs/<etag> (relative, as huggingface_hub does), a copy where
    symlinks are not allowed (Windows without developer mode)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        return
    try:
        dest.symlink_to(os.path.relpath(blob, dest.parent))
    except OSError:
        shutil.copyfile(blob, dest)


def cached(repo: str, tokenizer_only: bool = False, cache: Path | str | None = None) -> bool:
    """Whether the cache already has what `repo` needs (config, tokenizer, and weights unless
    `tokenizer_only`) at its cached main revision. No network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo, "config.json", cache_dir=str(cache or cache_dir()))
    except Exception:  # noqa: BLE001 - not a valid repo id
        return False
    if not isinstance(config, str):
        return False
    folder = Path(config).parent
    names = [p.name for p in folder.iterdir()]
    has_tokenizer = any(n.startswith(("tokenizer", "vocab")) for n in names)
    if tokenizer_only:
        return has_tokenizer
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        import json

        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        return all((folder / s).exists() for s in shards)
    return any(n.endswith((".safetensors", ".bin")) for n in names)

