"""Issue 18: the CUDA paths' dtypes and rules, exercised on a CPU (bf16/fp16 bases, autocast, the
GradScaler). Each test reproduces one finding of the review and fails without its fix."""

import json

import pytest
import torch
import torch.nn.functional as F

import tiny
from lora_studio import LoraSpec, inject, save_adapter
from lora_studio.config import RunConfig
from lora_studio.engine import UserError
from lora_studio.engine import lora as lora_mod
from lora_studio.engine.loss import LinearCrossEntropy


def _adapter_run(tmp_path, arch, dropout=0.0, targets=("q", "v")):
    base = tiny.model_folder(tmp_path / "base", arch)
    task = "causal-lm" if arch in tiny.CAUSAL else "classification"
    from lora_studio.engine.models import load_model

    model = load_model(str(base), task)
    inject(model, LoraSpec(targets=list(targets), rank=4, alpha=8, dropout=dropout,
                           modules_to_save=["classifier"] if task == "classification" else []))
    tiny.randomize_adapters(model, scale=0.2)
    save_adapter(model, tmp_path / "run", str(base))
    return base


# -- item 1: LoRA dropout off at export and in Try it -------------------------------------------
def test_dropout_run_exports_in_fp32(tmp_path):
    from lora_studio.engine.export import merge_and_export

    _adapter_run(tmp_path, "llama", dropout=0.3)
    result = merge_and_export(tmp_path / "run", tmp_path / "merged", dtype="float32")
    assert result.ok and result.max_abs_diff <= 1e-4


def test_try_it_is_deterministic_with_dropout(tmp_path):
    from lora_studio.engine import tryit

    _adapter_run(tmp_path, "bert", dropout=0.5)
    tryit.forget()
    first = tryit.compare(tmp_path / "run", "the film was great")
    model = tryit._load(tmp_path / "run")[0]
    assert not any(m.training for m in model.modules())
    tryit.forget()  # a fresh load, then the cached one: the same numbers, bit for bit
    second = tryit.compare(tmp_path / "run", "the film was great")
    third = tryit.compare(tmp_path / "run", "the film was great")
    tryit.forget()
    assert first.adapted.probabilities == second.adapted.probabilities == third.adapted.probabilities


# -- item 2: trained heads in fp32 on a half-precision base, with autocast and the scaler ---------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_base_trains_its_head_in_fp32(dtype):
    model = tiny.build("bert").to(dtype)
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8, modules_to_save=["classifier"]))
    head = dict(model.classifier.named_parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad for p in head.values())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    before = {k: v.detach().clone() for k, v in head.items()}
    batch = {**tiny.inputs(batch=4, seq=9), "labels": torch.tensor([0, 1, 1, 0])}
    model.train()
    with torch.autocast("cpu", dtype=dtype):
        loss = model(**batch).loss
    scaler.scale(loss).backward()
    scaler.unscale_(opt)  # "Attempting to unscale FP16 gradients" with an fp16 head
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
    for k, p in head.items():  # a bf16 head keeps most weights unchanged at lr 2e-5
        assert (p.detach() != before[k]).all(), f"{k}: {(p.detach() == before[k]).float().mean():.0%} unchanged"


# -- item 4: the fused loss's dL/dh in fp16 --------------------------------------------------------
def test_fused_loss_gradient_in_fp16_matches_fp32():
    g = torch.Generator().manual_seed(0)
    n, c, v = 16384, 64, 128
    h = (torch.randn(n, c, generator=g) * 0.5).half().requires_grad_(True)
    w = (torch.randn(v, c, generator=g) * 0.5).half()
    y = torch.randint(0, v, (n,), generator=g)
    scale = 65536.0  # GradScaler's initial scale: the backward sees dL/dh * scale
    loss = LinearCrossEntropy.apply(h, w, None, y, n, 256)
    (loss * scale).backward()
    got = h.grad.float() / scale
    h32 = h.detach().float().requires_grad_(True)
    ref_loss = F.cross_entropy(h32 @ w.float().T, y)
    ref_loss.backward()
    ref = h32.grad
    assert torch.isfinite(got).all()
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < 1e-3, f"relative error {rel:.3%}"
    assert not (got == 0).any(), f"{(got == 0).float().mean():.2%} of the gradient is zero"
    torch.testing.assert_close(loss.float(), ref_loss, rtol=1e-3, atol=1e-3)


def test_fused_loss_gradient_survives_65536_tokens():
    g = torch.Generator().manual_seed(1)
    n = 65536
    h = torch.randn(n, 16, generator=g).half().requires_grad_(True)
    w = torch.randn(32, 16, generator=g).half()
    y = torch.randint(0, 32, (n,), generator=g)
    (LinearCrossEntropy.apply(h, w, None, y, n, 4096) * 65536.0).backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().max() > 0


# -- item 5: resume across precision and devices ---------------------------------------------------
def test_rng_restore_tolerates_fewer_gpus():
    from lora_studio.engine.checkpoint import rng_state, set_rng_state

    state = rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 3  # saved on a 3-GPU machine
    note = set_rng_state(state)
    assert "GPU" in note


def _causal_config(tmp_path, folder, **train):
    rows = [{"prompt": f"what comes after {i} ?", "completion": " seven seven"} for i in range(24)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    t = {"max_steps": 4, "batch_size": 8, "lr": 1e-2, "eval_every": 0, "save_every": 2, "seed": 3,
         "warmup_ratio": 0.0, "device": "cpu", "precision": "fp32", **train}
    return RunConfig().replace(model={"path": str(folder), "task": "causal-lm"},
                               lora={"targets": ["q", "v"], "rank": 4, "alpha": 8},
                               data={"path": str(data), "max_length": 32, "validation_split": 0.0},
                               train=t, out=str(tmp_path / "run"))


def test_resume_fp32_checkpoint_with_the_scaler_on(tmp_path, monkeypatch):
    """Saved in fp32 (scaler off, empty state); resumed as fp16 (CPU autocast fp16 + GradScaler)."""
    from lora_studio.engine import setup as setup_mod
    from lora_studio.engine import train as T
    from lora_studio.engine.events import Finished, Started

    folder = tiny.model_folder(tmp_path / "llama", "llama")
    cfg = _causal_config(tmp_path, folder)
    first = T.train(cfg)
    assert isinstance(first, Finished) and not first.stopped
    monkeypatch.setattr(setup_mod, "resolve_precision", lambda p, d: "fp16")  # fp16 is refused on CPUs
    events = []
    ev = T.train(cfg.replace(train={**vars(cfg.train), "max_steps": 6}), events.append, resume=cfg.out)
    assert isinstance(ev, Finished) and not ev.stopped and ev.step == 6, ev
    started = next(e for e in events if isinstance(e, Started))
    assert started.precision == "fp16" and started.start_step == 4
    assert any("loss scale" in n for n in started.notes or [])
    losses = [m["loss"] for m in T.read_metrics(cfg.out) if "loss" in m]
    assert len(losses) == 6 and all(x == x for x in losses)


# -- item 3: evaluation needs no more memory than a training step --------------------------------
def _tensor_peak(fn) -> int:
    """Peak bytes of CPU tensors alive during fn() above those alive when it starts, replayed from
    the profiler's memory timeline (as benchmarks/bench_train_step.tensor_peak)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    totals = [sum(x) for x in sizes]
    return max(totals) - totals[0]


def test_eval_memory_is_not_larger_than_a_step(tmp_path):
    from lora_studio.engine.data import collate
    from lora_studio.engine.loss import training_loss
    from lora_studio.engine.setup import evaluate, setup

    folder = tiny.model_folder(tmp_path / "llama", "llama")  # vocabulary 30522, hidden 32
    cfg = _causal_config(tmp_path, folder, batch_size=4)
    cfg = cfg.replace(data={**vars(cfg.data), "validation_split": 0.5})
    s = setup(cfg)
    assert len(s.data.validation) > 4  # several eval batches at the training batch size
    batch = collate(s.data.train[:4], s.tokenizer.pad_token_id)
    s.model.train()
    step_peak = _tensor_peak(lambda: training_loss(s.model, batch).backward())
    result = []
    eval_peak = _tensor_peak(lambda: result.append(evaluate(s, 4)))
    assert result[0][0] == result[0][0]
    # full logits of one eval batch, in fp32: what the old evaluation held (26 MB here vs 1.5 MB)
    longest = max(len(e["input_ids"]) for e in s.data.validation)
    full_logits = 4 * 4 * longest * s.model.config.vocab_size
    assert eval_peak <= step_peak < full_logits, (eval_peak, step_peak, full_logits)


# -- item 11: an export that skipped the merge is refused -----------------------------------------
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_export_with_a_skipped_merge_is_refused(tmp_path, monkeypatch, dtype):
    from lora_studio.engine.export import merge_and_export

    _adapter_run(tmp_path, "llama")
    monkeypatch.setattr(lora_mod, "merge", lambda model: None)
    with pytest.raises(UserError, match="W0"):
        merge_and_export(tmp_path / "run", tmp_path / "merged", dtype=dtype)
    assert not (tmp_path / "merged").exists()


# -- item 12: a merge inside autocast is computed in fp32 -----------------------------------------
def test_merge_inside_autocast_is_fp32():
    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q"], rank=4, alpha=8))
    tiny.randomize_adapters(model, scale=0.3)
    layer = next(iter(lora_mod.lora_layers(model).values()))
    want = layer.base_layer.weight.detach() + layer.delta_weight(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lora_mod.merge(model)
    torch.testing.assert_close(layer.base_layer.weight.detach(), want, rtol=1e-6, atol=1e-7)


def test_dora_merge_inside_autocast_is_fp32():
    def merged(autocast: bool):
        model = tiny.build("llama")
        inject(model, LoraSpec(targets=["q"], rank=4, alpha=8, dora=True))
        tiny.randomize_adapters(model, scale=0.3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            lora_mod.merge(model)
        return next(iter(lora_mod.lora_layers(model).values())).base_layer.weight.detach()

    torch.testing.assert_close(merged(True), merged(False), rtol=1e-6, atol=1e-7)


# -- item 10: an unavailable GPU is the user's error, naming the visible ones ---------------------
def test_unavailable_cuda_index_is_a_user_error(monkeypatch):
    from lora_studio.engine import models

    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        models.resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA H200")
    with pytest.raises(UserError, match=r"cuda:3 does not exist.*cuda:0 \(NVIDIA H200\)"):
        models.resolve_device("cuda:3")
    with pytest.raises(UserError, match="unknown"):
        models.resolve_device("cuda:x")
    assert models.resolve_device("cuda:0") == torch.device("cuda", 0)


# -- item 12: transformers 5's activation checkpointing, without the deprecation warning ---------
def test_checkpointing_uses_the_current_api(recwarn):
    from lora_studio.engine.setup import checkpointing

    model = tiny.build("llama")
    checkpointing(model)
    assert model.is_gradient_checkpointing
    assert not [w for w in recwarn if "checkpointing_enable" in str(w.message)], [str(w.message) for w in recwarn]


# -- benchmarks/gpu_check.py: the blind first-GPU script (issue 21) -----------------------------
def _gpu_check(*args, cwd, timeout=120):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_gpu_check_dry_run_lists_every_check_with_its_timeout(tmp_path):
    r = _gpu_check("--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.startswith("would run ")]
    names = [x.split()[2] for x in lines]
    assert len(names) == len(set(names)) >= 25
    # what the issue asks to measure or exercise, each by name
    assert {"auto_device_end_to_end", "ddp_fsdp_one_gpu", "fsdp_bnb_optimizer", "tryit_finished_run",
            "load_straight_to_gpu", "syncs_per_step", "dist_syncs_per_step", "step_vs_peft_1b", "mfu_1b",
            "nf4_weight_memory", "qlora_train_resume", "planner_vs_peak", "fsdp_load_sharded", "oom_caught"} <= set(names)
    assert all("timeout" in x and x.split("): ", 1)[1].strip() for x in lines)  # each says what it checks
    assert names[0] == "auto_device_end_to_end"  # the default path first: a run cut short keeps it
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.slow
def test_gpu_check_runs_a_check_in_its_own_process_and_writes_one_line(tmp_path):
    """The runner without a GPU (--cpu): a CPU-meaningful check passes; a GPU-only one is skipped."""
    r = _gpu_check(str(tmp_path / "results"), "--cpu", "--only", "fsdp_bnb_optimizer,mfu_1b", cwd=tmp_path,
                   timeout=300)
    lines = (tmp_path / "results" / "gpu_check.txt").read_text().splitlines()
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines[0].startswith("OK   fsdp_bnb_optimizer (N4): adamw8bit: Failure user") and \
        lines[1].startswith("SKIP mfu_1b (15): needs a GPU"), lines
    assert "| fsdp_bnb_optimizer | N4 | OK |" in (tmp_path / "results" / "gpu_check.md").read_text()


# -- item 9: weights load straight to the GPU, not through a full copy in host memory -----------
def test_load_model_maps_weights_to_the_gpu(tmp_path, monkeypatch):
    from lora_studio.engine import models

    seen = {}

    class Fake:
        @staticmethod
        def from_pretrained(ref, **kwargs):
            seen.update(kwargs)
            return torch.nn.Linear(1, 1)

    folder = tiny.model_folder(tmp_path / "llama", "llama")
    monkeypatch.setattr(models, "auto_class", lambda task: Fake)
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)  # no real GPU here
    models.load_model(str(folder), dtype="bfloat16", device=torch.device("cuda", 1))
    assert seen["device_map"] == {"": torch.device("cuda", 1)} and seen["dtype"] == torch.bfloat16
    seen.clear()
    models.load_model(str(folder), device="cpu")
    assert "device_map" not in seen


# -- item 9: no sync in the fused loss: its target rows are found on the host --------------------
class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    """Names of the aten ops run (nonzero and boolean indexing are the ones whose output size
    depends on the data: on a GPU each waits for the device)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        indices = [a for x in args[1:] for a in (x if isinstance(x, (list, tuple)) else [x])]
        mask = any(isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in indices)
        self.names.append(func.__name__ + (" (boolean mask)" if mask else ""))
        return func(*args, **(kwargs or {}))


def test_fused_loss_finds_its_rows_on_the_host():
    from lora_studio.engine.data import collate
    from lora_studio.engine.loss import causal_lm_loss
    from lora_studio.engine.setup import to_device

    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    tiny.randomize_adapters(model)
    examples = [{"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9]},
                {"input_ids": [10, 11, 12], "labels": [-100, 11, 12]}]
    plain = collate(examples, 0)
    batch = to_device(plain, torch.device("cpu"))
    assert batch.targets is not None and set(batch) == set(plain)
    want = causal_lm_loss(model, plain)
    want.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    with _Ops() as ops:
        got = causal_lm_loss(model, batch)
    got.backward()
    syncs = [n for n in ops.names if n.startswith(("nonzero", "masked_select")) or
             n.startswith("index") and "boolean mask" in n]
    assert not syncs, syncs
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for g, p in zip(grads, [p for p in model.parameters() if p.requires_grad]):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    logits = model(**plain).logits[:, :-1]  # and both equal the plain cross-entropy
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), plain["labels"][:, 1:].reshape(-1))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


# -- item 7: a setup that fails after loading the model still gives the GPU cache back -----------
def test_setup_failure_after_loading_releases_the_cache(tmp_path, monkeypatch):
    from lora_studio.engine import train as T

    folder = tiny.model_folder(tmp_path / "llama", "llama")
    cfg = _causal_config(tmp_path, folder).replace(lora={"rank": 512})  # refused by inject, after loading
    calls = []
    real = torch.cuda.is_available
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(real()))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine (the run is on the CPU)
    ev = T.train(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", real)
    assert ev.kind == "user" and "rank 512" in ev.message
    assert calls, "empty_cache was not called after the failed setup"


def test_only_damaged_weights_are_reported_as_unreadable():
    """models.load_model used to call every RuntimeError "weights unreadable" (issue 11)."""
    from lora_studio.engine.models import _unreadable

    assert _unreadable(RuntimeError("Error while deserializing header: HeaderTooSmall"))
    assert _unreadable(RuntimeError("Error(s) in loading state_dict for BertModel: size mismatch for x"))
    assert not _unreadable(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not _unreadable(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (header)"))
    assert not _unreadable(ValueError("safetensors"))
