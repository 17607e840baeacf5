"""A model from the Hub: downloaded from a local HTTP server speaking the Hub's protocol (HF_ENDPOINT),
with progress, cancelled mid-file, resumed with a Range request, verified, and loadable from the
cache by transformers; an unknown name fails after one request."""

import hashlib

import huggingface_hub
import pytest

import tiny
from hubserver import COMMIT, HubServer
from lora_studio.engine import UserError, hub

REPO = "tiny-org/tiny-llama"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.llama_gguf_folder(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The hub reachable (at the address a test sets as HF_ENDPOINT) and an empty cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "CHUNK", 16 * 1024)
    monkeypatch.setattr(hub, "REPORT_S", 0.0)  # every chunk reports: the test cancels at a known point
    return tmp_path / "cache"


def test_download_cancel_resume(online, model_dir, monkeypatch):
    weights = (model_dir / "model.safetensors").read_bytes()
    seen = []

    def cancel_in_weights(p):
        seen.append(p)
        return not (p.file == "model.safetensors" and p.done > 0)

    with HubServer({REPO: model_dir}, throttle=0.01) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(hub.Cancelled):
            hub.download(REPO, cancel_in_weights)
        part = online / "models--tiny-org--tiny-llama" / "blobs" / (hashlib.sha256(weights).hexdigest() + ".part")
        kept = part.stat().st_size
        assert 0 < kept < len(weights)
        assert not hub.cached(REPO)
        first = len(server.requests)
        complete = {b.name for b in part.parent.iterdir() if not b.name.endswith(".part")}
        assert len(complete) >= 2  # config.json, generation_config.json: fetched before the weights

        reports = []
        snapshot = hub.download(REPO, reports.append)
        gets = {path.rsplit("/", 1)[1]: rng for method, path, rng in server.requests[first:]
                if method == "GET" and "/resolve/" in path}
        assert gets["model.safetensors"] == f"bytes={kept}-"  # continues the partial file
        fetched_before = {p.name for p in model_dir.iterdir() if server.etag(p.name, p.read_bytes()) in complete}
        assert fetched_before and not fetched_before & set(gets)  # finished files are not fetched again
        total = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    assert snapshot == online / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").read_bytes() == weights and not part.exists()
    assert (online / "models--tiny-org--tiny-llama" / "refs" / "main").read_text() == COMMIT
    last = reports[-1]
    assert last.done == last.total == total
    assert last.files_done == last.files == len([p for p in model_dir.iterdir() if p.suffix in hub.WANTED])
    assert reports[0].done >= kept and all(a.done <= b.done for a, b in zip(reports, reports[1:]))
    assert hub.cached(REPO)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the cache alone, as offline later
    model = AutoModelForCausalLM.from_pretrained(REPO, cache_dir=str(online), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(REPO, cache_dir=str(online), local_files_only=True)
    assert model.config.vocab_size == len(tok) and tok.chat_template


def test_unknown_name_fails_after_one_request(online, model_dir, monkeypatch):
    with HubServer({REPO: model_dir}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(UserError, match="no model of that name"):
            hub.download("tiny-org/no-such-model")
        assert len(server.requests) == 1
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    with pytest.raises(UserError, match="cannot be reached"):
        hub.download(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        hub.download(REPO)


def test_checksum_mismatch_is_refused(online, model_dir, monkeypatch):
    with HubServer({REPO: model_dir}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        real_etag = server.etag
        monkeypatch.setattr(server, "etag", lambda name, data: "0" * 40 if name == "config.json" else real_etag(name, data))
        with pytest.raises(UserError, match="checksum"):
            hub.download(REPO)


def test_tokenizer_only_skips_the_weights(online, model_dir, monkeypatch):
    with HubServer({REPO: model_dir}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        snapshot = hub.download(REPO, tokenizer_only=True)
        assert not any("safetensors" in path for _, path, _ in server.requests)
    assert (snapshot / "tokenizer.json").exists() and (snapshot / "config.json").exists()
    assert hub.cached(REPO, tokenizer_only=True) and not hub.cached(REPO)


def test_progress_line():
    p = hub.Progress("org/m", "model.safetensors", 50 * 2**20, 200 * 2**20, 5 * 2**20, 30.0, 2, 5)
    assert p.line() == ("downloading org/m: 50.0 MiB of 200.0 MiB (25%) at 5.0 MiB/s, 30 s left "
                        "[2/5 files, model.safetensors]")
