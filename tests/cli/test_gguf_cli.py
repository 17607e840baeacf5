"""`lora-studio gguf`: adapter-only writes a file, refusals are one `error:` line with exit 2."""

import pytest

import tiny
from lora_studio import LoraSpec, inject, save_adapter
from lora_studio.cli import main
from lora_studio.engine.models import load_model

pytest.importorskip("gguf")


@pytest.fixture
def run(tmp_path):
    base = tiny.model_folder(tmp_path / "base", "llama")
    model = load_model(str(base), "causal-lm")
    inject(model, LoraSpec(targets=["q", "v"], rank=2, alpha=4))
    tiny.randomize_adapters(model)
    return save_adapter(model, tmp_path / "run", str(base))


def test_gguf_adapter_only_then_refusals(tmp_path, run, capsys, monkeypatch):
    out = tmp_path / "o" / "lora.gguf"
    assert main(["gguf", str(run), "--out", str(out), "--adapter-only", "--type", "f16"]) == 0
    assert out.is_file() and "GGUF written to" in capsys.readouterr().out
    assert main(["gguf", str(run), "--out", str(out), "--adapter-only"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["gguf", str(run), "--out", str(out), "--adapter-only", "--overwrite"]) == 0
    monkeypatch.setenv("LORA_STUDIO_LLAMA_CPP", str(tmp_path))
    assert main(["gguf", str(run), "--out", str(tmp_path / "m.gguf"), "--llama-cpp", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "pip download" in err[0]
    assert not (tmp_path / "m.gguf").exists()
