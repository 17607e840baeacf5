"""`lora-studio train` (and the flags `sweep` shares): flags -> RunConfig, progress lines, exit codes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from lora_studio.core import names
from lora_studio.engine.errors import UserError

# train flags that change the math of a run: refused with --resume (the run keeps its own settings)
MATH_FLAGS = ("model", "task", "data", "validation_data", "validation_split", "format", "text_column",
              "prompt_column", "completion_column", "messages_column", "label_column", "no_chat_template",
              "targets", "layers", "rank", "alpha", "dropout", "rslora", "batch_size", "grad_accum", "lr", "schedule",
              "warmup_steps",
              "max_length", "seed", "precision", "gradient_checkpointing", "allow_pickle", "trust_remote_code",
              "config", "out", "overwrite", "quantize", "optimizer", "dora", "init", "loraplus_ratio",
              "start_from", "loss", "beta", "simpo_gamma", "packing", "demo")
# the adapter's shape: a run started --from another keeps that run's (its adapter is trained on)
ADAPTER_FLAGS = ("targets", "layers", "rank", "alpha", "dropout", "rslora", "dora", "init")


def add_train_flags(t):
    """The flags that describe a run (train and sweep share them; sweep's --overwrite: --out may be a non-sweep folder)."""
    t.add_argument("--config", help="run configuration TOML; flags override it")
    t.add_argument("--demo", nargs="?", const="classification", choices=["classification", "chat"],
                   help="a packaged demo: classification (MiniLM, the default with no model and no data) or "
                        "chat (SmolLM2-135M-Instruct learns an answer style; fetched and converted once)")
    t.add_argument("--model", help="local model folder or hub id (default: the packaged MiniLM)")
    t.add_argument("--task", choices=names.TASKS,
                   help="preference: prompt/chosen/rejected pairs, trained with --loss")
    t.add_argument("--from", dest="start_from", metavar="RUN_DIR",
                   help="start from the trained adapter of this run (e.g. an SFT run); for DPO it is the reference")
    t.add_argument("--loss", choices=names.PREFERENCE_LOSSES, help="preference loss (default dpo)")
    t.add_argument("--beta", type=float, help="preference beta (default: dpo 0.1, orpo 0.1, simpo 2.0)")
    t.add_argument("--simpo-gamma", type=float, help="SimPO's target reward margin (default 0.5)")
    t.add_argument("--data", help="training data file/folder (.jsonl .json .csv .parquet .txt, datasets folder)")
    t.add_argument("--validation-data", help="a separate validation file")
    t.add_argument("--validation-split", type=float, help="fraction held out for validation (default 0.1)")
    t.add_argument("--format", choices=names.FORMATS)
    for role in ("text", "prompt", "completion", "messages", "label"):
        t.add_argument(f"--{role}-column", help=f"the column holding the {role} (default: detected)")
    t.add_argument("--no-chat-template", action="store_true", default=None,
                   help="prompt/completion (and preference strings) as plain text, even on a model with a "
                        "chat template (default: through it, a chat run)")
    t.add_argument("--targets", help="projections to adapt, e.g. q,v or q,k,v,o,gate,up,down")
    t.add_argument("--layers", help="layers to adapt, e.g. 0-5,8 (default all)")
    t.add_argument("--rank", type=int, help="r, the rank of each update (default 8)")
    t.add_argument("--alpha", type=float, help="scaling s = alpha / r (default 16)")
    t.add_argument("--dropout", type=float, help="dropout on the adapter input (default 0)")
    t.add_argument("--rslora", action="store_true", default=None, help="scale by alpha/sqrt(r)")
    t.add_argument("--dora", action="store_true", default=None, help="DoRA: weight-decomposed update (magnitude x direction)")
    t.add_argument("--init", choices=names.INITS,
                   help="adapter init: kaiming (default), gaussian, pissa (W0's top singular vectors), olora (QR of W0)")
    t.add_argument("--loraplus-ratio", type=float, help="LoRA+: B's learning rate = X x A's (paper: 16; 1 = off)")
    steps = t.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int, help="optimizer steps (with --resume: train on to this step)")
    steps.add_argument("--epochs", type=float, help="passes over the data (default 3)")
    t.add_argument("--batch-size", type=int, help="examples per micro-batch (default 16)")
    t.add_argument("--grad-accum", type=int, help="micro-batches per step (default 1)")
    t.add_argument("--packing", action="store_true", default=None,
                   help="causal LM and preference: lay each micro-batch's examples end to end in one row (no padding; "
                        "positions restart and attention stays within each example: the same loss)")
    t.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    t.add_argument("--schedule", choices=names.SCHEDULES)
    t.add_argument("--warmup-steps", type=int)
    t.add_argument("--max-length", type=int, help="tokens; longer examples are truncated (default 256)")
    t.add_argument("--seed", type=int, help="0 .. 2^32-1 (default 42)")
    t.add_argument("--device", help=" | ".join(names.DEVICES))
    t.add_argument("--precision", choices=names.PRECISIONS)
    t.add_argument("--gradient-checkpointing", action="store_true", default=None)
    t.add_argument("--quantize", choices=names.QUANTIZE,
                   help="base precision: nf4 = 4-bit QLoRA, int8 (bitsandbytes: pip install 'lora-studio[qlora]')")
    t.add_argument("--optimizer", choices=names.OPTIMIZERS,
                   help="AdamW, or bitsandbytes' 8-bit / paged AdamW")
    t.add_argument("--eval-every", type=int, help="steps between evaluations (default 50; 0: at the end)")
    t.add_argument("--save-every", type=int, help="steps between checkpoints (default 200)")
    t.add_argument("--save-minutes", type=float, help="also checkpoint every this many minutes (default 5)")
    t.add_argument("--log-every", type=int, help="steps between metric lines (default 1)")
    t.add_argument("--sample-every", type=int, help="causal LM: steps between greedy sample answers in samples.jsonl "
                   "(default: at step 0 and each evaluation; 0 = off)")
    t.add_argument("--sample-prompts", metavar="FILE", help="sample prompts, one per line (default: the first 4 "
                   "held-out prompts)")
    t.add_argument("--allow-pickle", action="store_true", default=None, help="accept .bin/.pt weights (pickles run code)")
    t.add_argument("--trust-remote-code", action="store_true", default=None)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--out", help="run folder (a PEFT adapter folder plus run.toml, metrics.jsonl, checkpoints/)")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    t.add_argument("--distributed", choices=names.DISTRIBUTED,
                   help="with several processes: ddp replicates the model, fsdp shards the frozen base "
                        "(default auto: DDP when the model fits one device)")


# -- train ----------------------------------------------------------------------------------
def config_from_args(a) -> "RunConfig":
    from lora_studio.config import RunConfig, default_out_dir

    cfg = RunConfig.load(a.config) if a.config else RunConfig()
    d = cfg.to_dict()
    model, lora, data, train = d["model"], d["lora"], d["data"], d["train"]

    def put(section, key, value):
        if value is not None:
            section[key] = value

    put(model, "path", a.model)
    put(model, "allow_pickle", a.allow_pickle)
    put(model, "trust_remote_code", a.trust_remote_code)
    put(model, "quantize", a.quantize)
    if a.task:
        model["task"] = a.task
    elif a.model:
        from lora_studio.engine.models import infer_task

        model["task"] = infer_task(a.model, bool(model["trust_remote_code"]))
    if a.start_from:
        start_from(a, model, lora)
    put(data, "path", a.data)
    put(data, "validation_path", a.validation_data)
    put(data, "validation_split", a.validation_split)
    put(data, "format", a.format)
    put(data, "max_length", a.max_length)
    put(data, "chat_template", False if a.no_chat_template else None)
    for role in ("text", "prompt", "completion", "messages", "label"):
        put(data, f"{role}_column", getattr(a, f"{role}_column"))
    put(lora, "targets", a.targets.split(",") if a.targets is not None else None)
    put(lora, "layers", a.layers)
    put(lora, "rank", a.rank)
    put(lora, "alpha", a.alpha)
    put(lora, "dropout", a.dropout)
    put(lora, "rslora", a.rslora)
    put(lora, "dora", a.dora)
    put(lora, "init", a.init)
    if a.max_steps is not None:
        if a.max_steps < 1:
            raise UserError(f"--max-steps must be at least 1, got {a.max_steps} (or give --epochs)")
        train["max_steps"] = a.max_steps
    if a.epochs is not None:
        train["epochs"], train["max_steps"] = a.epochs, 0
    for key in ("batch_size", "grad_accum", "lr", "schedule", "warmup_steps", "seed", "device", "precision",
                "gradient_checkpointing", "eval_every", "save_every", "save_minutes", "log_every", "optimizer", "loraplus_ratio",
                "distributed", "loss", "beta", "simpo_gamma", "packing", "sample_every"):
        put(train, key, getattr(a, key))
    if a.sample_prompts:
        if not Path(a.sample_prompts).is_file():
            raise UserError(f"--sample-prompts {a.sample_prompts}: no such file (one prompt per line)")
        train["sample_prompts"] = str(Path(a.sample_prompts).expanduser().resolve())
    if a.out is not None and not a.out.strip():
        raise UserError("--out is empty: give the run folder to write, e.g. --out runs/my-run")
    d["out"] = a.out or d.get("out") or default_out_dir()
    if getattr(a, "demo", None) == "chat":
        d = chat_demo(a, d)
    return RunConfig.from_dict(d)


def start_from(a, model: dict, lora: dict):
    """--from RUN_DIR: the new run trains on that run's adapter, so it takes its base model and
    adapter settings; a flag that would change the adapter's shape is refused by name."""
    run, src = start_run(a.start_from)
    given = [f"--{k.replace('_', '-')}" for k in ADAPTER_FLAGS if getattr(a, k, None) not in (None, False)]
    if given:
        raise UserError(f"--from trains on the adapter of {run}, with its settings; {', '.join(given)} would "
                        "change its shape: drop the flag(s)")
    lora.update(src.to_dict()["lora"], init="kaiming")  # a PiSSA/OLoRA run is saved as a plain LoRA on the base
    if not a.model:
        model["path"] = src.model.path
    model["start_from"] = str(run)
    if not a.task:
        model["task"] = "causal-lm"


def start_run(path) -> tuple[Path, "RunConfig"]:
    """(folder, its RunConfig) of a finished causal-LM or preference run that a new run may start
    from (--from, the GUI's Start from); a UserError says why another folder cannot."""
    from lora_studio.config import RunConfig
    from lora_studio.engine.runfolder import RUN_FILE

    run = Path(path).expanduser().resolve()
    if not (run / RUN_FILE).is_file() or not (run / "adapter_model.safetensors").is_file():
        raise UserError(f"{path} is not a finished run folder (it needs {RUN_FILE} and "
                        "adapter_model.safetensors): give the folder of a trained run")
    src = RunConfig.load(run / RUN_FILE)
    if src.model.task == "classification":
        raise UserError(f"{run} is a classification run: a preference or causal-LM run starts from a causal LM's")
    return run, src


# flags the chat demo has its own value for: given on the command line, the flag wins
_DEMO_FLAGS = {"targets": "lora.targets", "rank": "lora.rank", "alpha": "lora.alpha", "max_length": "data.max_length",
               "max_steps": "train.max_steps", "epochs": "train.max_steps", "batch_size": "train.batch_size",
               "lr": "train.lr", "warmup_steps": "train.warmup_steps", "eval_every": "train.eval_every",
               "save_every": "train.save_every"}


def chat_demo(a, d: dict) -> dict:
    from lora_studio.engine.demo_chat import demo_config

    clash = [f"--{k.replace('_', '-')}" for k in ("model", "data", "validation_data", "task", "format", "config")
             if getattr(a, k, None)]
    if clash:
        raise UserError(f"--demo chat brings its own model and data: drop {', '.join(clash)}")
    return demo_config(d, {v for k, v in _DEMO_FLAGS.items() if getattr(a, k, None) is not None})


class Progress:
    """One self-rewriting line on stderr: step, bar, loss, tokens/s, ETA (plain lines when not a tty)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, ev):
        from lora_studio.engine import events as E

        if isinstance(ev, E.Status):
            self.line(f"{ev.message} …", final=True)
        elif isinstance(ev, E.Evaluating):
            if not self.quiet and ev.total:
                self.line(f"evaluating at step {ev.step}: {ev.done}/{ev.total}")
        elif isinstance(ev, E.Started):
            resumed = f", resumed at step {ev.start_step}" if ev.start_step else ""
            self.line(f"training {ev.trainable_params:,} of {ev.total_params:,} parameters "
                      f"({100 * ev.trainable_params / max(ev.total_params, 1):.2f}%) on {ev.device_name}, "
                      f"{ev.precision}, {ev.total_steps} steps{resumed}", final=True)
            self.line(f"run folder: {ev.out}", final=True)
            for note in ev.notes or []:
                self.line(f"note: {note}", final=True)
        elif isinstance(ev, E.Step):
            now = time.monotonic()
            if self.quiet and ev.step % 10 and ev.step != ev.total_steps:
                return
            if not self.quiet and now - self.last < 0.1 and ev.step != ev.total_steps:
                return
            self.last = now
            width = 16
            done = int(width * ev.step / max(ev.total_steps, 1))
            eta = time.strftime("%M:%S", time.gmtime(ev.eta)) if ev.eta < 3600 else f"{ev.eta / 3600:.1f}h"
            self.line(f"{ev.step}/{ev.total_steps} [{'#' * done}{'.' * (width - done)}] loss {ev.loss:.4f} "
                      f"lr {ev.lr:.1e} {ev.tokens_per_s:,.0f} tok/s ETA {eta}", final=self.quiet)
        elif isinstance(ev, E.Eval):
            acc = f", accuracy {ev.accuracy:.1%}" if ev.accuracy is not None else ""
            self.line(f"eval at step {ev.step}: loss {ev.eval_loss:.4f}{acc}", final=True)
        elif isinstance(ev, E.Checkpoint):
            if self.quiet:
                self.line(f"checkpoint {ev.path}", final=True)
        elif isinstance(ev, E.Finished):
            if ev.stopped:
                self.line(f"stopped at step {ev.step}; continue with: lora-studio train --resume {ev.out}", final=True)
            else:
                self.line(f"done at step {ev.step}: adapter in {ev.out}", final=True)

    def line(self, text: str, final: bool = False):
        if self.quiet:
            print(text, file=sys.stderr, flush=True)
            return
        cols = max(40, os.get_terminal_size(sys.stderr.fileno()).columns - 1)
        if final and len(text) > cols:  # a line that stays may wrap; only the rewritten one must fit
            sys.stderr.write("\r" + " " * cols + "\r" + text + "\n")
        else:
            sys.stderr.write("\r" + text[:cols].ljust(cols) + ("\n" if final else ""))
        sys.stderr.flush()


def resume_config(a):
    """The run's own RunConfig, extended by --max-steps/--epochs; any other flag that would change
    the math is refused by name."""
    from lora_studio.config import RunConfig
    from lora_studio.engine.runfolder import RUN_FILE

    run = Path(a.resume)
    if not (run / RUN_FILE).is_file():
        raise UserError(f"{run} is not a run folder (no {RUN_FILE}); give the --out folder of a run")
    given = [f"--{k.replace('_', '-')}" for k in MATH_FLAGS if getattr(a, k, None) not in (None, False)]
    if given:
        raise UserError(f"--resume continues a run with its own settings; {', '.join(given)} would change it: "
                        "drop the flag, or start a new run (--config " + str(run / RUN_FILE) + " --out NEW_DIR)")
    config = RunConfig.load(run / RUN_FILE)
    if a.max_steps is not None:
        if a.max_steps < 1:
            raise UserError(f"--max-steps must be at least 1, got {a.max_steps}")
        config = config.replace(train={"max_steps": a.max_steps})
    elif a.epochs is not None:
        config = config.replace(train={"epochs": a.epochs, "max_steps": 0})
    changes = {k: getattr(a, k) for k in ("eval_every", "save_every", "save_minutes", "log_every", "device")
               if getattr(a, k, None) is not None}
    return config.replace(train=changes) if changes else config


def check_quantize(config):
    """A quantized base this machine cannot train on is refused before anything starts (one line);
    one it can, slowly (the CPU), gets a note."""
    from lora_studio.engine.quantize import preflight

    error, warning = preflight(config.model.quantize, config.train.device)
    if error:
        raise UserError(error)
    if warning:
        print(f"note: {warning}", file=sys.stderr)


_PEER = ("remote worker", "closed by peer", "reset by peer", "connection closed", "broken pipe",
         "communicator was aborted", "ncclremoteerror", "socket timeout", "recvbytes", "sendbytes")


def _peer_failed(result) -> bool:
    """A collective that failed because a peer process died (gloo/nccl say so in their message)."""
    text = f"{result.message}\n{result.detail}".lower()
    return any(k in text for k in _PEER)


def cmd_train(a) -> int:
    from lora_studio.engine.events import Control, Failed
    from lora_studio.engine.train import train

    if getattr(a, "nproc", None) is not None:
        return launch(a)
    config = resume_config(a) if a.resume else config_from_args(a)
    check_quantize(config)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # a hub model not cached yet: download it with progress
        from lora_studio.cli_hub import fetch

        fetch(config.model.path, allow_pickle=config.model.allow_pickle)
    control = Control()
    hits = []
    # under torchrun a Ctrl-C reaches each process twice (from the terminal and from torchrun):
    # a second one within a few seconds is the same Ctrl-C
    echo = 5.0 if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0.0

    def on_sigint(signum, frame):
        if hits and time.monotonic() - hits[0] < echo:
            return
        hits.append(time.monotonic())
        if len(hits) > 1:
            sys.stderr.write("\ninterrupted again: exiting without saving\n")
            os._exit(130)
        sys.stderr.write("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort) …\n")
        control.stop()

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = train(config, Progress(a.quiet), control, resume=a.resume, overwrite=a.overwrite)
    finally:
        signal.signal(signal.SIGINT, old)
    if isinstance(result, Failed):
        rank = int(os.environ.get("RANK", "0"))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and result.kind == "bug" and _peer_failed(result):
            # the collective broke because another process failed: that process says why, once
            print(f"process {rank}: stopped because another process failed (its error is above or below)",
                  file=sys.stderr)
            return 1
        if rank:  # under torchrun: say which process failed
            result.message = f"process {rank}: {result.message}"
        return print_failure(result)
    if getattr(a, "demo", None) == "chat" and not result.stopped:
        from lora_studio.engine.demo_chat import evaluate, metric_lines

        print("scoring base and adapted answers on held-out prompts …", file=sys.stderr, flush=True)
        for line in metric_lines(evaluate(result.out)):
            print(line, flush=True)
        print(f"see them: lora-studio try {result.out} --text \"What is the capital of Peru?\" --base", flush=True)
    return 130 if result.stopped else 0


def launch(a) -> int:
    """`train --nproc N …`: the same command under torchrun on this machine, N processes."""
    import subprocess

    from lora_studio.engine.distributed import launched

    if a.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {a.nproc}")
    if launched():
        raise UserError("--nproc starts torchrun itself: under torchrun leave it out")
    argv, skip = [], False
    for arg in a.argv:  # the same arguments without --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    if getattr(a, "model", None):  # downloaded once here, not by N processes at once
        from lora_studio.cli_hub import fetch

        fetch(a.model, allow_pickle=bool(getattr(a, "allow_pickle", False)))
    from lora_studio.launch import torchrun_options

    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_options(a.nproc), "-m", "lora_studio", *argv]
    print("starting: " + " ".join(cmd[1:]), file=sys.stderr)
    interrupted = []
    # Ctrl-C reaches torchrun and its processes too: they stop and save; this one waits for them
    old = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(1))
    try:
        rc = subprocess.call(cmd)
    finally:
        signal.signal(signal.SIGINT, old)
    return 130 if interrupted else rc


def print_failure(f) -> int:
    """A Failure on the command line: one `error:` line (a bug: its traceback above it); its exit code."""
    if f.kind == "bug":
        sys.stderr.write(f.detail)
        print(f"error: {f.message} (a bug: please report it)", file=sys.stderr)
    else:
        print(f"error: {f.message}", file=sys.stderr)
    return f.exit_code
