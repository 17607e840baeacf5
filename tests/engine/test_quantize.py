"""Quantized base (QLoRA) on the CPU: bitsandbytes NF4/int8 layers train, save PEFT files that
load on a 4-bit and on the full-precision base, and merge into the full-precision base."""

import builtins
import json
import warnings
from pathlib import Path

import pytest
import torch
import transformers as T

import tiny
from lora_studio import LoraSpec, inject
from lora_studio.config import RunConfig
from lora_studio.engine import UserError
from lora_studio.engine import train as TR

bnb = pytest.importorskip("bitsandbytes")
warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")


def _config(arch: str):
    """Tiny configs with hidden sizes divisible by the 4-bit block size (64)."""
    common = dict(vocab_size=tiny.VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "gpt2":
        return T.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, **common)
    return T.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, **common)


def _folder(tmp_path, arch: str, tokenizer: bool = False):
    """A saved tiny model; with `tokenizer`, the packaged MiniLM's (vocab 30522), as tiny.model_folder."""
    import shutil

    from lora_studio.engine.models import demo_model_path

    torch.manual_seed(0)
    cfg = _config(arch)
    if tokenizer:
        cfg.vocab_size, cfg.bos_token_id, cfg.eos_token_id = 30522, 101, 102
    path = tmp_path / arch
    T.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    if tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (src := Path(demo_model_path()) / name).exists():
                shutil.copy(src, path / name)
    return path


def _quantized(path, quantize="nf4"):
    from lora_studio.engine.models import load_model
    from lora_studio.engine.quantize import bnb_config

    return load_model(str(path), "causal-lm", dtype=torch.float32, device="cpu",
                      quantization_config=bnb_config(quantize)).eval()


TARGETS = {"llama": ["q", "v", "up"], "gpt2": ["q", "v", "up"]}  # gpt2: slices of the fused c_attn


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_layer_reads_shapes_from_the_bnb_module(tmp_path, arch):
    model = _quantized(_folder(tmp_path, arch))
    names = inject(model, LoraSpec(targets=TARGETS[arch], rank=4))
    layers = {n: m for n, m in model.named_modules() if type(m).__name__ == "LoraLayer"}
    assert set(layers) == set(names)
    for m in layers.values():
        assert type(m.base_layer).__name__ == "Linear4bit" and m.quantized
        assert m.lora_A.dtype == torch.float32 and m.lora_A.shape[1] == m.base_layer.in_features
        assert m.out_features == m.base_layer.out_features
    if arch == "gpt2":  # c_attn holds q and v as row slices of a (192 x 64) weight
        fused = layers["transformer.h.0.attn.c_attn"]
        assert fused.conv1d and [t for t, _ in fused.slices] == ["q", "v"] and fused.out_features == 192
    with pytest.raises(UserError, match="full-precision base"):
        next(iter(layers.values())).merge()


def _run(tmp_path, folder, quantize="nf4", optimizer="adamw", steps=8):
    rows = [{"prompt": f"what comes after {i} ?", "completion": " seven seven"} for i in range(48)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = RunConfig().replace(
        model={"path": str(folder), "task": "causal-lm", "quantize": quantize},
        lora={"targets": TARGETS["llama"], "rank": 4, "alpha": 8},
        data={"path": str(data), "max_length": 24, "validation_split": 0.0},
        train={"max_steps": steps, "batch_size": 8, "lr": 5e-2, "warmup_ratio": 0.0, "seed": 1,
               "optimizer": optimizer, "eval_every": 0, "save_every": 0, "device": "cpu"},
        out=str(tmp_path / f"run-{quantize}-{optimizer}"))
    result = TR.train(cfg)
    assert isinstance(result, TR.Finished), getattr(result, "detail", None) or result
    return cfg.out, [m["loss"] for m in TR.read_metrics(cfg.out) if "loss" in m]


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora")
    folder = _folder(tmp, "llama", tokenizer=True)
    return folder, *_run(tmp, folder)


def test_nf4_base_trains_and_loss_falls(llama_run):
    _, run_dir, losses = llama_run
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.25  # measured: 10.30 -> 9.93 (no gradient through the bnb base: no fall)
    assert RunConfig.load(f"{run_dir}/run.toml").model.quantize == "nf4"


@pytest.mark.parametrize("quantize,optimizer", [("int8", "adamw8bit"), ("nf4", "paged_adamw")])
def test_int8_base_and_bitsandbytes_optimizers_train(tmp_path, llama_run, quantize, optimizer):
    _, losses = _run(tmp_path, llama_run[0], quantize, optimizer, steps=4)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_adapter_loads_in_peft_on_4bit_and_full_precision_base(tmp_path, arch):
    import peft

    from lora_studio.engine.adapters import save_adapter
    from lora_studio.engine.models import load_model

    folder = _folder(tmp_path, arch)
    ours = tiny.randomize_adapters(_inject(_quantized(folder), arch))
    x = tiny.inputs()
    with torch.no_grad():
        expected = ours(**x).logits
    save_adapter(ours, tmp_path / "adapter", str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(_quantized(folder), tmp_path / "adapter").eval()
        full = load_model(str(folder), "causal-lm")
        full_ours = tiny.randomize_adapters(_inject(load_model(str(folder), "causal-lm"), arch))
        full_peft = peft.PeftModel.from_pretrained(full, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(**x).logits, expected, atol=1e-4, rtol=0)
        # on the full-precision base the same adapter gives the unquantized model's logits
        torch.testing.assert_close(full_peft(**x).logits, full_ours(**x).logits, atol=1e-4, rtol=0)


def _inject(model, arch):
    inject(model, LoraSpec(targets=TARGETS[arch], rank=4, alpha=8))
    return model


def test_missing_bitsandbytes_says_how_to_install(monkeypatch):
    from lora_studio.engine.quantize import bnb_config, make_optimizer

    real = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes" or name.startswith("bitsandbytes."):
            raise ImportError("No module named 'bitsandbytes'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(UserError, match=r"pip install 'lora-studio\[qlora\]'"):
        bnb_config("nf4")
    with pytest.raises(UserError, match=r"adamw8bit optimizer needs bitsandbytes.*lora-studio\[qlora\]"):
        make_optimizer("adamw8bit", [torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0)
    assert bnb_config("none") is None


def test_config_validates_quantize_and_optimizer():
    with pytest.raises(UserError, match="quantize 'nf8' unknown"):
        RunConfig().replace(model={"quantize": "nf8"})
    with pytest.raises(UserError, match="optimizer 'sgd' unknown"):
        RunConfig().replace(train={"optimizer": "sgd"})


def test_merge_of_a_quantized_run_uses_the_full_precision_base(tmp_path, llama_run):
    import peft

    from lora_studio.engine.export import PROBE, merge_and_export
    from lora_studio.engine.models import load_model, load_tokenizer

    folder, run_dir, _ = llama_run
    r = merge_and_export(run_dir, tmp_path / "merged")
    x = load_tokenizer(str(folder))(PROBE, return_tensors="pt", padding=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        merged = T.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(**x).logits
        full = peft.PeftModel.from_pretrained(load_model(str(folder), "causal-lm"), run_dir).eval()(**x).logits
        quant = peft.PeftModel.from_pretrained(_quantized(folder), run_dir).eval()(**x).logits
        plain = load_model(str(folder), "causal-lm").eval()(**x).logits
    assert (full - plain).abs().max() > 1e-3  # the adapter changes the model
    torch.testing.assert_close(merged, full, atol=1e-5, rtol=0)
    assert r.quantize == "nf4" and r.quantized_gap > 0
    assert r.quantized_gap == pytest.approx((merged - quant).abs().max().item(), abs=1e-5)
    saved = json.loads((tmp_path / "merged" / "lora_studio_export.json").read_text())
    assert saved["quantize"] == "nf4" and saved["quantized_gap"] == pytest.approx(r.quantized_gap)


# -- budget: quantized weights, optimizer state, will it fit, measured peak -------------------------
ALL = ["q", "k", "v", "o", "gate", "up", "down"]


def _storage_bytes(model, optimizer=None) -> int:
    """Bytes of every distinct storage the model (and optimizer state) holds, bnb's quantization
    state included: what the planner's weights (+ optimizer) figure stands for."""
    seen, total = set(), 0
    tensors = list(model.parameters()) + list(model.buffers())
    for p in list(tensors):
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            tensors += [qs.absmax, qs.code, qs.offset] + ([qs.state2.absmax, qs.state2.code] if qs.nested else [])
    if optimizer is not None:
        tensors += [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    for t in tensors:
        if t is not None and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def _transient_peak(step) -> int:
    """Peak bytes allocated above the start during one step, from the profiler's memory timeline
    (as benchmarks/bench_train_step.py measures it): activations, logits, gradients."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    totals = [sum(s) for s in sizes]
    return max(totals) - totals[0]


@pytest.mark.parametrize("quantize", ["none", "nf4", "int8"])
def test_planner_estimate_within_20_percent_of_measured_peak(tmp_path, quantize):
    from lora_studio.engine.budget import estimate
    from lora_studio.engine.loss import training_loss
    from lora_studio.engine.models import skeleton_from_config
    from lora_studio.engine.quantize import make_optimizer

    spec = LoraSpec(targets=ALL, rank=8)
    batch, seq = 4, 32
    mem = estimate(skeleton_from_config(_config("llama"), "causal-lm"), spec, "fp32", batch, seq,
                   quantize=quantize, device="cpu").memory_lora
    model = _quantized(_folder(tmp_path, "llama"), quantize) if quantize != "none" else \
        T.AutoModelForCausalLM.from_pretrained(_folder(tmp_path, "llama"))
    inject(model, spec)
    model.train()
    opt = make_optimizer("adamw", [p for p in model.parameters() if p.requires_grad], 1e-3, 0.0)
    ids = tiny.inputs(batch, seq)["input_ids"]
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def step():
        training_loss(model, x).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # the optimizer state exists from here on
    static = _storage_bytes(model, opt)
    # weights (4-/8-bit codes and their scales included) + AdamW state: within 2 %
    assert mem.weights + mem.optimizer == pytest.approx(static, rel=0.02)
    measured = static + _transient_peak(step)
    assert 0.8 <= mem.total / measured <= 1.2, (mem, measured)


def test_nf4_and_int8_weight_bytes_of_a_70b_config():
    from lora_studio.engine.budget import base_weight_bytes
    from lora_studio.engine.models import skeleton_from_config
    from lora_studio.engine.quantize import quantizable

    cfg = T.LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=128256)
    meta = skeleton_from_config(cfg, "causal-lm")
    names = [n for n, _, _ in quantizable(meta)]
    assert len(names) == 80 * 7 and "lm_head" not in names  # the LM head stays in bf16, as bnb leaves it
    linear = sum(i * o for _, i, o in quantizable(meta))
    rest = 70_553_706_496 - linear  # embeddings, norms, lm_head
    bf16 = base_weight_bytes(meta, "bf16")
    assert bf16 == 2 * 70_553_706_496
    # NF4: 0.5 byte + one uint8 absmax per 64 + one fp32 per 256 absmaxes (+ code books per module)
    nf4 = base_weight_bytes(meta, "bf16", "nf4")
    assert nf4 == pytest.approx(2 * rest + linear * (0.5 + 1 / 64 + 4 / (64 * 256)), rel=1e-4)
    assert nf4 / bf16 < 0.3
    int8 = base_weight_bytes(meta, "bf16", "int8")
    rows = sum(o for _, _, o in quantizable(meta))
    assert int8 == 2 * rest + linear + 4 * rows


def test_adamw8bit_state_estimate_equals_bitsandbytes_state():
    from lora_studio.engine.quantize import make_optimizer, optimizer_state_bytes

    params = [torch.nn.Parameter(torch.randn(8, 640)), torch.nn.Parameter(torch.randn(64, 8)),
              torch.nn.Parameter(torch.randn(16, 1000))]
    opt = make_optimizer("adamw8bit", params, 1e-3, 0.0)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    held = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
               if torch.is_tensor(v) and v.dim() > 0)
    assert optimizer_state_bytes([p.numel() for p in params], "adamw8bit") == held
    assert optimizer_state_bytes([100, 200], "adamw") == 8 * 300


def test_will_it_fit_table_and_largest_batch():
    from lora_studio.engine.budget import estimate
    from lora_studio.engine.fit import HEADROOM, will_it_fit
    from lora_studio.engine.models import skeleton_from_config

    cfg = T.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256)
    meta = skeleton_from_config(cfg, "causal-lm")
    spec = LoraSpec(targets=ALL, rank=16)
    t = will_it_fit(meta, spec, 24 * 2**30, batch=4, seq=1024)
    rows = {(r.quantize, r.checkpointing): r for r in t.rows}
    assert len(rows) == 6
    assert not rows[("none", False)].fits and rows[("nf4", True)].fits  # 8B: only a quantized/checkpointed run fits
    assert rows[("nf4", True)].weights_bytes < 0.4 * rows[("none", True)].weights_bytes
    for (q, ck), r in rows.items():
        assert r.fits == (r.peak_bytes <= HEADROOM * 24 * 2**30)
        if r.max_batch:  # the largest batch fits, one more does not
            assert estimate(meta, spec, "bf16", r.max_batch, 1024, ck, q).memory_lora.total <= t.usable_bytes
            assert estimate(meta, spec, "bf16", r.max_batch + 1, 1024, ck, q).memory_lora.total > t.usable_bytes


def test_budget_cli_quantize_gpu_memory_json(tmp_path, capsys):
    from lora_studio.cli import main

    _config("llama").save_pretrained(tmp_path)
    argv = ["budget", "--model", str(tmp_path), "--task", "causal-lm", "--targets", "q,v", "--quantize", "nf4",
            "--gpu-memory", "0.001", "--batch-size", "2", "--max-length", "64"]
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quantize"] == "nf4" and len(out["fit"]["rows"]) == 6
    assert out["fit"]["gpu_bytes"] == int(0.001 * 2**30)
    assert main(argv) == 0
    assert "will it fit?" in capsys.readouterr().out
    assert main(argv[:-6] + ["--gpu-memory", "0"]) == 2


def test_run_folder_records_estimate_and_measured_peak(llama_run):
    from lora_studio.engine.fit import read_peak

    rec = read_peak(llama_run[1])
    assert rec["quantize"] == "nf4" and rec["estimate_bytes"] > 0 and rec["measured_peak_bytes"] > 0
    assert rec["estimate"]["total"] == rec["estimate_bytes"]
