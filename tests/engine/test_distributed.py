"""Many processes (gloo on CPU, 2 ranks through torch.multiprocessing.spawn and a FileStore: no
port): DDP and FSDP2 train the same adapter as one process with the same global batch, and a
run checkpointed by 2 processes resumes in 1 on the same loss curve."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp

import tiny
from lora_studio.config import RunConfig
from lora_studio.engine.adapters import read_adapter
from lora_studio.engine.events import Started
from lora_studio.engine.runfolder import read_metrics

slow = pytest.mark.slow  # each of these starts 2 processes that import torch and transformers


def _worker(rank: int, world: int, store: str, config: RunConfig, resume, stop_at: int = 0):
    from lora_studio.engine import loss
    from lora_studio.engine.errors import Failure
    from lora_studio.engine.events import Control
    from lora_studio.engine.train import train

    torch.set_num_threads(1)
    td.init_process_group("gloo", store=td.FileStore(store, world), rank=rank, world_size=world)
    control, calls, plain = Control(), [], loss.training_loss
    if stop_at and rank == 1:  # rank 1 alone is asked to stop, during micro-batch `stop_at`

        def counting(model, batch):
            calls.append(1)
            if len(calls) == stop_at:
                control.stop()
            return plain(model, batch)

        loss.training_loss = counting
    result = train(config, control=control, resume=resume)
    if isinstance(result, Failure):
        raise RuntimeError(f"rank {rank}: {result.message}")


def _spawn(tmp_path: Path, config: RunConfig, world: int = 2, resume=None, stop_at: int = 0):
    store = tmp_path / f"store-{config.train.distributed}-{world}"
    mp.spawn(_worker, args=(world, str(store), config, resume, stop_at), nprocs=world, join=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = root / "d.jsonl"
    # prompts of different lengths: token weighting matters; 22 examples, 20 after the 10% split:
    # with a global batch of 8 each epoch ends on a micro-batch of 4 (rank 1's part is empty)
    rows = [{"prompt": "what comes after " + " ".join(["one"] * (i % 5 + 1)) + f" {i} ?", "completion": " seven seven"}
            for i in range(22)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return tiny.model_folder(root / "llama", "llama"), data


def _config(tmp_path, folders, name, batch, steps=3, mode="auto"):
    model, data = folders
    t = {"max_steps": steps, "batch_size": batch, "grad_accum": 2, "lr": 1e-2, "eval_every": 0, "save_every": 3,
         "seed": 3, "warmup_ratio": 0.0, "schedule": "constant", "precision": "fp32", "device": "cpu",
         "distributed": mode}
    return RunConfig().replace(model={"path": str(model), "task": "causal-lm"},
                               lora={"targets": ["q", "v"], "rank": 4, "alpha": 8, "dropout": 0.0},
                               data={"path": str(data), "max_length": 32, "validation_split": 0.1},
                               train=t, out=str(tmp_path / name))


def _adapter(run: str):
    return {n: (m.A, m.B) for n, m in read_adapter(run).modules.items()}


def _losses(run: str):
    return [(m["step"], m["loss"]) for m in read_metrics(run) if "loss" in m]


def _single(tmp_path, folders, steps=3):
    from lora_studio.engine.train import train

    cfg = _config(tmp_path, folders, "one", 8, steps)
    assert not train(cfg).stopped
    return cfg.out


@slow
def test_ddp_and_fsdp2_equal_one_process_with_the_same_global_batch(tmp_path, folders):
    one = _single(tmp_path, folders)
    ddp = _config(tmp_path, folders, "ddp", 4, mode="ddp")
    fsdp = _config(tmp_path, folders, "fsdp", 4, mode="fsdp")
    _spawn(tmp_path, ddp)
    _spawn(tmp_path, fsdp)
    ref = _adapter(one)
    assert any(B.abs().max() > 1e-3 for _, B in ref.values())  # it trained
    for run in (ddp.out, fsdp.out):
        got = _adapter(run)
        assert got.keys() == ref.keys()
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-5)
        steps, losses = zip(*_losses(run))
        assert steps == (1, 2, 3)
        torch.testing.assert_close(torch.tensor(losses), torch.tensor([v for _, v in _losses(one)]),
                                   rtol=0, atol=1e-5)
        # rank 0 alone wrote the run folder; the checkpoint holds the full adapter
        assert {p.name for p in (Path(run) / "checkpoints").iterdir()} == {"step-3"}
        for name, (A, B) in _adapter(Path(run) / "checkpoints" / "step-3").items():
            torch.testing.assert_close((A, B), ref[name], rtol=0, atol=1e-5)
    torch.testing.assert_close(_adapter(ddp.out), _adapter(fsdp.out), rtol=0, atol=1e-5)


@slow
def test_a_run_resumes_from_two_processes_in_one_and_from_one_in_two_on_the_same_curve(tmp_path, folders):
    from lora_studio.engine.train import train

    one = _single(tmp_path, folders, steps=6)
    two = _config(tmp_path, folders, "two", 4)
    _spawn(tmp_path, two)
    events = []  # the run's own per-process batch (4): one process takes 8, the run's global batch
    result = train(_config(tmp_path, folders, "two", 4, steps=6), events.append, resume=two.out)
    notes = [n for e in events if isinstance(e, Started) for n in e.notes or []]
    assert any("batch size 8 per process (was 4)" in n for n in notes), notes
    assert not result.stopped and result.step == 6
    torch.testing.assert_close(torch.tensor([v for _, v in _losses(two.out)]),
                               torch.tensor([v for _, v in _losses(one)]), rtol=0, atol=1e-5)
    for name, ab in _adapter(one).items():
        torch.testing.assert_close(_adapter(two.out)[name], ab, rtol=0, atol=1e-5)
    # and 1 -> 2: a run of one process with batch 8 resumes on 2 processes with batch 4 each
    three = _config(tmp_path, folders, "three", 8, mode="fsdp")
    assert not train(three).stopped
    _spawn(tmp_path, _config(tmp_path, folders, "three", 8, steps=6, mode="fsdp"), resume=three.out)
    torch.testing.assert_close(torch.tensor([v for _, v in _losses(three.out)]),
                               torch.tensor([v for _, v in _losses(one)]), rtol=0, atol=1e-5)


@slow
def test_train_nproc_runs_torchrun_end_to_end(tmp_path, folders):
    import os
    import subprocess
    import sys

    model, data = folders
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "lora_studio", "train", "--nproc", "2", "--model", str(model), "--task", "causal-lm",
           "--data", str(data), "--max-length", "32", "--max-steps", "2", "--batch-size", "4", "--device", "cpu",
           "--precision", "fp32", "--distributed", "ddp", "--eval-every", "0", "--quiet", "--out", str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node 2" in p.stderr
    assert "2 processes, DDP" in p.stderr
    assert [m["step"] for m in read_metrics(out) if "loss" in m] == [1, 2]
    assert RunConfig.load(out / "run.toml").train.distributed == "ddp"
    assert (out / "adapter_model.safetensors").is_file()


@slow
def test_a_stop_seen_by_one_rank_stops_every_rank_at_the_same_step(tmp_path, folders):
    cfg = _config(tmp_path, folders, "stop", 4, steps=6, mode="fsdp")
    _spawn(tmp_path, cfg, stop_at=3)  # micro-batch 3 = the first of step 2: rank 1 stops after step 2
    assert [s for s, _ in _losses(cfg.out)] == [1, 2]
    assert {p.name for p in (Path(cfg.out) / "checkpoints").iterdir()} == {"step-2"}
    assert json.loads((Path(cfg.out) / "run_state.json").read_text())["state"] == "stopped"


def test_nproc_starts_torchrun_with_the_same_arguments(monkeypatch):
    import subprocess
    import sys

    from lora_studio.cli import main

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", "--nproc", "3", "--max-steps", "5", "--distributed=fsdp", "--out", "r"]) == 7
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
                      "-m", "lora_studio", "train", "--max-steps", "5", "--distributed=fsdp", "--out", "r"]]
    assert main(["train", "--nproc", "0"]) == 2 and len(calls) == 1


def test_distributed_mode_is_validated():
    from lora_studio.engine.errors import UserError

    with pytest.raises(UserError, match="distributed mode 'zero' unknown: use one of auto, ddp, fsdp"):
        RunConfig().replace(train={"distributed": "zero"}).validate()


FAILING_RANK = """
import os, sys
from lora_studio.engine import loss
from lora_studio.cli import main

plain = loss.training_loss
def failing(model, batch):
    if os.environ["RANK"] == "1":
        raise ValueError("bad example on this shard")
    return plain(model, batch)
loss.training_loss = failing
sys.exit(main(sys.argv[1:]))
"""


@slow
def test_a_failing_rank_ends_every_rank_with_one_message(tmp_path, folders):
    import os
    import subprocess
    import sys

    model, data = folders
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           "train", "--model", str(model), "--task", "causal-lm", "--data", str(data), "--max-length", "32",
           "--max-steps", "2", "--batch-size", "4", "--device", "cpu", "--eval-every", "0", "--quiet",
           "--out", str(tmp_path / "run")]
    # rank 0 waits in a collective for rank 1, which failed: torchrun must end it (no hang)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: process 1: "), p.stderr[-3000:]
    assert "bad example on this shard" in errors[0]


@slow
def test_ctrl_c_to_nproc_stops_every_rank_saves_once_and_exits_130(tmp_path, folders):
    import os
    import signal
    import subprocess
    import sys
    import time

    model, data = folders
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "lora_studio", "train", "--nproc", "2", "--model", str(model), "--task", "causal-lm",
           "--data", str(data), "--max-length", "32", "--max-steps", "100000", "--batch-size", "4", "--device", "cpu",
           "--eval-every", "0", "--save-every", "0", "--save-minutes", "0", "--quiet", "--out", str(out)]
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not any("loss" in m for m in (read_metrics(out) if (out / "metrics.jsonl").exists() else [])):
        assert p.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
    _, err = p.communicate(timeout=240)
    assert p.returncode == 130, err[-3000:]
    assert json.loads((out / "run_state.json").read_text())["state"] == "stopped"
    steps = [m["step"] for m in read_metrics(out) if "loss" in m]
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{steps[-1]}"]  # saved once, at the stop
    assert "exiting without saving" not in err


def test_budget_per_gpu_for_ddp_and_fsdp2(tmp_path):
    """DDP holds the whole base on each GPU; FSDP2 a 1/N shard plus two gathered decoder blocks."""
    from lora_studio.config import LoraConfig
    from lora_studio.engine.budget import estimate
    from lora_studio.engine.fit import per_device
    from lora_studio.engine.models import skeleton

    folder = tiny.model_folder(tmp_path / "llama", "llama")
    model = skeleton(str(folder), "causal-lm")
    mem = estimate(model, LoraConfig(targets=["q", "v"], rank=4).to_spec(), "bf16", 2, 64).memory_lora
    ddp, fsdp = per_device(model, mem, 4, "bf16")
    block = sum(p.numel() for p in model.model.layers[0].parameters())
    assert ddp.weights == mem.weights and ddp.gradients == 2 * mem.gradients and ddp.activations == mem.activations
    assert fsdp.weights == -(-mem.weights // 4) + 2 * block * 2
    assert fsdp.optimizer == -(-mem.optimizer // 4) and fsdp.activations == mem.activations
    assert fsdp.total == fsdp.weights + fsdp.gradients + fsdp.optimizer + fsdp.activations


def test_a_collective_broken_by_a_dead_peer_is_not_reported_as_a_second_error(capsys, monkeypatch):
    """Seen in CI: rank 0's gloo call failed when rank 1 died ("remote worker crashing"), and both
    printed `error:`; only the process that failed says why."""
    from lora_studio import cli_train
    from lora_studio.engine.errors import Failure

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    broken = Failure("RuntimeError: [gloo] Connection closed by peer [127.0.0.1]:1234", "bug",
                     "... Check the logs of the remote worker crashing ...")
    monkeypatch.setattr("lora_studio.engine.train.train", lambda *a, **k: broken)
    import argparse

    p = argparse.ArgumentParser()
    cli_train.add_train_flags(p)
    a = p.parse_args(["--out", "x"])
    a.resume, a.nproc = None, None
    from lora_studio.config import RunConfig

    monkeypatch.setattr(cli_train, "config_from_args", lambda a: RunConfig())  # the demo: a local model
    assert cli_train.cmd_train(a) == 1
    err = capsys.readouterr().err
    assert "error:" not in err and "another process failed" in err
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr("lora_studio.engine.train.train", lambda *a, **k: Failure("ValueError: bad", "bug", "tb"))
    assert cli_train.cmd_train(a) == 1
    assert "error: process 1: ValueError: bad" in capsys.readouterr().err


@slow
def test_gpt2_fused_slices_train_the_same_under_ddp_and_fsdp2(tmp_path, folders):
    """q and v inside GPT-2's fused c_attn (Conv1D, per-slice LoRA) under both wrappers."""
    from lora_studio.engine.train import train

    _, data = folders
    folder = tiny.model_folder(tmp_path / "gpt2", "gpt2")
    cfg_file = folder / "config.json"  # GPT-2's own dropout (0.1) would draw per-process masks
    cfg_json = json.loads(cfg_file.read_text())
    cfg_json.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    cfg_file.write_text(json.dumps(cfg_json))
    gpt2 = (folder, data)
    one = _config(tmp_path, gpt2, "one", 8)
    assert not train(one).stopped
    ref = _adapter(one.out)
    assert any(B.abs().max() > 1e-3 for _, B in ref.values())
    for mode in ("ddp", "fsdp"):
        cfg = _config(tmp_path, gpt2, mode, 4, mode=mode)
        _spawn(tmp_path, cfg)
        got = _adapter(cfg.out)
        assert got.keys() == ref.keys()
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-5)


@slow
def test_kill_9_of_one_rank_then_resume_on_one_process_continues_the_curve(tmp_path, folders):
    """torchrun ends the other rank when one is killed; the run then resumes from its last complete
    checkpoint (on any number of processes) and the curve is the uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from lora_studio.engine.train import train

    one = _single(tmp_path, folders, steps=12)
    cfg = _config(tmp_path, folders, "killed", 4, steps=12, mode="ddp").replace(train={"save_every": 2})
    cfg.save(tmp_path / "killed.toml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "lora_studio", "train", "--config", str(tmp_path / "killed.toml"), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = Path(cfg.out) / "checkpoints" / "step-4"
    deadline = time.time() + 300
    while not ckpt.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    rank1 = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.environ().get("RANK") == "1"]
    assert rank1, "rank 1 was not found"
    os.kill(rank1[0].pid, signal.SIGKILL)
    proc.communicate(timeout=120)  # torchrun ends rank 0 too: no hang
    assert proc.returncode != 0
    done = [s for s, _ in _losses(cfg.out)]
    assert ckpt.is_dir() and max(done) < 12  # cut short after step 4's checkpoint
    result = train(cfg, resume=cfg.out)  # one process, the run's global batch of 8
    assert not result.stopped and result.step == 12
    torch.testing.assert_close(torch.tensor([v for _, v in _losses(cfg.out)]),
                               torch.tensor([v for _, v in _losses(one)]), rtol=0, atol=1e-5)
