"""Issue 21: the CUDA-only branches, taken on a CPU (tests/fakecuda.py). One test per finding of the
GPU-readiness review (N1-N10); each fails with its fix taken out."""

import json
import tomllib
from pathlib import Path

import pytest
import torch

import fakecuda
import tiny
from lora_studio.config import RunConfig
from lora_studio.engine import UserError

ROOT = Path(__file__).resolve().parents[2]


def _data(tmp_path, n=24) -> Path:
    rows = [{"prompt": f"what comes after {i} ?", "completion": " seven seven"} for i in range(n)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return data


class Reached(Exception):
    pass


# -- N1: the default device "auto" on a CUDA machine gets past device selection -----------------
def test_default_device_auto_gets_past_device_selection(tmp_path, monkeypatch):
    from lora_studio.engine import models
    from lora_studio.engine.train import train

    rec = fakecuda.visible(monkeypatch, gpus=1)
    seen = {}

    def load_model(ref, task, **kw):  # as far as a CPU can go: the model would be loaded onto the GPU here
        seen.update(kw)
        raise UserError("reached loading")

    monkeypatch.setattr(models, "load_model", load_model)
    folder = tiny.model_folder(tmp_path / "llama", "llama")
    cfg = RunConfig().replace(model={"path": str(folder), "task": "causal-lm"}, data={"path": str(_data(tmp_path))},
                              train={"max_steps": 1}, out=str(tmp_path / "run"))
    assert cfg.train.device == "auto"  # the CLI's and the GUI's default
    result = train(cfg)
    assert result.message == "reached loading", result.message
    assert rec.set_device == [0] and seen["device"] == torch.device("cuda", 0)
    assert seen["dtype"] == torch.bfloat16  # auto precision on an Ampere-class GPU


def test_auto_and_any_cuda_index_take_the_local_rank_under_torchrun(monkeypatch):
    from lora_studio.engine.models import resolve_device

    fakecuda.visible(monkeypatch, gpus=4)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    # N7: a GUI-saved cuda:0 under torchrun would put every rank on GPU 0
    for device in ("auto", "cuda", "cuda:0", "cuda:3"):
        assert resolve_device(device) == torch.device("cuda", 2), device


def test_torchrun_with_a_cuda_index_joins_nccl_on_its_own_gpu(monkeypatch):
    """N7: `cuda:N` was treated as a CPU device: gloo, and no set_device(LOCAL_RANK)."""
    import torch.distributed as td

    from lora_studio.engine import distributed

    rec = fakecuda.visible(monkeypatch, gpus=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls = []
    monkeypatch.setattr(td, "is_initialized", lambda: False)
    monkeypatch.setattr(td, "init_process_group", lambda backend, **kw: calls.append((backend, kw.get("device_id"))))
    for device in ("auto", "cuda", "cuda:0"):
        distributed.init_from_env(device)
    assert calls == [("nccl", torch.device("cuda", 1))] * 3
    assert rec.set_device == [1, 1, 1]
    calls.clear()
    distributed.init_from_env("cpu")
    assert calls == [("gloo", None)]


# -- N2: a plain install brings what loading onto a GPU needs -----------------------------------
def test_accelerate_is_a_plain_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for d in project["dependencies"]]
    assert "accelerate" in names, names
    assert any(d.startswith("accelerate") for d in project["optional-dependencies"]["qlora"])


def test_loading_onto_a_gpu_uses_device_map_which_needs_accelerate(tmp_path, monkeypatch):
    """What N2 is about: without accelerate, transformers refuses device_map (the message users saw)."""
    import transformers.integrations.accelerate as acc

    from lora_studio.engine.models import load_model

    folder = tiny.model_folder(tmp_path / "llama", "llama")
    fakecuda.visible(monkeypatch, gpus=1)
    monkeypatch.setattr(acc, "is_accelerate_available", lambda: False)
    with pytest.raises(UserError, match="accelerate"):
        load_model(str(folder), "causal-lm", dtype=torch.bfloat16, device=torch.device("cuda", 0))


# -- N3: FSDP2 with the user's defaults (evaluation at step 0, a validation split) ---------------
def _train_worker(rank, world, config, resume=None, record=None):
    from lora_studio.engine import models
    from lora_studio.engine.errors import Failure
    from lora_studio.engine.train import train

    real = models.load_model
    loads = []

    def load_model(ref, task="causal-lm", **kw):  # who reads the weights, to which device
        loads.append(str(kw.get("device")))
        return real(ref, task, **kw)

    models.load_model = load_model
    result = train(config, resume=resume)
    if record:
        Path(f"{record}.{rank}").write_text(json.dumps(loads))
    if isinstance(result, Failure):
        raise RuntimeError(f"rank {rank}: {result.message}")


def _defaults_config(tmp_path, folder, data, name, batch, mode="auto", **train):
    """RunConfig's defaults (device and precision auto, eval_every 50 so a baseline evaluation at step 0
    and one at the end, validation_split 0.1, the LoRA defaults) but for the run's length and batch."""
    t = {"max_steps": 3, "batch_size": batch, "lr": 1e-2, "seed": 3, "distributed": mode, **train}
    return RunConfig().replace(model={"path": str(folder), "task": "causal-lm"}, data={"path": str(data)},
                               train=t, out=str(tmp_path / name))


def _evals(run):
    from lora_studio.engine.runfolder import read_metrics

    return [(m["step"], m["eval_loss"]) for m in read_metrics(run) if "eval_loss" in m]


@pytest.mark.slow
def test_fsdp2_with_the_default_evaluation_trains_the_adapter_of_one_process(tmp_path):
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.train import train

    folder = tiny.model_folder(tmp_path / "llama", "llama")
    data = _data(tmp_path, 22)
    one = _defaults_config(tmp_path, folder, data, "one", 8)
    assert one.train.eval_every > 0 and one.data.validation_split > 0 and one.train.device == "auto"
    assert not train(one).stopped
    fsdp = _defaults_config(tmp_path, folder, data, "fsdp", 4, mode="fsdp")
    fakecuda.spawn(_train_worker, 2, fsdp, None, str(tmp_path / "loads"), store_dir=tmp_path)
    # N5: process 0 alone reads the weights (into host memory); process 1 built on meta and got its shards
    assert json.loads((tmp_path / "loads.0").read_text()) == ["cpu"]
    assert json.loads((tmp_path / "loads.1").read_text()) == []
    ref, got = read_adapter(one.out).modules, read_adapter(fsdp.out).modules
    assert got.keys() == ref.keys() and any(m.B.abs().max() > 1e-3 for m in ref.values())  # it trained
    for name in ref:
        torch.testing.assert_close((got[name].A, got[name].B), (ref[name].A, ref[name].B), rtol=0, atol=1e-5)
    e1, e2 = _evals(one.out), _evals(fsdp.out)
    assert [s for s, _ in e2] == [s for s, _ in e1] == [0, 3]
    torch.testing.assert_close(torch.tensor([v for _, v in e2]), torch.tensor([v for _, v in e1]), rtol=0, atol=1e-5)


# -- N4: FSDP2 with a bitsandbytes optimizer is refused up front, by name -----------------------
@pytest.mark.parametrize("optimizer", ["adamw8bit", "paged_adamw"])
def test_fsdp_with_a_bnb_optimizer_is_refused_before_loading(tmp_path, monkeypatch, optimizer):
    from lora_studio.engine import models
    from lora_studio.engine.train import train

    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun (the group itself is not needed to refuse)
    monkeypatch.setattr("lora_studio.engine.distributed.Dist.from_env", classmethod(lambda cls, d="auto": cls()))
    monkeypatch.setattr(models, "load_model", lambda *a, **k: (_ for _ in ()).throw(Reached()))
    folder = tiny.model_folder(tmp_path / "llama", "llama")
    cfg = RunConfig().replace(model={"path": str(folder), "task": "causal-lm"}, data={"path": str(_data(tmp_path))},
                              train={"max_steps": 1, "device": "cpu", "distributed": "fsdp", "optimizer": optimizer},
                              out=str(tmp_path / "run"))
    result = train(cfg)
    assert result.kind == "user" and f"--optimizer {optimizer} cannot" in result.message, result.message
    assert "--optimizer adamw" in result.message and "\n" not in result.message


def test_auto_choosing_fsdp_refuses_a_bnb_optimizer_before_sharding():
    from lora_studio.engine.distributed import Dist

    model = tiny.build("llama")
    with pytest.raises(UserError, match="--optimizer adamw8bit cannot step FSDP2"):
        Dist(0, 2).wrap(model, "fsdp", torch.device("cpu"), optimizer="adamw8bit")


# -- N6: Try it on a finished run loads the base the way the run trained it ----------------------
def test_try_it_loads_the_base_in_the_runs_precision_and_quantization(tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    from lora_studio.engine import models, tryit
    from lora_studio.engine.train import train

    folder = tiny.model_folder(tmp_path / "llama", "llama")
    cfg = RunConfig().replace(model={"path": str(folder), "task": "causal-lm"}, data={"path": str(_data(tmp_path))},
                              train={"max_steps": 1, "device": "cpu", "eval_every": 0}, out=str(tmp_path / "run"))
    assert not train(cfg).stopped
    # the same run as a QLoRA run trained on the GPU would have saved it
    cfg.replace(model={"quantize": "nf4"}, train={"device": "auto", "precision": "auto"}).save(
        tmp_path / "run" / "run.toml")
    fakecuda.visible(monkeypatch, gpus=1)
    seen = {}

    def load_model(ref, task, **kw):
        seen.update(kw)
        raise Reached()

    monkeypatch.setattr(models, "load_model", load_model)
    from lora_studio.engine import quantize  # its preflight runs a real bitsandbytes kernel on the GPU

    monkeypatch.setattr(quantize, "preflight", lambda q, device: (None, None))
    tryit.forget()
    with pytest.raises(Reached):
        tryit.compare(tmp_path / "run", "what comes after 3 ?")
    q = seen["quantization_config"]
    assert seen["dtype"] == torch.bfloat16 and seen["device"] == torch.device("cuda", 0)
    assert q is not None and q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and \
        q.bnb_4bit_compute_dtype == torch.bfloat16
    seen.clear()  # asked on the CPU: the same quantization, in fp32 (fp16/bf16 bases are for GPUs)
    with pytest.raises(Reached):
        tryit.compare(tmp_path / "run", "what comes after 3 ?", device="cpu")
    assert seen["dtype"] == torch.float32 and seen["device"] == torch.device("cpu")
    assert seen["quantization_config"].load_in_4bit


# -- N8: the planner's activations are what the attention kernels really keep ------------------
def _saved_bytes(cfg, batch, seq, targets):
    """Bytes autograd saves in one training forward (the project's training_loss, bf16 base, bf16
    autocast; SDPA on a CPU takes its flash kernel for causal bf16 without a padding mask, as CUDA does)."""
    import transformers as T

    from lora_studio import LoraSpec, inject
    from lora_studio.engine.loss import training_loss

    torch.manual_seed(0)
    m = T.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    inject(m, LoraSpec(targets=list(targets), rank=8, alpha=16))
    m.train()
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(3, cfg.vocab_size, (batch, seq))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        training_loss(m, x)
    return sum(seen.values())


@pytest.mark.parametrize("targets", [("q", "k", "v", "o"), ("q", "v", "gate", "up", "down")])
def test_planner_activations_match_what_flash_attention_saves(targets):
    import transformers as T

    from lora_studio.engine.budget import activation_bytes

    def cfg(layers):  # Llama-3.2-1B's proportions, scaled down: GQA 4:1, SwiGLU 4h, tied embeddings
        return T.LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=layers, num_attention_heads=8,
                             num_key_value_heads=2, vocab_size=256, max_position_embeddings=1024,
                             tie_word_embeddings=True)

    batch, seq = 1, 512
    per_layer = _saved_bytes(cfg(2), batch, seq, targets) - _saved_bytes(cfg(1), batch, seq, targets)
    planned = activation_bytes(cfg(1), batch, seq, "bf16", False, targets, attention="flash")
    assert 0.85 <= planned / per_layer <= 1.2, (planned, per_layer, planned / (batch * seq * 256))


# -- N9: under DDP / FSDP2 the fused loss keeps the target rows found on the host ----------------
def test_wrapped_loss_keeps_the_host_target_rows_through_the_input_move(monkeypatch):
    """DDP (device_ids) and FSDP2's root on CUDA move the inputs with torch.distributed.utils._to_kwargs,
    which rebuilds a dict subclass from its items: setup.Batch.targets was lost, and causal_lm_loss
    found the rows on the GPU (a nonzero: a host sync every micro-batch)."""
    from torch.distributed.utils import _to_kwargs

    from lora_studio import LoraSpec, inject
    from lora_studio.engine import loss
    from lora_studio.engine.data import collate
    from lora_studio.engine.distributed import Dist, LossModule
    from lora_studio.engine.objective import CausalLM
    from lora_studio.engine.setup import to_device

    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    inner = LossModule(model, CausalLM())

    def ddp_on_cuda(*inputs, **kwargs):  # what DDP's forward does to its arguments before the module
        inputs, kwargs = _to_kwargs(inputs, kwargs, torch.device("cpu"), False)
        return inner(*inputs[0], **kwargs[0])

    d = Dist(0, 2, "ddp")
    d.runner = ddp_on_cuda
    monkeypatch.setattr(d, "weight", lambda local: torch.ones(()))  # the all-reduce of the counts: no group here
    examples = [{"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8]},
                {"input_ids": [1, 9, 10], "labels": [-100, 10, 2]}]
    batch = to_device(collate(examples, 0), torch.device("cpu"))
    assert batch.targets is not None
    found = []
    real = loss.target_rows
    monkeypatch.setattr(loss, "target_rows", lambda labels: found.append(1) or real(labels))
    wrapped, _ = d.loss(CausalLM(), model, batch, CausalLM().count(batch))
    assert found == [], "the wrapped loss looked for its target rows on the device"
    torch.testing.assert_close(wrapped, loss.training_loss(model, batch), rtol=0, atol=0)


# -- N10: a checkpoint gathers the trained tensors only, never the frozen base --------------------
def _gather_worker(rank, world, out):
    import torch.distributed.checkpoint.state_dict as sd

    from lora_studio import LoraSpec, inject
    from lora_studio.engine.distributed import Dist
    from lora_studio.engine.lora import trainable_parameters
    from lora_studio.engine.objective import CausalLM
    from lora_studio.engine.quantize import make_optimizer

    model = tiny.build("llama")
    inject(model, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
    d = Dist(rank, world)
    d.wrap(model, "fsdp", torch.device("cpu"))
    opt = make_optimizer("adamw", trainable_parameters(model), 1e-2, 0.0)
    ids = torch.randint(3, tiny.VOCAB, (2, 8))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    d.loss(CausalLM(), model, batch, CausalLM().count(batch))[0].backward()
    opt.step()
    gathered = []
    real = sd.get_model_state_dict

    def counting(m, *a, **k):
        sdict = real(m, *a, **k)
        gathered.append(sum(t.numel() for t in sdict.values()))
        return sdict

    sd.get_model_state_dict = counting
    adapter, state = d.gather(model, opt)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad) * world  # local shards x ranks
    if rank == 0:
        Path(out).write_text(json.dumps({"gathered": gathered, "trained": trained,
                                         "adapter": sum(t.numel() for t in adapter.values())}))


@pytest.mark.slow
def test_a_checkpoint_gathers_only_the_trained_tensors(tmp_path):
    out = tmp_path / "gathered.json"
    fakecuda.spawn(_gather_worker, 2, str(out), store_dir=tmp_path)
    r = json.loads(out.read_text())
    total = sum(p.numel() for p in tiny.build("llama").parameters())
    assert r["adapter"] > 0 and r["gathered"], r
    assert max(r["gathered"]) <= 2 * r["adapter"] < total, (r, total)  # was the whole model (+ adapter)


# -- N15: the planner's GPU is the one the run trains on ------------------------------------------
def test_will_it_fit_reads_the_gpu_the_run_trains_on(monkeypatch):
    """It read GPU 0 whatever cuda:N was chosen: a run on a 24 GiB GPU 1 was planned against an
    80 GiB GPU 0 (or the reverse)."""
    from types import SimpleNamespace

    from lora_studio.engine.fit import gpu_memory_bytes, gpu_of
    from lora_studio.ui.fit_panel import detect_gpu

    rec = fakecuda.visible(monkeypatch, gpus=3)
    sizes = {0: 80, 1: 24, 2: 48}
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d=None: SimpleNamespace(total_memory=sizes[d] * fakecuda.GiB, name=f"GPU {d}"))
    assert gpu_of("cuda:1") == (24 * fakecuda.GiB, "GPU 1") and gpu_memory_bytes(device="cuda:2") == 48 * fakecuda.GiB
    torch.cuda.set_device(1)  # as --device auto does under torchrun with LOCAL_RANK 1
    assert rec.current == 1 and gpu_of("auto")[0] == gpu_of("cuda")[0] == 24 * fakecuda.GiB
    assert gpu_of("cpu") is None and gpu_memory_bytes(40, "cuda:0") == 40 * fakecuda.GiB  # typed wins
    assert detect_gpu("cuda:2") == (48 * fakecuda.GiB, "GPU 2")  # the GUI's Will-it-fit panel


# -- N22 (the D3 test that did not reproduce) and N16 ---------------------------------------------
def test_rng_restore_on_fewer_gpus_sets_only_the_visible_ones(monkeypatch):
    from lora_studio.engine.checkpoint import rng_state, set_rng_state

    fakecuda.visible(monkeypatch, gpus=1)
    state = rng_state(torch.device("cpu"))
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 3  # saved on a 3-GPU machine
    calls = []

    def set_one(s, i):
        if i >= torch.cuda.device_count():
            raise IndexError("list index out of range")  # what torch does for a GPU that is not there
        calls.append(i)

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_one)
    assert set_rng_state(state) == "GPU random state restored for 1 of 3 GPUs" and calls == [0]


def test_a_cpu_run_on_a_gpu_machine_leaves_cuda_alone(monkeypatch):
    from lora_studio.engine.checkpoint import rng_state

    fakecuda.visible(monkeypatch, gpus=2)
    touched = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: touched.append(1) or [torch.zeros(16)])
    assert "cuda" not in rng_state(torch.device("cpu")) and not touched
    assert len(rng_state(torch.device("cuda", 0))["cuda"]) == 1 and touched


# -- N13: FSDP2 under the run's autocast, one unit per block --------------------------------------
def _fsdp_bf16_worker(rank, world, out):
    from types import SimpleNamespace

    from torch.distributed.fsdp import FSDPModule

    from lora_studio import LoraSpec, inject
    from lora_studio.engine.distributed import Dist
    from lora_studio.engine.lora import lora_layers
    from lora_studio.engine.objective import CausalLM
    from lora_studio.engine.step import autocast
    from lora_studio.engine.targets import decoder_blocks

    def model_():
        torch.manual_seed(0)
        m = tiny.build("llama").to(torch.bfloat16)  # a half-precision base, as on a GPU
        inject(m, LoraSpec(targets=["q", "v"], rank=4, alpha=8))
        for layer in lora_layers(m).values():  # trained adapters, so their gradients are not all alike
            torch.nn.init.normal_(layer.lora_B, std=0.05)
        return m

    s = SimpleNamespace(precision="bf16", device=torch.device("cpu"))
    ids = torch.randint(3, tiny.VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    ref = model_()  # one process: the loop's autocast
    with autocast(s):
        CausalLM().loss(ref, batch)[0].backward()
    model = model_()
    d = Dist(rank, world)
    d.wrap(model, "fsdp", torch.device("cpu"))
    with d.autocast(s):  # every process the same whole batch: the averaged gradient is one process's
        d.loss(CausalLM(), model, batch, CausalLM().count(batch))[0].backward()
    gap, compared = 0.0, 0
    for p, q in zip(model.parameters(), ref.parameters()):
        if q.grad is not None:
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            gap = max(gap, float((g.float() - q.grad.float()).abs().max() / q.grad.float().abs().max()))
            compared += 1
    if rank == 0:
        units = sum(isinstance(m, FSDPModule) for m in d.runner.modules())
        Path(out).write_text(json.dumps({"units": units, "blocks": len(decoder_blocks(model)), "gap": gap,
                                         "compared": compared,
                                         "mixed": sorted({str(p.dtype) for p in model.parameters()})}))


@pytest.mark.slow
def test_fsdp2_trains_under_the_run_s_autocast_with_one_unit_per_block(tmp_path):
    """A bf16 base with fp32 adapters: FSDP2's adapter gradients are one process's under the same
    autocast (without it its LoRA GEMMs ran in fp32: 1e-2 apart), and each block is one FSDP unit
    (no extra unit per adapted layer), plus the root."""
    out = tmp_path / "fsdp.json"
    fakecuda.spawn(_fsdp_bf16_worker, 2, str(out), store_dir=tmp_path)
    r = json.loads(out.read_text())
    assert r["mixed"] == ["torch.bfloat16", "torch.float32"], r
    assert r["units"] == r["blocks"] + 1, r
    assert r["compared"] == 8 and r["gap"] <= 1e-3, r  # A and B of q and v in 2 blocks


# -- N20: the export's gap check computes in the run's precision, not bf16 on every GPU ----------
@pytest.mark.parametrize("capability, precision, want", [
    ((7, 5), "auto", torch.float16),  # a T4: auto trained in fp16; the check was bf16 (emulated, slow)
    ((7, 5), "bf16", torch.float16),  # a bf16 run checked on a GPU without bf16
    ((7, 5), "fp32", torch.float32),
    ((8, 0), "auto", torch.bfloat16),
    ((8, 0), "fp16", torch.float16),  # was bf16: another half type than the run trained in
])
def test_export_gap_check_computes_in_the_run_s_precision(tmp_path, monkeypatch, capability, precision, want):
    pytest.importorskip("bitsandbytes")
    from lora_studio.engine import models
    from lora_studio.engine.quantize import quantized_logits

    fakecuda.visible(monkeypatch, gpus=1, capability=capability)
    seen = {}

    def load_model(ref, task, **kw):
        seen.update(kw)
        raise Reached

    monkeypatch.setattr(models, "load_model", load_model)
    run = tmp_path / "run"
    run.mkdir()
    RunConfig().replace(model={"path": "some/model", "task": "causal-lm", "quantize": "nf4"},
                        train={"precision": precision}).save(run / "run.toml")
    with pytest.raises(Reached):
        quantized_logits("some/model", "causal-lm", run, "nf4", {})
    assert seen["dtype"] == want and seen["quantization_config"].bnb_4bit_compute_dtype == want
