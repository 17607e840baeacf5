"""GGUF exports of a real chat model, SmolLM2-135M-Instruct, checked in llama.cpp (xllamacpp): the
adapter GGUF on the ORIGINAL Q4_1 GGUF, and a merged f16 file; each answers 4 chat prompts through
the GGUF's own template (the merged file exactly as HF + adapter does) and stops where HF does;
llama.cpp's log stays off the output; the Modelfile carries the template, system prompt and stop token."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("gguf")
pytestmark = pytest.mark.slow
LOG_MARKS = ("llama_model_loader", "load_tensors", "ggml_", "common_param", "srv ", "llama_context")


def _needs_llama():
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp (llama.cpp's binding) is not installed: pip install 'lora-studio[gguf]'")


@pytest.fixture(scope="module")
def smol_run(smollm2_dir, tmp_path_factory):
    """A chat run folder on SmolLM2 with a small random adapter on q, v (no training needed:
    the checks compare llama.cpp with HF on the same weights)."""
    import tiny
    from lora_studio.config import RunConfig
    from lora_studio.engine import demo_chat
    from lora_studio.engine.adapters import save_adapter
    from lora_studio.engine.lora import LoraSpec, inject
    from lora_studio.engine.models import load_model

    root = tmp_path_factory.mktemp("smol")
    model = load_model(smollm2_dir, "causal-lm")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    tiny.randomize_adapters(model, seed=3, scale=0.004)  # changes the logits, keeps the answers sane
    run = root / "run"
    save_adapter(model, run, smollm2_dir)
    train, validation = demo_chat.data_paths()
    RunConfig().replace(model={"path": smollm2_dir, "task": "causal-lm"},
                        data={"path": train, "validation_path": validation, "format": "messages"},
                        out=str(run)).save(run / "run.toml")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    (run / "chat.json").write_text("{}")
    return run, model.eval()


def test_adapter_gguf_on_the_original_q4_1_base_answers_as_hf(smol_run, smollm2_gguf, smollm2_dir, tmp_path, capfd):
    _needs_llama()
    from lora_studio.cli import main

    run, _model = smol_run
    assert main(["gguf", str(run), "--out", str(tmp_path / "lora.gguf"), "--adapter-only",
                 "--base-gguf", smollm2_gguf]) == 0
    # logits judged against what the Q4_1 base itself costs against HF, then 4 chat prompts through
    # the GGUF's own template, each ending where HF + adapter's does (else exit 2); the Q4_1 base's
    # rounding may part an answer from HF's at a close choice, never the first (the capital of Peru)
    out, _err = capfd.readouterr()
    assert "verified in llama.cpp" in out and "4 chat prompts" in out, out
    assert "same greedy answer as HF and stops" in out or (
        "greedy answers differ" in out and "own rounding changed a close choice" in out
        and "What is the capital of Peru?" not in out), out
    assert not [m for m in LOG_MARKS if m in out + _err]  # llama.cpp's log never reaches the output
    modelfile = (tmp_path / "Modelfile").read_text()
    assert f"FROM {smollm2_dir}" in modelfile and "ADAPTER ./lora.gguf" in modelfile
    assert 'TEMPLATE """' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM "You are a helpful AI assistant named SmolLM' in modelfile


def test_merged_f16_gguf_is_verified_by_logits_and_by_a_chat_answer(smol_run, tmp_path, capfd):
    _needs_llama()
    from lora_studio.engine import gguf as G

    try:
        G.find_converter()
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    run, _model = smol_run
    res = G.export_merged_gguf(run, tmp_path / "m.gguf", type="f16")
    assert res.verified, res
    assert "same greedy answer as HF and stops" in res.note, res.note
    out, err = capfd.readouterr()
    assert not [m for m in LOG_MARKS if m in out + err]
    meta = G.metadata(res.path)
    assert meta["tokenizer.ggml.eos_token_id"] == 2 and "<|im_start|>" in meta["tokenizer.chat_template"]
    modelfile = (tmp_path / "Modelfile").read_text()
    assert "FROM ./m.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile and "TEMPLATE" in modelfile
