"""Model cards: every export's README.md parses as Hugging Face metadata with the right fields."""

import json
import struct
import zlib

import pytest
from huggingface_hub import ModelCard

import tiny
from lora_studio import LoraSpec, inject, save_adapter
from lora_studio.engine import UserError
from lora_studio.engine.adapters import read_adapter
from lora_studio.engine.export import export_adapter, merge_and_export
from lora_studio.engine.modelcard import DEMO_HUB_ID, budget, card_json, png_bytes
from lora_studio.engine.models import demo_model_path, load_model


def _adapter(tmp_path, arch, base_ref, targets=("q", "v")):
    folder = tiny.model_folder(tmp_path / "base", arch)
    task = "causal-lm" if arch in tiny.CAUSAL else "classification"
    model = load_model(str(folder), task)
    inject(model, LoraSpec(targets=list(targets), rank=4, alpha=8,
                           modules_to_save=["classifier"] if task == "classification" else []))
    tiny.randomize_adapters(model)
    run = tmp_path / "run"
    save_adapter(model, run, base_ref or str(folder))
    rows = [{"step": 0, "eval_loss": 2.5}] + [{"step": i, "loss": 3.0 - 0.2 * i, "lr": 1e-3} for i in range(1, 6)] \
        + [{"step": 5, "eval_loss": 2.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, model, run


def _decode_png(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    return w, h, [raw[y * (3 * w + 1) + 1:(y + 1) * (3 * w + 1)] for y in range(h)]


def test_png_writer_round_trips():
    pixels = [bytearray(b"".join(bytes([x * 40, y * 80, 7]) for x in range(4))) for y in range(3)]
    w, h, got = _decode_png(png_bytes(pixels, 4, 3))
    assert (w, h) == (4, 3) and [bytes(p) for p in pixels] == got


def test_adapter_export_card_names_the_demo_base_and_its_license(tmp_path):
    _, _, run = _adapter(tmp_path, "bert", demo_model_path())
    export_adapter(run, tmp_path / "export")
    out = tmp_path / "export"
    meta = card_json(out)
    assert meta["base_model"] == DEMO_HUB_ID and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "peft" and {"lora", "peft"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-classification"
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == DEMO_HUB_ID
    trainable, _ = budget(read_adapter(run))
    # q and v of 2 layers, r = 4, 32 x 32 each: 2 * 2 * 4 * (32 + 32), plus the classifier (32 -> 2)
    assert trainable == 2 * 2 * 4 * 64 + 32 * 2 + 2
    assert f"{trainable:,}" in card.text and "## Rank spectra" in card.text
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "loss.png"} <= {p.name for p in out.iterdir()}
    w, h, _ = _decode_png((out / "loss.png").read_bytes())
    assert (w, h) == (480, 180)
    with pytest.raises(UserError):
        export_adapter(run, tmp_path / "export")


def test_merged_export_card_copies_the_license_of_a_local_base(tmp_path):
    base, _, run = _adapter(tmp_path, "llama", None, targets=("q", "k", "v", "o"))
    (base / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    merge_and_export(run, tmp_path / "merged")
    meta = card_json(tmp_path / "merged")
    assert meta["library_name"] == "transformers" and meta["license"] == "mit"
    assert "base_model" not in meta  # a local folder is not a hub id
    assert meta["pipeline_tag"] == "text-generation"
    text = (tmp_path / "merged" / "README.md").read_text()
    assert "merged vs base + adapter" in text and "| 2.000 |" not in text and "| 2 |" in text
