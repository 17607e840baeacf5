"""The model card (`README.md` with Hugging Face metadata) that every export carries.

Front matter: `base_model`, `library_name` (peft for an adapter, transformers for a merged folder,
gguf for a GGUF file), `tags`, `pipeline_tag`, and `license` copied from the base model's own card
when it is on disk (a local folder, or the hub cache: never a download). Body: the training data,
the LoRA configuration and its parameter budget, the final metrics, a loss plot (`loss.png`,
drawn by the small PNG writer below: no plotting library needed) and the rank spectra summary.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

from lora_studio.engine.adapters import atomic_write_bytes, read_adapter
from lora_studio.engine.runfolder import CARD_MARKER, MODELFILE_MARKER, is_our_card  # noqa: F401

DEMO_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the packaged demo model is
PIPELINE = {"causal-lm": "text-generation", "preference": "text-generation", "classification": "text-classification"}
PLOT_FILE = "loss.png"


# -- where the facts come from -----------------------------------------------------------------
def hub_id(base_ref: str) -> str | None:
    """The hub id of the base, or None for a local folder whose origin is unknown."""
    try:
        from lora_studio.engine.models import demo_model_path

        if base_ref and Path(base_ref).resolve() == Path(demo_model_path()).resolve():
            return DEMO_HUB_ID
    except Exception:  # noqa: BLE001 - the demo package is optional here
        pass
    if not base_ref or Path(base_ref).exists():
        return None
    return base_ref if base_ref.count("/") <= 1 else None


def base_card_metadata(base_ref: str) -> dict:
    """The front matter of the base model's README.md, from its folder or the hub cache only."""
    from huggingface_hub import metadata_load

    path = Path(base_ref) / "README.md" if base_ref and Path(base_ref).is_dir() else None
    if path is None and hub_id(base_ref):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(hub_id(base_ref), "README.md")
            path = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - no cache, odd id: no license then
            path = None
    if path is None or not path.is_file():
        return {}
    try:
        return metadata_load(path) or {}
    except Exception:  # noqa: BLE001 - a malformed card upstream is not our failure
        return {}


def _metrics(run_dir: Path) -> list[dict]:
    from lora_studio.engine.runfolder import read_metrics

    return read_metrics(run_dir)


def _run_config(run_dir: Path):
    from lora_studio.config import RunConfig

    path = run_dir / "run.toml"
    return RunConfig.load(path) if path.is_file() else None


def budget(adapter) -> tuple[int, dict[str, int]]:
    """(trainable parameters, per module kind): r·(in + out) per adapted matrix (per slice of a
    fused one, without the zero blocks of the stored B) plus trained heads."""
    per_kind: dict[str, int] = {}
    for name, m in adapter.modules.items():
        for label, A, B in m.parts():
            kind = label or name.rsplit(".", 1)[-1]
            per_kind[kind] = per_kind.get(kind, 0) + A.numel() + B.numel()
    heads = sum(t.numel() for t in adapter.heads.values())
    if heads:
        per_kind["heads (trained in full)"] = heads
    return sum(per_kind.values()), per_kind


def spectra_summary(adapter) -> list[dict]:
    """Per module kind: modules, rank, mean effective rank and mean rank keeping 90% of the energy."""
    from lora_studio.engine.spectra import analyse

    groups: dict[str, list] = {}
    for s in analyse(adapter):
        groups.setdefault(s.target or s.name.rsplit(".", 1)[-1], []).append(s)
    return [{"kind": k, "modules": len(v), "rank": max(s.rank for s in v),
             "effective_rank": sum(s.effective_rank for s in v) / len(v),
             "rank90": sum(s.rank90 for s in v) / len(v)} for k, v in groups.items()]


# -- the loss plot -------------------------------------------------------------------------------
def png_bytes(pixels: list[bytearray], width: int, height: int) -> bytes:
    """An 8-bit RGB PNG of `pixels` (height rows of width*3 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def loss_plot(series: list[list[tuple[int, float]]], width: int = 480, height: int = 180) -> bytes | None:
    """Lines of (step, value) on shared axes (first: train loss, blue; second: eval loss, orange)."""
    points = [(s, v) for line in series for s, v in line if v is not None and math.isfinite(v)]
    if len(points) < 2:
        return None
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    pad = 10
    pixels = [bytearray(b"\xff" * width * 3) for _ in range(height)]

    def put(x: int, y: int, rgb):
        if 0 <= x < width and 0 <= y < height:
            pixels[y][3 * x:3 * x + 3] = bytes(rgb)

    for x in range(pad, width - pad):  # the frame
        put(x, pad, (200, 200, 200)), put(x, height - pad, (200, 200, 200))
    for y in range(pad, height - pad + 1):
        put(pad, y, (200, 200, 200)), put(width - pad, y, (200, 200, 200))

    def to_px(s, v):
        return (round(pad + (s - x0) / (x1 - x0) * (width - 2 * pad)),
                round(height - pad - (v - y0) / (y1 - y0) * (height - 2 * pad)))

    for line, rgb in zip(series, [(31, 119, 180), (255, 127, 14)]):
        pts = [to_px(s, v) for s, v in line if v is not None and math.isfinite(v)]
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            n = max(abs(bx - ax), abs(by - ay), 1)
            for i in range(n + 1):  # a 2-pixel-wide segment
                x, y = round(ax + (bx - ax) * i / n), round(ay + (by - ay) * i / n)
                put(x, y, rgb), put(x, y + 1, rgb)
        for x, y in pts if len(pts) <= 40 else []:
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    put(x + dx, y + dy, rgb)
    return png_bytes(pixels, width, height)


# -- the card ------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def render(run_dir, library_name: str, base_model: str, task: str, *, base_params: int | None = None,
           verification: dict | None = None, files: list[str] | None = None, plot: bool = True,
           adapter_dir=None) -> tuple[str, bytes | None]:
    """(README.md text, loss.png bytes or None) for an export of the run in `run_dir` (its newest
    adapter, or `adapter_dir`)."""
    from huggingface_hub import ModelCardData

    run_dir = Path(run_dir)
    from lora_studio.engine.runfolder import adapter_of

    adapter = read_adapter(adapter_dir or adapter_of(run_dir))
    cfg = _run_config(run_dir)
    base_meta = base_card_metadata(base_model)
    hub = hub_id(base_model)
    tags = ["lora", "lora-studio"] + (["peft"] if library_name == "peft" else []) + \
        (["gguf"] if library_name == "gguf" else []) + ([PIPELINE[task]] if task in PIPELINE else [])
    data = ModelCardData(base_model=hub, library_name=library_name, license=base_meta.get("license"),
                         tags=tags, pipeline_tag=PIPELINE.get(task))
    metrics = _metrics(run_dir)
    train = [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    accs = [(m["step"], m["accuracy"]) for m in metrics if m.get("accuracy") is not None]
    trainable, per_kind = budget(adapter)
    c = adapter.config
    title = f"LoRA of {hub or Path(base_model).name or 'a base model'}"
    kind = {"peft": "a PEFT LoRA adapter", "transformers": "the base model with the adapter merged into its weights",
            "gguf": "a GGUF file for llama.cpp / Ollama"}.get(library_name, library_name)
    lines = [f"# {title}", "", f"This folder holds {kind}, made with LoRA Studio "
             f"(Low-Rank Adaptation, Hu et al. 2021, arXiv:2106.09685).", "",
             f"- Base model: `{hub or base_model}`" + ("" if hub else " (a local folder)"), f"- Task: {task}"]
    if files:
        lines.append("- Files: " + ", ".join(f"`{f}`" for f in files))
    lines += ["", "## Training data", ""]
    if cfg is not None:
        d, t = cfg.data, cfg.train
        lines += [f"- Data: `{d.path or 'the packaged demo data set'}`"
                  + (f", validation `{d.validation_path}`" if d.validation_path else
                     f", {d.validation_split:.0%} held out for validation" if d.validation_split else ""),
                  f"- Max length {d.max_length} tokens; batch {t.batch_size} x grad accumulation {t.grad_accum}; "
                  f"lr {t.lr:g} ({t.schedule}); seed {t.seed}",
                  f"- Steps trained: {train[-1][0] if train else 0}"]
    else:
        lines.append("- Not recorded (this adapter folder has no run.toml).")
    lines += ["", "## LoRA configuration", "",
              f"- Targets: {', '.join(sorted(per_kind))}" + (f"; layers {cfg.lora.layers}" if cfg else ""),
              f"- Rank r = {c.get('r')}, alpha = {c.get('lora_alpha')}, scaling "
              f"{'alpha / sqrt(r) (rsLoRA)' if c.get('use_rslora') else 'alpha / r'}"
              + (f"; per-module ranks {len(c['rank_pattern'])}" if c.get("rank_pattern") else ""),
              f"- Trainable parameters: {trainable:,}"
              + (f" ({100 * trainable / base_params:.3f}% of the base's {base_params:,})" if base_params else ""), "",
              "| module kind | trainable parameters |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in sorted(per_kind.items())]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---:|",
              f"| train loss (last step) | {_fmt(train[-1][1] if train else None)} |",
              f"| eval loss | {_fmt(evals[-1][1] if evals else None)} |"]
    if accs:
        lines.append(f"| eval accuracy | {_fmt(accs[-1][1])} |")
    for k, v in (verification or {}).items():
        lines.append(f"| {k} | {_fmt(v)} |")
    png = loss_plot([train, evals]) if plot else None
    lines += ["", "## Loss", ""]
    if png:
        lines.append(f"![training loss (blue) and eval loss (orange) by step]({PLOT_FILE})")
        lines.append("")
        lines.append(f"Train loss {_fmt(train[0][1])} at step {train[0][0]} -> {_fmt(train[-1][1])} at step "
                     f"{train[-1][0]}." if train else "")
    else:
        lines.append("No plot: fewer than two logged values.")
    lines += ["", "## Rank spectra", "",
              "Effective rank (exp of the entropy of the normalized singular values of ΔW = s·B·A) and "
              "the rank keeping 90% of ΔW's energy, averaged per module kind:", "",
              "| module kind | modules | r | effective rank | rank for 90% energy |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {s['kind']} | {s['modules']} | {s['rank']} | {s['effective_rank']:.2f} | {s['rank90']:.1f} |"
              for s in spectra_summary(adapter)]
    text = f"---\n{data.to_yaml()}\n---\n{CARD_MARKER}\n\n" + "\n".join(lines) + "\n"
    return text, png


def write_model_card(folder, run_dir, library_name: str, base_model: str, task: str, **kw) -> Path:
    """Write `folder/README.md` (and `folder/loss.png`), each to a temp name renamed into place."""
    folder = Path(folder)
    text, png = render(run_dir, library_name, base_model, task, **kw)
    if png:
        atomic_write_bytes(folder / PLOT_FILE, png)
    atomic_write_bytes(folder / "README.md", text.encode())
    return folder / "README.md"


def card_json(folder) -> dict:
    """The metadata of a written card (for tests and the GUI)."""
    from huggingface_hub import metadata_load

    return metadata_load(Path(folder) / "README.md") or {}

