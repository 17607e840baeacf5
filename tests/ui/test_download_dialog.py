"""A hub model the user picks that is not cached: the download dialog shows bytes, speed and time
left, Cancel stops it keeping the partial file, and picking the model again continues it (Range)
and then inspects it. Served by a local Hub server (tests/hubserver.py) through HF_ENDPOINT."""

import huggingface_hub
import pytest

import tiny
from hubserver import HubServer
from lora_studio.engine import hub
from lora_studio.ui.download_dialog import DownloadDialog

REPO = "tiny-org/tiny-llama"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.llama_gguf_folder(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def server(monkeypatch, tmp_path, model_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "CHUNK", 16 * 1024)
    monkeypatch.setattr(hub, "REPORT_S", 0.0)
    with HubServer({REPO: model_dir}, throttle=0.05) as s:
        monkeypatch.setenv("HF_ENDPOINT", s.url)
        yield s


def test_cancel_keeps_the_part_and_the_next_pick_continues(qtbot, server, tmp_path, model_dir):
    from lora_studio.ui.model_panel import ModelPanel
    from lora_studio.ui.session import Session

    session = Session()
    calls = []
    session.load_model = lambda ref=None, task="keep", trust_remote_code=None: calls.append(ref)
    panel = ModelPanel(session)
    qtbot.addWidget(panel)
    panel.load(REPO)
    dialog = panel.download
    assert isinstance(dialog, DownloadDialog) and dialog.isVisible() and calls == []
    qtbot.waitUntil(lambda: "model.safetensors" in dialog.detail.text() and dialog.bar.value() > 0, timeout=30_000)
    assert " MiB of " in dialog.detail.text() and "MiB/s" in dialog.detail.text()
    with qtbot.waitSignal(dialog.sig_cancelled, timeout=30_000):
        qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Cancel), qtbot_left())
    assert not dialog.isVisible() and calls == [] and "cancelled" in panel.state.text()
    parts = list((tmp_path / "cache").rglob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0
    kept = parts[0].stat().st_size

    panel.load(REPO)  # picked again: continues
    with qtbot.waitSignal(panel.download.sig_done, timeout=60_000):
        pass
    assert calls == [REPO]
    ranges = [rng for method, path, rng in server.requests if method == "GET" and path.endswith("model.safetensors")]
    assert ranges[-1] == f"bytes={kept}-"
    snapshot = next((tmp_path / "cache").rglob("snapshots/*/model.safetensors"))
    assert snapshot.read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert hub.cached(REPO)


def test_unknown_name_is_a_failure_in_the_panel(qtbot, server):
    from lora_studio.ui.model_panel import ModelPanel
    from lora_studio.ui.session import Session

    panel = ModelPanel(Session())
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.sig_failed, timeout=30_000) as failed:
        panel.load("tiny-org/no-such-model")
    assert "no model of that name" in failed.args[0].message and "no model of that name" in panel.state.text()


def qtbot_left():
    from PySide6.QtCore import Qt

    return Qt.LeftButton


def test_start_with_a_hub_model_not_cached_downloads_it_first(qtbot, server, window, monkeypatch):
    """A configuration whose model is a hub id not in the cache (e.g. opened from a run.toml):
    Start downloads it in the dialog, and training begins only once it is there."""
    from PySide6.QtCore import Qt

    begun = []
    monkeypatch.setattr(window, "_begin", lambda config, resume=None, overwrite=False: begun.append(config))
    window.session.draft.model.path = REPO
    qtbot.mouseClick(window.header.start, Qt.LeftButton)
    dialog = window.download
    assert dialog.isVisible() and begun == [] and not window.controller.running
    with qtbot.waitSignal(dialog.sig_done, timeout=60_000):
        pass
    assert [c.model.path for c in begun] == [REPO] and hub.cached(REPO)
