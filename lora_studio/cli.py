"""The command line: `lora-studio [gui|train|sweep|budget|merge|inspect|resize|try|gguf|data]` (contract in DESIGN.md).

Exit status: 0 done, 2 the user's input is wrong (one `error: …` line on stderr), 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import sys

from lora_studio.cli_data import add_data_parser, cmd_data
from lora_studio.cli_train import add_train_flags, cmd_train, print_failure
from lora_studio.core import names
from lora_studio.engine.errors import UserError


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other bad input
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from lora_studio import __version__

    p = Parser(prog="lora-studio", description="LoRA Studio: low-rank adaptation of transformer models.")
    p.add_argument("--version", action="version", version=f"lora-studio {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=Parser)

    g = sub.add_parser("gui", help="open the workbench (the default with no command)")
    g.add_argument("--config", help="a run configuration (TOML) to open")

    t = sub.add_parser("train", help="train a LoRA adapter (no model and no data: the demo)")
    t.add_argument("--resume", metavar="DIR", help="continue a stopped or killed run from its newest checkpoint")
    add_train_flags(t)
    t.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (one per GPU) under torchrun")

    w = sub.add_parser("sweep", help="the LoRA paper's rank study: one run per rank (x targets set x seed) + sweep.json")
    add_train_flags(w)
    w.add_argument("--ranks", required=True, help="ranks to train, e.g. 1,2,4,8,64")
    w.add_argument("--seeds", type=int, default=1, help="runs per point with seeds seed, seed+1, … (default 1)")
    w.add_argument("--targets-sets", help='targets sets separated by ";", e.g. "q;v;q,v;q,k,v,o" (default: --targets)')
    w.add_argument("--fixed-budget", action="store_true",
                   help="one rank per targets set so that each trains as many parameters as the first set at each --ranks")

    add_budget_parser(sub)
    add_export_parsers(sub)

    i = sub.add_parser("inspect", help="singular-value spectra of the learned update")
    i.add_argument("run_dir")
    i.add_argument("--compare", metavar="OTHER_RUN_DIR", help="subspace similarity with another adapter")
    i.add_argument("--amplification", action="store_true",
                   help="the paper's amplification factor ||dW|| / ||U^T W0 V^T|| (loads the base model)")
    i.add_argument("--json", action="store_true")

    r = sub.add_parser("resize", help="truncate the adapter's ranks by SVD")
    r.add_argument("run_dir")
    size = r.add_mutually_exclusive_group(required=True)
    size.add_argument("--rank", type=int)
    size.add_argument("--energy", type=float, help="keep the smallest rank holding this energy fraction, e.g. 0.9")
    r.add_argument("--out", required=True)
    r.add_argument("--overwrite", action="store_true", help="replace what is in --out")
    r.add_argument("--json", action="store_true", help="print the full report as JSON")

    y = sub.add_parser("try", help="base vs adapted answer for one input (label + probabilities, or generation)")
    y.add_argument("run_dir")
    y.add_argument("--text", required=True, help="the input text")
    y.add_argument("--base", action="store_true", help="also print the base model's answer")
    y.add_argument("--max-new-tokens", type=int, default=40, help="causal LMs: tokens to generate (default 40)")
    form = y.add_mutually_exclusive_group()
    form.add_argument("--chat", action="store_true", default=None,
                      help="causal LMs: wrap the text in the chat template (the default for a chat run)")
    form.add_argument("--raw", action="store_true", help="causal LMs: the text as it is, even for a chat run")
    y.add_argument("--device", default=None, help="cpu | cuda | … (default: the run's)")
    y.add_argument("--json", action="store_true")
    add_data_parser(sub)
    return p


def add_budget_parser(sub):
    """`lora-studio budget`: trainable parameters and memory, from the config alone."""
    b = sub.add_parser("budget", help="trainable parameters and memory, from the config alone")
    b.add_argument("--model", help="model folder or hub id (default: the packaged MiniLM)")
    b.add_argument("--task", choices=names.TASKS,
                   help="preference: each example is a pair, two sequences")
    b.add_argument("--targets", default="q,v")
    b.add_argument("--layers")
    b.add_argument("--rank", type=int, default=8, help="(default 8)")
    b.add_argument("--alpha", type=float, help="(default 2 x rank)")
    b.add_argument("--rslora", action="store_true")
    b.add_argument("--precision", choices=[p for p in names.PRECISIONS if p != "auto"],
                   help="compute precision (default: bf16 with --quantize or a GPU table, the precision such runs "
                        "compute in; else fp32)")
    b.add_argument("--batch-size", type=int, default=8, help="(default 8)")
    b.add_argument("--max-length", type=int, default=512, help="(default 512)")
    b.add_argument("--trust-remote-code", action="store_true")
    b.add_argument("--quantize", choices=names.QUANTIZE, default="none", help="base precision")
    b.add_argument("--optimizer", choices=names.OPTIMIZERS, default="adamw")
    b.add_argument("--gradient-checkpointing", action="store_true")
    b.add_argument("--gpu-memory", type=float, metavar="GB",
                   help="GPU memory in GiB (default: the CUDA GPU's, when there is one): prints the will-it-fit table")
    b.add_argument("--gpus", type=int, default=1, help="processes (GPUs) of a torchrun run: per-GPU memory "
                   "for DDP and FSDP2 (default 1)")
    b.add_argument("--json", action="store_true")


def add_export_parsers(sub):
    """`lora-studio merge` and `lora-studio gguf`: a model folder, a GGUF file."""
    m = sub.add_parser("merge", help="merge an adapter into its base model and export a model folder")
    m.add_argument("run_dir")
    m.add_argument("--out", required=True)
    m.add_argument("--model", help="base model (default: the one recorded in the run)")
    m.add_argument("--dtype", default="float32", choices=names.MERGE_DTYPES, help="(default float32)")
    m.add_argument("--adapter-only", action="store_true",
                   help="write only the PEFT adapter (its newest weights) to --out, no merge")
    m.add_argument("--overwrite", action="store_true", help="replace what is in --out")
    m.add_argument("--allow-pickle", action="store_true")
    m.add_argument("--trust-remote-code", action="store_true")

    gg = sub.add_parser("gguf", help="export a GGUF file for llama.cpp / Ollama (merged, or the adapter alone)")
    gg.add_argument("run_dir")
    gg.add_argument("--out", required=True, metavar="FILE.gguf")
    gg.add_argument("--adapter-only", action="store_true", help="llama.cpp's LoRA adapter file (apply with --lora)")
    gg.add_argument("--type", default=None, choices=names.GGUF_TYPES,
                    help="tensor type (default: f16 merged, f32 adapter)")
    gg.add_argument("--llama-cpp", metavar="DIR", help="llama.cpp checkout or llama-cpp-python sdist (its converter)")
    gg.add_argument("--model", help="base model (default: the one recorded in the run)")
    gg.add_argument("--no-verify", action="store_true", help="skip the check in llama.cpp")
    gg.add_argument("--base-gguf", metavar="FILE", help="with --adapter-only: verify the adapter on this GGUF of the "
                    "base in llama.cpp (logits, and a chat answer through its template)")
    gg.add_argument("--overwrite", action="store_true")


# -- budget, merge, inspect, resize ----------------------------------------------------------
def cmd_budget(a) -> int:
    from lora_studio.engine.budget import estimate, human_bytes, human_count
    from lora_studio.config import LoraConfig
    from dataclasses import asdict

    from lora_studio.engine.fit import format_table, gpu_memory_bytes, per_device, will_it_fit
    from lora_studio.engine.models import demo_model_path, infer_task, skeleton

    if a.batch_size < 1 or a.max_length < 1:
        raise UserError(f"--batch-size and --max-length must be at least 1, got {a.batch_size} and {a.max_length}")
    ref = a.model or demo_model_path()
    task = a.task or (infer_task(ref, a.trust_remote_code) if a.model else "classification")
    model = skeleton(ref, task, num_labels=_demo_labels() if not a.model and task == "classification" else 2,
                     trust_remote_code=a.trust_remote_code)
    lora = LoraConfig(targets=a.targets, rank=a.rank, alpha=2 * a.rank if a.alpha is None else a.alpha,
                      layers=a.layers or "all", rslora=a.rslora)
    lora.validate()
    spec = lora.to_spec(task)
    if a.gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {a.gpus}")
    if a.gpu_memory is not None and not a.gpu_memory > 0:
        raise UserError(f"--gpu-memory must be > 0 GiB, got {a.gpu_memory}")
    gpu = gpu_memory_bytes(a.gpu_memory)
    # one basis for every figure: a quantized base or a GPU table means a GPU run, in half precision
    a.precision = a.precision or ("bf16" if a.quantize != "none" or gpu is not None or a.gpus > 1 else "fp32")
    from lora_studio.engine.budget import sequences_per_example

    seqs = sequences_per_example(task)
    b = estimate(model, spec, a.precision, a.batch_size * seqs, a.max_length, a.gradient_checkpointing,
                 a.quantize, a.optimizer)
    fit = None
    per_gpu = per_device(model, b.memory_lora, a.gpus, a.precision if a.precision != "fp32" else "bf16") \
        if a.gpus > 1 else []
    if gpu is not None:
        half = a.precision if a.precision != "fp32" else "bf16"  # what a GPU run computes in
        fit = will_it_fit(model, spec, gpu, a.batch_size, a.max_length, half, a.optimizer, seqs)
    if a.json:
        print(json.dumps({**b.to_json(), "quantize": a.quantize, "optimizer": a.optimizer,
                          "fit": fit.to_json() if fit else None,
                          "per_gpu": [asdict(d) for d in per_gpu] or None}, indent=2))
        return 0
    print(f"{ref} ({model.config.model_type}, {task})")
    print(f"trainable {b.trainable_params:,} of {b.total_params:,} parameters ({b.trainable_percent:.3f}%); "
          f"adapter file {human_bytes(b.adapter_file_bytes)}")
    if b.head_params:
        print(f"  of which task head {b.head_params:,}")
    for t, n in b.by_target.items():
        print(f"  {t:>5}: {n:,}")
    print(f"{len(b.modules)} adapted modules, e.g. {b.modules[0].name} {b.modules[0].shape[0]}x{b.modules[0].shape[1]}"
          f" r={b.modules[0].rank}: {b.modules[0].params:,}")
    ml, mf = b.memory_lora, b.memory_full
    print(f"training memory at {a.precision}, batch {a.batch_size} x {a.max_length} (estimate): "
          f"LoRA {human_bytes(ml.total)} vs full fine-tuning {human_bytes(mf.total)} "
          f"(model states {human_bytes(ml.total - ml.activations)} vs {human_bytes(mf.total - mf.activations)}, "
          f"activations {human_bytes(ml.activations)}); {human_count(b.trainable_params)} trainable")
    if a.quantize != "none" or a.optimizer != "adamw":
        print(f"  with a {a.quantize} base and {a.optimizer}: weights {human_bytes(ml.weights)}, "
              f"optimizer state {human_bytes(ml.optimizer)}")
    for d in per_gpu:
        print(f"  per GPU with {d.mode.upper()} on {d.gpus} GPUs: {human_bytes(d.total)} (weights "
              f"{human_bytes(d.weights)}, gradients {human_bytes(d.gradients)}, optimizer {human_bytes(d.optimizer)}, "
              f"activations {human_bytes(d.activations)})")
    if fit is not None:
        print(format_table(fit))
    return 0


def _demo_labels() -> int:
    """The demo's number of classes, as training and the GUI count them."""
    import json as _json

    from lora_studio.engine.data import demo_path

    labels = set()
    for path in demo_path("classification"):
        with open(path, encoding="utf-8") as f:
            labels |= {_json.loads(line)["label"] for line in f if line.strip()}
    return len(labels)


def cmd_merge(a) -> int:
    from lora_studio.engine.export import PROBE, export_adapter, merge_and_export

    if a.adapter_only:
        files = export_adapter(a.run_dir, a.out, overwrite=a.overwrite)
        print(f"adapter written to {a.out} ({', '.join(files)})")
        return 0

    def progress(msg, frac):
        print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)

    r = merge_and_export(a.run_dir, a.out, model=a.model, dtype=a.dtype, progress=progress,
                         allow_pickle=a.allow_pickle, trust_remote_code=a.trust_remote_code, overwrite=a.overwrite)
    print(f"merged model written to {r.path} ({r.dtype}); verified: max |logits(merged) - "
          f"logits(base + adapter)| = {r.max_abs_diff:.3g} (tolerance {r.tolerance:.3g})")
    if r.quantized_gap is not None:
        print(f"trained on a {r.quantize} base: merged into the full-precision base; max |logits(merged) - "
              f"logits({r.quantize} base + adapter)| = {r.quantized_gap:.3g} on {len(PROBE)} probe texts")
    return 0


def cmd_gguf(a) -> int:
    from lora_studio.engine import gguf

    if a.adapter_only:
        r = gguf.write_adapter_gguf(a.run_dir, a.out, type=a.type or "f32", overwrite=a.overwrite, base_model=a.model)
        if a.base_gguf and not a.no_verify:
            from lora_studio.engine.runfolder import run_info

            print("verifying the adapter on the base GGUF in llama.cpp …", file=sys.stderr, flush=True)
            gguf.verify_adapter(r, a.run_dir, a.base_gguf, a.model or run_info(a.run_dir).base_model)
    elif a.base_gguf:
        raise UserError("--base-gguf goes with --adapter-only (a merged GGUF is checked against the merged model)")
    else:
        r = gguf.export_merged_gguf(a.run_dir, a.out, type=a.type or "f16", llama_cpp=a.llama_cpp,
                                    overwrite=a.overwrite, model=a.model, verify=not a.no_verify,
                                    progress=lambda msg, frac: print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True))
    check = (f"verified in llama.cpp: {r.max_diff:.3g} <= {r.tolerance:.3g} ({r.note})" if r.verified
             else r.note or "not verified")
    print(f"GGUF written to {r.path} ({r.type}, {r.size / 2**20:.1f} MiB, {r.tensors} tensors); {check}")
    if len(r.files) > 1:
        print(f"beside it: {', '.join(r.files[1:])}")
    return 0


def cmd_inspect(a) -> int:
    from lora_studio.engine import spectra
    from lora_studio.engine.adapters import read_adapter
    from lora_studio.engine.runfolder import adapter_of

    ad = read_adapter(adapter_of(a.run_dir))
    if a.amplification:
        from lora_studio.engine.spectra import with_amplification

        result = with_amplification(a.run_dir)
    else:
        result = spectra.analyse(ad)
    other = None
    if a.compare:
        other = spectra.similarity(ad, read_adapter(adapter_of(a.compare)))
    if a.json:
        out = spectra.to_json(result)
        if other is not None:
            out["similarity"] = [{"name": k[0], "target": k[1], "phi": v.tolist()} for k, v in other.items()]
        print(json.dumps(out, indent=2))
        return 0
    print(spectra.format_table(result))
    if other is not None:
        print(f"\nsubspace similarity with {a.compare} (phi(i, j) of the paper's Eq. 4, i = j = 1 … min rank):")
        for (name, target), phi in other.items():
            k = min(phi.shape)
            diag = " ".join(f"{phi[i, i].item():.2f}" for i in range(k))
            print(f"  {name}{'[' + target + ']' if target else ''}: {diag}")
    return 0


def cmd_resize(a) -> int:
    from lora_studio.engine import spectra

    if a.rank is not None and a.rank <= 0:
        raise UserError(f"--rank must be positive, got {a.rank}")
    if a.energy is not None and not 0 < a.energy <= 1:
        raise UserError(f"--energy must be in (0, 1], got {a.energy}")
    report = spectra.resize(a.run_dir, a.out, rank=a.rank, energy=a.energy, overwrite=a.overwrite)
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = report["modules"]
    width = max(len(m["name"] + (f"[{m['target']}]" if m.get("target") else "")) for m in rows)
    print(f"{'module':<{width}}  rank  kept Frobenius")
    for m in rows:
        label = m["name"] + (f"[{m['target']}]" if m.get("target") else "")
        note = f"  ({m['note']})" if m.get("note") else ""
        print(f"{label:<{width}}  {m['rank_before']:>2}->{m['rank']:<2} {m['retained_frobenius']:>8.2%}{note}")
    print(f"parameters {report['params_before']:,} -> {report['params_after']:,}; adapter written to {report['out']}")
    return 0


def cmd_try(a) -> int:
    from lora_studio.engine.tryit import compare

    if a.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {a.max_new_tokens}")
    chat = False if a.raw else a.chat  # None: as the run was trained (chat template for a chat run)
    c = compare(a.run_dir, a.text, max_new_tokens=a.max_new_tokens, chat=chat, device=a.device)
    if a.json:
        from dataclasses import asdict

        out = asdict(c)
        if not a.base:
            out.pop("base")
        print(json.dumps(out, indent=2))
        return 0

    def show(title, o):
        if c.task == "classification":
            probs = ", ".join(f"{n} {p:.1%}" for n, p in sorted(o.probabilities, key=lambda x: -x[1])[:5])
            print(f"{title}: {o.label}  ({probs})")
        else:
            end = "" if o.stopped else "  [cut at --max-new-tokens]"
            print(f"{title}: {o.text}{end}")

    print(f"adapter: {c.source}" + ("  (through the chat template; --raw for the text as it is)" if c.chat else ""))
    if a.base:
        show("base   ", c.base)
    show("adapted" if a.base else "answer", c.adapted)
    return 0


def _cmd_sweep(a) -> int:
    from lora_studio.cli_sweep import cmd_sweep

    return cmd_sweep(a)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.command in (None, "gui"):
            from lora_studio.ui.app import main as gui_main

            return gui_main(config_path=getattr(args, "config", None))
        return {"train": cmd_train, "budget": cmd_budget, "merge": cmd_merge, "inspect": cmd_inspect,
                "resize": cmd_resize, "try": cmd_try, "gguf": cmd_gguf,
                "sweep": _cmd_sweep, "data": cmd_data}[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lora-studio inspect --json | head`
        sys.stderr.close()
        return 0
    except Exception as e:  # noqa: BLE001 - every command: one `error:` line; exit 2 for a full disk or a
        return report_failure(e, getattr(args, "out", None) or "")  # folder it cannot write, 1 for a bug


def report_failure(e: BaseException, where: str = "") -> int:
    """One `error:` line for an exception no command expected (a bug: its traceback above it)."""
    from lora_studio.engine.errors import failure_of

    return print_failure(failure_of(e, where=str(where)))


if __name__ == "__main__":
    sys.exit(main())
