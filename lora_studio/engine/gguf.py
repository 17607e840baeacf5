"""GGUF export for llama.cpp / Ollama / LM Studio: the adapter alone, or the merged model; verified.

Adapter-only (`write_adapter_gguf`): llama.cpp's LoRA layout, written with the `gguf` package:
`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and per adapted matrix
`<gguf name>.weight.lora_a` (r x in) and `.lora_b` (out x r), in the base tensor's own layout.
llama.cpp computes ΔW = (alpha / r) · B A with one alpha for the whole file and r read from the
tensor, so every other scaling (rsLoRA, alpha_pattern, resized ranks, fused slices written as one
block LoRA of rank n·r) is folded into B here: B_file = B · s · R / alpha_file, exact.
llama.cpp's converter permutes the rows of q and k of llama-family models for its rope kernel
(the two halves of each head interleaved); B gets the same row permutation, so B_file A == the
permuted ΔW.

Merged (`export_merged_gguf`): merge to a temporary HF folder (export.merge_and_export, verified),
then llama.cpp's own `convert_hf_to_gguf.py` as a subprocess (the tokenizer conversion lives there),
checked for a chat template and stop token, verified in llama.cpp (xllamacpp) against the HF model
by next-token log-probabilities (`check.py`), and renamed into place with an Ollama Modelfile and a
model card beside it.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora_studio.core.names import GGUF_TYPES as TYPES
from lora_studio.engine import runfolder
from lora_studio.engine.errors import UserError
from lora_studio.engine.modelfile import modelfile_text

INSTALL = "pip install 'lora-studio[gguf]'"
# HF architecture -> (gguf architecture name, q/k rows permuted by llama.cpp's converter)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lora-studio"
CONVERTER = "convert_hf_to_gguf.py"


def require_gguf():
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError(f"GGUF export needs the gguf package: {INSTALL}") from None


@dataclass
class GGUFResult:
    path: str
    type: str
    size: int  # bytes
    tensors: int
    verified: bool | None = None  # None: not checked (say why in `note`)
    max_diff: float | None = None  # max |log p(gguf) - log p(hf)| over the probes' top tokens
    tolerance: float | None = None
    note: str = ""
    files: list[str] = field(default_factory=list)


# -- adapter-only -------------------------------------------------------------------------------
def rope_rows(rows: int, n_head: int) -> torch.Tensor:
    """Row order of llama.cpp's q/k layout: within each head, the halves (x0…x_{d/2-1} | x_{d/2}…)
    interleaved (x0, x_{d/2}, x1, …). Index tensor p with W_gguf = W_hf[p]."""
    d = rows // n_head
    return torch.arange(rows).view(n_head, 2, d // 2).transpose(1, 2).reshape(rows)


def base_config(base_ref: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base_ref, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any failure here means: we cannot see the base
        raise UserError(f"cannot read the base model's config.json from {base_ref!r} ({type(e).__name__}); "
                        "the adapter GGUF must match the base's layout") from None


def adapter_tensors(adapter, config) -> tuple[str, float, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(gguf architecture, alpha_file, {gguf tensor name: (A, B_file)}) with
    (alpha_file / R) · B_file · A == s · ΔW in llama.cpp's layout of the base tensor."""
    import gguf

    archs = list(getattr(config, "architectures", None) or [])
    hf_arch = archs[0] if archs else ""
    from lora_studio.engine.families import FAMILIES, family_of

    fam = family_of(config)  # the llama.cpp architecture of a causal LM's family (engine/families.py)
    if fam.gguf is None or not hf_arch.endswith(("ForCausalLM", "LMHeadModel")):
        raise UserError(f"adapter-only GGUF is not supported for {hf_arch or 'this model'} (supported: "
                        f"{', '.join(sorted(t for t, f in FAMILIES.items() if f.gguf))} causal LMs); "
                        "export the merged GGUF instead")
    if adapter.heads:
        raise UserError("this adapter trains whole modules (e.g. a classifier head), which a llama.cpp LoRA "
                        "cannot hold: export the merged GGUF instead")
    name, permuted = fam.gguf
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == name)
    n_layer = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
    names = gguf.get_tensor_name_map(arch, n_layer)
    n_head = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 1)
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    alpha_file = float(adapter.config.get("lora_alpha") or 8)
    out = {}
    for mod_name, m in adapter.modules.items():
        gname = names.get_name(mod_name + ".weight", try_suffixes=(".weight",))
        if gname is None:
            raise UserError(f"llama.cpp has no tensor for {mod_name}: export the merged GGUF instead")
        A, B = m.A.to(torch.float64), m.B.to(torch.float64)  # (R, in), (out, R)
        R = A.shape[0]
        factor = m.scaling * R / alpha_file
        B = B if factor == 1.0 else B * factor
        if permuted and gname.endswith(("attn_q.weight", "attn_k.weight")):
            heads = n_head if gname.endswith("attn_q.weight") else n_kv
            B = B[rope_rows(B.shape[0], heads)]
        out[gname] = (A.float(), B.float())
    return name, alpha_file, out


def write_adapter_gguf(run_dir, out, type: str = "f32", overwrite: bool = False, base_model: str | None = None,
                       card: bool = True) -> GGUFResult:
    """Write the adapter of `run_dir` as a llama.cpp LoRA GGUF at `out` (temp file, then rename)."""
    require_gguf()
    import gguf
    import numpy as np

    if type not in ("f32", "f16"):
        raise UserError(f"--type {type} is for merged files; an adapter GGUF is f32 or f16")
    out = check_out(out, overwrite, run_dir)
    from lora_studio.engine.export import check_trained

    adapter = check_trained(runfolder.adapter_of(run_dir))  # the AdapterFile, read once
    if any(m.magnitude is not None for m in adapter.modules.values()):
        raise UserError("a DoRA adapter cannot be written as a llama.cpp LoRA GGUF (llama.cpp has no magnitude "
                        f"vector): export the merged model instead (lora-studio gguf {run_dir} --out FILE.gguf)")
    info = runfolder.run_info(run_dir)
    base_ref, task = base_model or info.base_model, info.task
    arch, alpha, tensors = adapter_tensors(adapter, base_config(base_ref, info.trust_remote_code))
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_name(f"LoRA of {Path(base_ref).name or base_ref}")
        dt = np.float16 if type == "f16" else np.float32
        for name, (A, B) in tensors.items():
            w.add_tensor(name + ".lora_a", A.numpy().astype(dt))
            w.add_tensor(name + ".lora_b", B.numpy().astype(dt))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    files = [out.name]
    if card:
        from lora_studio.engine.models import load_tokenizer

        try:
            tok = load_tokenizer(base_ref)
        except Exception:  # noqa: BLE001 - no tokenizer to read: a Modelfile without template and stops
            tok = None
        files += beside(out, run_dir, base_ref, task, overwrite, modelfile=modelfile_text(base_ref, [], tok, out.name),
                        note="apply on a GGUF of the base model (llama.cpp: --lora FILE)")
    return GGUFResult(str(out), type, out.stat().st_size, 2 * len(tensors), None, None, None,
                      "adapter GGUF: load it on a GGUF of the base model (llama.cpp --lora)", files)


def verify_adapter(res: GGUFResult, run_dir, base_gguf, base_ref: str) -> GGUFResult:
    """The adapter GGUF applied on `base_gguf` in llama.cpp, against HF + the adapter: next-token
    log-probabilities judged against what the base GGUF alone costs against the HF base, then a
    greedy chat answers through the GGUF's own template (chat models)."""
    from lora_studio.engine import gguf_check as C
    from lora_studio.engine.adapters import load_adapter
    from lora_studio.engine.lora import adapters_disabled
    from lora_studio.engine.models import load_model, load_tokenizer

    if not Path(base_gguf).is_file():
        raise UserError(f"--base-gguf {base_gguf}: no such file (a GGUF of the base model)")
    tok = load_tokenizer(base_ref)
    model = load_model(base_ref, "causal-lm", dtype=torch.float32)
    load_adapter(model, runfolder.adapter_of(run_dir))  # the same adapter write_adapter_gguf wrote
    model.eval()
    prompts = C.probe_ids(tok)
    res.max_diff = C.max_diff(C.llama_logprobs(base_gguf, prompts, lora=res.path), C.hf_logprobs(model, prompts))
    with adapters_disabled(model):
        base_diff = C.max_diff(C.llama_logprobs(base_gguf, prompts), C.hf_logprobs(model, prompts))
    res.tolerance = C.base_tolerance(res.max_diff, base_diff, "f32")
    res.verified = res.max_diff <= res.tolerance
    res.note = (f"on {Path(base_gguf).name} in llama.cpp: max |log p - log p(HF + adapter)| {res.max_diff:.3g}, "
                f"the base GGUF alone vs HF {base_diff:.3g} (tolerance 1.5x that + 1e-3)")
    if not res.verified:
        raise UserError(f"the adapter on {Path(base_gguf).name} differs from HF + adapter by {res.max_diff:.3g} in "
                        f"next-token log probability, more than the base GGUF alone costs ({base_diff:.3g}): is "
                        "--base-gguf a GGUF of this run's base model?")
    if getattr(tok, "chat_template", None):
        check = C.chat_check(base_gguf, model, tok, lora=res.path)
        if not check["stops"]:
            a = C.not_stopped(check)
            raise UserError(f"on {Path(base_gguf).name} the answer to {a['prompt']!r} does not stop where HF's does "
                            f"({a['llama_cpp']!r}): the base GGUF's end-of-turn token or chat template differs from "
                            "the model's")
        res.note += C.chat_note(check, f": {Path(base_gguf).name}'s own rounding changed a close choice")
    return res


def check_out(out, overwrite: bool, run_dir=None) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".gguf":
        raise UserError(f"--out {out} should end in .gguf")
    if run_dir is not None:  # never into a run's folder (its files would be mixed with the run's)
        runfolder.check_export_target(out, run_dir, overwrite=True, what="GGUF file")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists: choose another --out or pass --overwrite")
    if out.is_dir():
        raise UserError(f"{out} is a folder: give a file name ending in .gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def beside(out: Path, run_dir, base_ref: str, task: str, overwrite: bool, modelfile: str, note: str = "",
           verification: dict | None = None) -> list[str]:
    """Model card and Ollama Modelfile next to `out`. Only a card or Modelfile that we wrote (its
    marker line) is replaced, --overwrite or not: a user's own README.md/Modelfile is kept and ours
    is then `<name>.README.md` / `<name>.Modelfile` (skipped when that too is the user's)."""
    from lora_studio.engine.adapters import atomic_write_bytes
    from lora_studio.engine.modelcard import PLOT_FILE, render
    from lora_studio.engine.runfolder import MODELFILE_MARKER, is_our_card

    folder, stem = out.parent, out.stem
    written = []
    text, png = render(run_dir, "gguf", base_ref, task, files=[out.name], verification=verification)
    text = text.replace(f"]({PLOT_FILE})", f"]({stem}.loss.png)")
    if note:
        text += f"\nUse: {note}.\n"
    modelfile = f"{MODELFILE_MARKER}\n{modelfile}"
    for name, data, marked in (("README.md", text.encode(), True), ("Modelfile", modelfile.encode(), True),
                               (f"{stem}.loss.png", png, False)):
        if data is None:
            continue
        target = folder / name
        if marked:
            if target.exists() and not is_our_card(target):
                target = folder / f"{stem}.{name}"
            if target.exists() and not is_our_card(target):
                continue  # both names are the user's
        elif target.exists() and not overwrite:
            continue
        atomic_write_bytes(target, data)
        written.append(target.name)
    return written


# -- merged: llama.cpp's converter ---------------------------------------------------------------
def find_converter(llama_cpp: str | None = None) -> Path:
    """convert_hf_to_gguf.py from a llama.cpp checkout, an unpacked or packed llama-cpp-python
    sdist (given, or in $LORA_STUDIO_LLAMA_CPP, or cached under ~/.cache/lora-studio), else a UserError saying how to get one."""
    howto = ("llama.cpp's converter (convert_hf_to_gguf.py) was not found: pass --llama-cpp DIR (a llama.cpp "
             "checkout), or run `pip download --no-deps --no-binary :all: llama-cpp-python -d DIR` and pass "
             "--llama-cpp DIR")
    llama_cpp = llama_cpp or os.environ.get("LORA_STUDIO_LLAMA_CPP")
    # a place the user named is the only one searched: a silent fallback would hide their mistake
    places = [Path(llama_cpp).expanduser()] if llama_cpp else sorted(CACHE.glob("llama.cpp-*"), reverse=True)
    for place in places:
        for cand in (place / CONVERTER, place / "vendor" / "llama.cpp" / CONVERTER):
            if cand.is_file():
                return cand
        tars = [place] if place.is_file() else sorted(place.glob("llama_cpp_python-*.tar.gz"), reverse=True) \
            if place.is_dir() else []
        for tar in tars:
            if tar.name.endswith(".tar.gz"):
                return unpack_converter(tar)
    if llama_cpp:
        raise UserError(f"{llama_cpp} holds no {CONVERTER}. " + howto)
    raise UserError(howto)


def unpack_converter(tar_path: Path) -> Path:
    """Extract convert_hf_to_gguf.py, its conversion/ package and gguf-py from a llama-cpp-python
    sdist into ~/.cache/lora-studio/llama.cpp-<version>/ (once)."""
    version = tar_path.name[len("llama_cpp_python-"):-len(".tar.gz")]
    dest = CACHE / f"llama.cpp-{version}"
    if (dest / CONVERTER).is_file():
        return dest / CONVERTER
    tmp = CACHE / f".llama.cpp-{version}.partial-{os.getpid()}"
    keep = (CONVERTER, "conversion/", "gguf-py/", "LICENSE")
    try:
        with tarfile.open(tar_path) as tf:
            for member in tf.getmembers():
                parts = member.name.split("/vendor/llama.cpp/", 1)
                if len(parts) != 2 or not parts[1].startswith(keep) or not (member.isfile() or member.isdir()):
                    continue
                member.name = parts[1]
                tf.extract(member, tmp, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{tar_path} is not a readable llama-cpp-python source archive ({e})") from None
    if not (tmp / CONVERTER).is_file():
        raise UserError(f"{tar_path} holds no vendor/llama.cpp/{CONVERTER}")
    os.replace(tmp, dest)
    return dest / CONVERTER


def convert(hf_dir: Path, out: Path, type: str, converter: Path, timeout: float = 3600):
    import subprocess
    import sys

    cmd = [sys.executable, str(converter), str(hf_dir), "--outfile", str(out), "--outtype", type]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"llama.cpp's converter did not finish in {timeout:.0f} s") from None
    if p.returncode != 0 or not out.is_file():
        reason = converter_reason(p.stderr + "\n" + p.stdout)
        if "No module named" in reason:
            reason += f" (llama.cpp's converter needs it: pip install it, or {INSTALL})"
        raise UserError(f"llama.cpp's converter failed on {hf_dir.name}: {reason}")


def converter_reason(log: str) -> str:
    """Why the converter failed, from its output: the last line it logged as an error (its own
    words, e.g. "cannot find tokenizer merges"), and the exception that ended it when that differs."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    if not lines:
        return "no output"
    logged = [ln for ln in lines if ln.startswith(("ERROR:", "CRITICAL:")) or " - ERROR - " in ln]
    raised = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception", "Interrupt", "Exit"))]
    parts = []
    for ln in (logged[-1:] + raised[-1:]) or lines[-1:]:
        text = ln.split(":", 2)[-1].strip() if ln.startswith(("ERROR:", "CRITICAL:")) else ln
        if text and text not in parts:
            parts.append(text)
    return "; ".join(parts)


def metadata(path) -> dict:
    """Plain-value GGUF key/values (strings, numbers; arrays left out)."""
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(str(path))
    out = {}
    for key, f in r.fields.items():
        if not f.types or f.types[0] == GGUFValueType.ARRAY:
            continue
        v = f.parts[f.data[0]]
        out[key] = bytes(v).decode("utf-8", "replace") if f.types[0] == GGUFValueType.STRING else v.tolist()[0]
    return out


def check_tokenizer(path, tokenizer) -> tuple[list[str], str | None]:
    """Problems (chat template or stop token missing or different) and the stop token's text."""
    meta = metadata(path)
    problems = []
    if getattr(tokenizer, "chat_template", None) and not meta.get("tokenizer.chat_template"):
        problems.append("the chat template did not make it into the file")
    eos = tokenizer.eos_token_id
    got = meta.get("tokenizer.ggml.eos_token_id")
    if eos is not None and got != eos:
        problems.append(f"the stop token is {got}, the model's is {eos} ({tokenizer.eos_token})")
    return problems, tokenizer.eos_token if eos is not None else None


def base_folder(base_ref: str) -> Path | None:
    """A local HF folder of the base (a hub id: its snapshot in the HF cache), or None."""
    if Path(base_ref).is_dir():
        return Path(base_ref)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base_ref, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached
        return None


def verify_merged(res: GGUFResult, gguf_path: Path, hf: Path, tok, type: str, task: str, base_ref: str,
                  converter: Path, work: Path, figures: dict, say):
    """Logits (against the type's tolerance, or against what llama.cpp's own conversion of the base
    costs), then greedy chat answers through the GGUF's own template; raises UserError on failure."""
    from lora_studio.engine import gguf_check as C
    from lora_studio.engine.models import load_model

    model = load_model(str(hf), task, dtype=torch.float32).eval() if task == "causal-lm" else None
    res.max_diff, res.tolerance, res.note = C.verify_against_hf(gguf_path, hf, tok, type, task, model=model)
    if res.max_diff is not None and res.max_diff > res.tolerance and type != "f32":
        base = base_folder(base_ref)
        if base is not None:
            say(f"measuring what llama.cpp's own {type} conversion of the base costs", 0.8)
            convert(base, work / "base.gguf", type, converter)
            prompts = C.probe_ids(tok)
            base_diff = C.max_diff(C.llama_logprobs(work / "base.gguf", prompts),
                                   C.hf_logprobs(load_model(str(base), task, dtype=torch.float32).eval(), prompts))
            res.tolerance = C.base_tolerance(res.max_diff, base_diff, type)
            figures[f"the base's own {type} GGUF vs HF (max abs log-prob diff)"] = base_diff
            res.note += f"; llama.cpp's own {type} conversion of the base differs by {base_diff:.3g} (tolerance 1.5x that + 1e-3)"
    res.verified = None if res.max_diff is None else res.max_diff <= res.tolerance
    if res.verified is False:
        raise UserError(f"the GGUF differs from the merged model by {res.max_diff:.3g} in next-token log "
                        f"probability (tolerance {res.tolerance:.3g} for {type}); not written. Try --type f32")
    if res.verified and getattr(tok, "chat_template", None):
        say("checking a chat answer in llama.cpp", 0.9)
        check = C.chat_check(gguf_path, model, tok)
        same = sum(a["hf"] == a["llama_cpp"] for a in check["answers"])
        figures["greedy chat answers, llama.cpp (GGUF template) = HF"] = f"{same} of {len(check['answers'])}"
        if not check["stops"]:
            a = C.not_stopped(check)
            raise UserError(f"in llama.cpp the GGUF does not stop where the model does (answer to {a['prompt']!r}: "
                            f"{a['llama_cpp']!r}): its end-of-turn token or chat template did not make it into the "
                            "file; not written")
        res.note += C.chat_note(check, ": rounding changed a close choice")


def export_merged_gguf(run_dir, out, type: str = "f16", llama_cpp: str | None = None, overwrite: bool = False,
                       model: str | None = None, verify: bool = True, progress=None, allow_pickle: bool = False,
                       trust_remote_code: bool = False) -> GGUFResult:
    """Merge, convert with llama.cpp's converter, check, verify in llama.cpp, write `out`. The run's
    own trust flags apply (`allow_pickle`/`trust_remote_code` may add to them)."""
    import shutil
    import tempfile

    from lora_studio.engine.export import merge_and_export
    from lora_studio.engine.models import load_tokenizer

    require_gguf()
    say = progress or (lambda msg, frac: None)
    if type not in TYPES:
        raise UserError(f"--type {type} unknown: use {', '.join(TYPES)}")
    out = check_out(out, overwrite, run_dir)
    converter = find_converter(llama_cpp)
    info = runfolder.run_info(run_dir)
    base_ref, task, trust_remote_code = model or info.base_model, info.task, trust_remote_code or info.trust_remote_code
    work = Path(tempfile.mkdtemp(prefix=".lora-studio-gguf-", dir=out.parent))
    try:
        say("merging the adapter", 0.05)
        hf = work / "merged"
        merge_and_export(run_dir, hf, model=model, dtype="float32", allow_pickle=allow_pickle,
                         trust_remote_code=trust_remote_code)
        say(f"converting with {converter}", 0.4)
        tmp = work / out.name
        convert(hf, tmp, type, converter)
        tok = load_tokenizer(str(hf), trust_remote_code)
        problems, stop = check_tokenizer(tmp, tok)
        if problems:
            raise UserError("GGUF not written: " + "; ".join(problems))
        res = GGUFResult(str(out), type, tmp.stat().st_size, len(__import__("gguf").GGUFReader(str(tmp)).tensors))
        figures = {"GGUF type": type}
        if verify:
            say("verifying in llama.cpp", 0.7)
            verify_merged(res, tmp, hf, tok, type, task, base_ref, converter, work, figures, say)
        os.replace(tmp, out)
        if res.max_diff is not None:
            figures["max abs next-token log-prob diff, llama.cpp vs HF"] = res.max_diff
        res.files = [out.name] + beside(out, run_dir, base_ref, task, overwrite,
                                        modelfile_text(f"./{out.name}", [stop] if stop else [], tok),
                                        note=f"`ollama create NAME -f Modelfile`, or `llama-cli -m {out.name}`",
                                        verification=figures)
        res.size = out.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say("done", 1.0)
    return res

