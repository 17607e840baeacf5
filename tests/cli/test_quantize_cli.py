"""Issue 22, quantized bases and wrong successes: a 4-bit base on the CPU learns with evaluation on
(bitsandbytes' CPU inference repacking is kept out of training); a classifier's head stays out of
quantization; a machine that cannot train on a quantized base is told before anything starts; a
run whose every gradient is zero never ends as "done"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tiny
from lora_studio.cli import main
from clihelp import cli, one_error

DATA = Path(__file__).parents[2] / "resources" / "data"
CAUSAL = DATA / "demo_causal.jsonl"
CLS_TRAIN = DATA / "demo_classification_train.jsonl"
FAST = ["--batch-size", "4", "--max-length", "32", "--quiet"]


def grad_norms(run) -> list[float]:
    return [r["grad_norm"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "grad_norm" in r]


def wide_llama(path):
    """A tiny Llama whose layers are wide enough (128 = 2 blocks of 64) for bitsandbytes' CPU repacking."""
    import transformers as T

    folder = tiny.model_folder(path, "llama")
    torch.manual_seed(0)
    cfg = T.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=30522, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    T.AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder


def test_nf4_on_cpu_learns_with_the_step_0_evaluation(tmp_path, capsys, monkeypatch):
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for inference the first time
    it runs in eval mode (the step-0 evaluation); training after that got wrong (zero) gradients.
    Pretend this CPU has it: the gradients with evaluations on equal those without."""
    bnb_modules = pytest.importorskip("bitsandbytes.nn.modules")
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    base = wide_llama(tmp_path / "base")
    common = ["train", "--model", base, "--data", CAUSAL, "--quantize", "nf4", "--max-steps", "2", *FAST]
    code, _, err = cli([*common, "--eval-every", "1", "--out", tmp_path / "with_eval"], capsys)
    assert code == 0, err
    noted = "on the CPU" in err  # the note said so before the run
    code, _, err = cli([*common, "--eval-every", "0", "--out", tmp_path / "no_eval"], capsys)
    assert code == 0, err
    with_eval, no_eval = grad_norms(tmp_path / "with_eval"), grad_norms(tmp_path / "no_eval")
    assert len(with_eval) == 2 and min(with_eval) > 0
    torch.testing.assert_close(with_eval, no_eval, rtol=1e-5, atol=0)
    assert noted


def test_nf4_classifier_trains_its_head_in_full(tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    base = tiny.model_folder(tmp_path / "bert", "bert")
    code, _, err = cli(["train", "--model", base, "--task", "classification", "--data", CLS_TRAIN, "--quantize",
                        "nf4", "--max-steps", "2", "--eval-every", "1", *FAST, "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    from safetensors.torch import load_file

    head = [k for k in load_file(tmp_path / "r" / "adapter_model.safetensors") if "classifier" in k]
    assert head and all("lora" not in k for k in head)


def test_a_machine_that_cannot_train_on_a_quantized_base_is_told_before_start(tmp_path, capsys, monkeypatch):
    pytest.importorskip("bitsandbytes")
    from lora_studio.engine import quantize

    monkeypatch.setattr(quantize, "_probe", lambda bnb, q, kind: "AssertionError: no kernel")
    monkeypatch.setattr(quantize, "_PROBED", {})
    base = tiny.model_folder(tmp_path / "base", "llama")
    code, _, err = cli(["train", "--model", base, "--data", CAUSAL, "--quantize", "nf4", "--device", "cpu",
                        "--max-steps", "1", *FAST, "--out", tmp_path / "o"], capsys)
    line = one_error(err)
    assert code == 2 and "cannot train on a" in line and "no kernel" in line
    assert "loading" not in err and not (tmp_path / "o").exists()  # nothing started
    error, warning = quantize.preflight("nf4", "cpu")  # the same check, for the GUI
    assert error == line[len("error: "):] and warning is None
    assert quantize.preflight("none", "cpu") == (None, None)


def test_all_zero_gradients_never_end_as_done(tmp_path, capsys, monkeypatch):
    base = tiny.model_folder(tmp_path / "base", "llama")
    real = torch.nn.utils.clip_grad_norm_

    def dead(params, max_norm, *a, **k):  # what a broken kernel gives: no gradient at all
        params = list(params)
        for p in params:
            if p.grad is not None:
                p.grad.zero_()
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dead)
    code, _, err = cli(["train", "--model", base, "--data", CAUSAL, "--max-steps", "3", "--eval-every", "0",
                        *FAST, "--out", tmp_path / "o"], capsys)
    line = one_error(err)
    assert code == 2 and "every gradient was zero" in line and "done at step" not in err
    state = json.loads((tmp_path / "o" / "run_state.json").read_text())
    assert state["state"] == "failed"


def test_bitsandbytes_is_imported_quietly(tmp_path, capsys, monkeypatch):
    """On a machine without the GPU it was built for, bitsandbytes warns at length on import: those
    lines are not shown (preflight says in one line what matters)."""
    import sys

    from lora_studio.engine.quantize import require_bitsandbytes

    fake = tmp_path / "bitsandbytes"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import logging, sys, warnings\n"
        "warnings.warn('The installed version of bitsandbytes was compiled without GPU support.')\n"
        "logging.getLogger('bitsandbytes.cextension').warning('could not find the CUDA library')\n"
        "print('bitsandbytes: flooding stderr', file=sys.stderr)\n"
        "__version__ = '0.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "bitsandbytes" or m.startswith("bitsandbytes.")]:
        monkeypatch.delitem(sys.modules, name)
    capsys.readouterr()
    assert require_bitsandbytes().__version__ == "0.0"
    out, err = capsys.readouterr()
    assert out == "" and err == "", err
