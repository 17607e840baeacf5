"""Rank spectra: look inside the learned update ΔW = s·B A without ever forming it.

The SVD of ΔW (out x in, rank <= r) comes from thin QRs of B and Aᵀ and the SVD of an r x r core:
B = Qb Rb, Aᵀ = Qa Ra  =>  ΔW = Qb (s·Rb Raᵀ) Qaᵀ = (Qb Uc) Σ (Qa Vc)ᵀ, in O((out + in)·r²) instead
of O(out·in·min(out, in)); σ alone needs only Rb and Ra, taken from the Gram matrices. Fused
modules (GPT-2 c_attn, …) are analysed per logical slice.

Per module: effective rank (Roy & Vetterli 2007: exp of the Shannon entropy of σ/Σσ), the ranks
keeping 90% / 99% of the energy Σσ², stable rank ‖ΔW‖_F²/σ₁², ‖ΔW‖_F and, given W0, the paper's
amplification factor ‖ΔW‖_F / ‖Uᵀ W0 V‖_F (§7.3). `similarity` is the paper's Eq. 4 between two
adapters' A matrices; `resize` truncates every ΔW to rank k by SVD and writes a PEFT folder.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn

from lora_studio.engine.errors import UserError
from lora_studio.engine.adapters import (CONFIG_FILE, PREFIX, SIDECAR, WEIGHTS_FILE, AdapterFile, AdapterModule,
                                         atomic_save_tensors, atomic_write_json, common_rank_alpha, read_adapter)
from lora_studio.engine.lora import lora_layers
from lora_studio.engine.variants import Variant
from lora_studio.engine.targets import layer_index

F64 = torch.float64
_THREADS = threading.RLock()


def _one_thread(fn):
    """Run `fn` on one intra-op thread. Its ops are small (r x r, d x r), where a second thread
    adds only barrier waits: 20x slower when the other core is busy (measured on a 2-core CPU)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _THREADS:
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return fn(*args, **kwargs)
            finally:
                torch.set_num_threads(n)
    return run


@dataclass
class ModuleSpectrum:
    """The spectrum of one ΔW (one slice of a fused module). Plain numbers unless top vectors were asked."""

    name: str  # module path, e.g. model.layers.3.self_attn.q_proj
    target: str | None  # logical slice of a fused module (q, v, …), None for a whole matrix
    layer: int | None
    rank: int  # r of the adapter
    singular_values: list[float]  # of ΔW = s·B A, descending, r of them (min(r, out, in))
    effective_rank: float  # exp(entropy of σ/Σσ); 0 when ΔW = 0
    rank90: int  # smallest k with Σ_{i<=k} σ_i² >= 0.9 Σσ²; 0 when ΔW = 0
    rank99: int
    stable_rank: float  # ‖ΔW‖_F² / σ₁²
    frobenius: float  # ‖ΔW‖_F
    amplification: float | None = None  # ‖ΔW‖_F / ‖Uᵀ W0 V‖_F, when W0 was given
    note: str | None = None  # what ΔW is when it is not s·B A (DoRA)
    U: torch.Tensor | None = field(default=None, repr=False, compare=False)  # (out, r) left singular vectors
    V: torch.Tensor | None = field(default=None, repr=False, compare=False)  # (in, r) right singular vectors

    @property
    def label(self) -> str:
        return f"{self.name}[{self.target}]" if self.target else self.name


# -- the math ---------------------------------------------------------------------------------
def _gram_root(G: torch.Tensor) -> torch.Tensor:
    """An R with Rᵀ R = G (G = Xᵀ X, r x r): Λ^½ Qᵀ from eigh, defined even when X is rank-deficient."""
    lam, Q = torch.linalg.eigh(G)
    return lam.clamp_min(0).sqrt()[:, None] * Q.T


def delta_svd(B: torch.Tensor, A: torch.Tensor, scaling: float = 1.0, vectors: bool = False):
    """SVD of ΔW = scaling·B A (B: out x r, A: r x in) in float64 on CPU, without forming ΔW.
    Returns σ (descending, min(r, out, in) values), or (σ, U (out x ·), V (in x ·)) with vectors."""
    B = B.detach().to("cpu", F64)
    A = A.detach().to("cpu", F64)
    if not vectors:
        # σ(ΔW) = σ(s·Rb Raᵀ) for any Rb, Ra with RbᵀRb = BᵀB, RaᵀRa = A Aᵀ: from the r x r Gram
        # matrices, ~3x faster than QR on CPU. Squaring costs accuracy only for σ below ~1e-8·σ₁ in
        # float64, beneath the fp32 resolution of B and A themselves.
        n = min(B.shape[0], A.shape[1], A.shape[0])
        return torch.linalg.svdvals((_gram_root(B.T @ B) @ _gram_root(A @ A.T).T) * scaling)[:n]
    Qb, Rb = torch.linalg.qr(B)  # (out, r'), (r', r)
    Qa, Ra = torch.linalg.qr(A.T)  # (in, r''), (r'', r)
    Uc, S, Vch = torch.linalg.svd((Rb @ Ra.T) * scaling, full_matrices=False)  # core (r', r''): ΔW = Qb core Qaᵀ
    return S, Qb @ Uc, Qa @ Vch.T


def cumulative_energy(sigma) -> list[float]:
    """Σ_{i<=k} σ_i² / Σσ² for k = 1 … r (all zeros for a zero matrix)."""
    e = torch.as_tensor(sigma, dtype=F64) ** 2
    total = e.sum()
    return (torch.cumsum(e, 0) / total).tolist() if total > 0 else [0.0] * len(e)


def energy_rank(sigma, fraction: float) -> int:
    """Smallest k with Σ_{i<=k} σ_i² >= fraction·Σσ² (0 when all σ are 0)."""
    cum = cumulative_energy(sigma)
    if not cum or cum[-1] <= 0:
        return 0
    return min(sum(c < fraction * (1 - 1e-12) for c in cum) + 1, len(cum))  # 1e-12: fraction=1 keeps all


def effective_rank(sigma) -> float:
    """Roy & Vetterli (2007): exp(-Σ p_i log p_i) with p = σ/Σσ; 0 for a zero matrix."""
    s = torch.as_tensor(sigma, dtype=F64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    return math.exp(-torch.special.xlogy(p, p).sum().item())


def _spectrum(name, target, r, S, U=None, V=None, W0=None, keep_vectors=False, note=None) -> ModuleSpectrum:
    e = S ** 2
    fro2, s1 = e.sum().item(), S[0].item() if len(S) else 0.0
    amp = None
    if W0 is not None:
        # Paper §7.3 with U, V the top-r singular vectors of ΔW; directions with σ = 0 are
        # arbitrary (ΔW rank-deficient), so only the numerical rank is used.
        k = int((S > s1 * 1e-10).sum()) if s1 > 0 else 0
        if k == 0:
            amp = 0.0
        else:
            dt = W0.dtype if W0.dtype in (torch.float32, F64) else torch.float32
            proj = (U[:, :k].T.to(dt) @ W0.to(dt)) @ V[:, :k].to(dt)  # (k, k)
            denom = torch.linalg.matrix_norm(proj).item()
            amp = math.sqrt(fro2) / denom if denom > 0 else None
    return ModuleSpectrum(
        name=name, target=target, layer=layer_index(name), rank=r, singular_values=S.tolist(),
        effective_rank=effective_rank(S), rank90=energy_rank(S, 0.9), rank99=energy_rank(S, 0.99),
        stable_rank=fro2 / s1 ** 2 if s1 > 0 else 0.0, frobenius=math.sqrt(fro2), amplification=amp,
        U=U.float() if keep_vectors else None, V=V.float() if keep_vectors else None, note=note)


DORA_NOTE = "DoRA: effective dW = merged - base = m*(W0+sBA)/|W0+sBA|_c - W0 (full rank in general)"
DORA_NOTE_NO_BASE = "DoRA: direction update sBA only (no base weights given, so the magnitude is left out)"


def dora_delta(m: AdapterModule, W0: torch.Tensor) -> torch.Tensor:
    """The effective ΔW (out x in, float64) of a DoRA module: what merging adds to W0."""
    from lora_studio.engine.variants import dora_weight

    W0 = W0.to(F64)
    return dora_weight(W0, m.scaling * (m.B.to(F64) @ m.A.to(F64)), m.magnitude.to(F64)) - W0


# -- inputs -----------------------------------------------------------------------------------
def modules_from_model(model: nn.Module) -> dict[str, AdapterModule]:
    """The adapted modules of a live model as AdapterModules (detached CPU copies)."""
    out = {}
    with torch.no_grad():
        for name, m in lora_layers(model).items():
            A, B = m.lora_A.detach().to("cpu", copy=True), m.b_full().detach().to("cpu", copy=True)
            mag = m.lora_magnitude_vector.detach().to("cpu", copy=True) if m.use_dora else None
            out[name] = AdapterModule(name, A, B, m.r, m.alpha, m.scaling, m.conv1d, m.slices, mag)
    return out


def _modules(adapter) -> dict[str, AdapterModule]:
    if isinstance(adapter, (str, Path)):
        adapter = read_adapter(adapter)
    if isinstance(adapter, AdapterFile):
        mods = adapter.modules
    elif isinstance(adapter, nn.Module):
        mods = modules_from_model(adapter)
        if not mods:
            raise UserError("this model has no LoRA adapters to analyse")
    elif isinstance(adapter, dict):
        mods = adapter
    else:
        raise TypeError(f"expected an adapter folder, AdapterFile or model, got {type(adapter).__name__}")
    key = lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]  # layers 2 < 10
    return {n: mods[n] for n in sorted(mods, key=key)}


def weights_of(model: nn.Module, names=None) -> dict[str, torch.Tensor]:
    """W0 (out x in) of the adapted modules of `model` (a base model or an adapted one, merged or
    not), or of `names`: Conv1D weights transposed, merged deltas subtracted."""
    layers = lora_layers(model)
    out = {}
    for name in names if names is not None else layers:
        m = layers.get(name)
        try:
            mod = m.base_layer if m is not None else model.get_submodule(name)
        except AttributeError:
            continue
        w = mod.weight.detach()
        w = (w.T if type(mod).__name__ == "Conv1D" else w).to("cpu", torch.float32)
        if m is not None and m.merged:
            w = (m.variant or Variant()).base_of_merged(m, w, m.delta_weight().detach().cpu())
        out[name] = w
    return out


def _w0(W0: torch.Tensor, m: AdapterModule) -> torch.Tensor:
    out, in_ = m.B.shape[0], m.A.shape[1]
    if W0.shape == (out, in_):
        return W0
    if W0.shape == (in_, out):  # a raw Conv1D weight (in x out)
        return W0.T
    raise UserError(f"base weight of {m.name} has shape {tuple(W0.shape)}, the adapter expects "
                    f"({out}, {in_}): is it the same base model?")


# -- the report API ---------------------------------------------------------------------------
@_one_thread
def analyse(adapter, base_weights: dict | nn.Module | None = None, top_vectors: bool = False) -> list[ModuleSpectrum]:
    """Spectra of every adapted module (per slice for fused ones). `adapter`: an AdapterFile, a
    folder, a model with LoRA layers, or {name: AdapterModule}. `base_weights`: {name: W0 (out x in)}
    or the base model, for the amplification factor (costs one out x in x r product per module)."""
    mods = _modules(adapter)
    if base_weights is None and isinstance(adapter, nn.Module) and any(m.magnitude is not None for m in mods.values()):
        base_weights = weights_of(adapter, [n for n, m in mods.items() if m.magnitude is not None])
    if isinstance(base_weights, nn.Module):
        base_weights = weights_of(base_weights, list(mods))
    out = []
    for name, m in mods.items():
        W0 = base_weights.get(name) if base_weights else None
        W0 = _w0(W0.detach().cpu(), m) if W0 is not None else None
        if m.magnitude is not None and W0 is not None:  # DoRA (never fused): dense SVD of the effective ΔW
            U, S, Vh = torch.linalg.svd(dora_delta(m, W0), full_matrices=False)
            out.append(_spectrum(name, None, m.A.shape[0], S, U, Vh.T, W0, top_vectors, DORA_NOTE))
            continue
        note = DORA_NOTE_NO_BASE if m.magnitude is not None else None
        rows = dict(m.slices or [])
        for label, A, B in m.parts():
            want = top_vectors or W0 is not None
            res = delta_svd(B, A, m.scaling, vectors=want)
            S, U, V = res if want else (res, None, None)
            w = None if W0 is None else (W0[rows[label]] if label else W0)
            out.append(_spectrum(name, label, A.shape[0], S, U, V, w, top_vectors, note))
    return out


def to_json(spectra: list[ModuleSpectrum]) -> dict:
    """The `inspect --json` document: {"modules": [{name, target, layer, rank, singular_values, …}]}."""
    keys = [f.name for f in fields(ModuleSpectrum) if f.name not in ("U", "V")]
    mods = [{k: v for k, v in asdict(s).items() if k in keys} for s in spectra]
    return {"modules": mods, "suggested_rank90": suggest_rank(spectra, 0.9),
            "suggested_rank99": suggest_rank(spectra, 0.99)}


def suggest_rank(spectra: list[ModuleSpectrum], energy: float = 0.9) -> int:
    """The rank that keeps `energy` of every module's Σσ² (max over modules, at least 1)."""
    return max([1] + [energy_rank(s.singular_values, energy) for s in spectra])


def format_table(spectra: list[ModuleSpectrum], top: int = 4) -> str:
    """A readable table: module, rank, effective rank, r90, r99, ‖ΔW‖_F, the top σ. ASCII only, so
    that it prints on any console."""
    if not spectra:
        return "no adapted modules"
    width = max(len("module"), *(len(s.label) for s in spectra))
    amp = any(s.amplification is not None for s in spectra)
    head = (f"{'module':<{width}}  rank  eff.rank  r90  r99  |dW|_F     " + ("ampl.  " if amp else "")
            + "top singular values")
    lines = [head, "-" * len(head)]
    for s in spectra:
        sig = " ".join(f"{x:.3g}" for x in s.singular_values[:top]) + (" ..." if len(s.singular_values) > top else "")
        a = (f"{s.amplification:5.2f}  " if s.amplification is not None else "    -  ") if amp else ""
        lines.append(f"{s.label:<{width}}  {s.rank:>4}  {s.effective_rank:>8.2f}  {s.rank90:>3}  {s.rank99:>3}  "
                     f"{s.frobenius:<9.4g}  {a}{sig}")
    zero = sum(1 for s in spectra if s.frobenius == 0)
    lines.append("")
    lines.append(f"{len(spectra)} matrices; rank keeping 90% of the energy everywhere: {suggest_rank(spectra, 0.9)}, "
                 f"99%: {suggest_rank(spectra, 0.99)}" + (f"; {zero} with dW = 0 (untrained)" if zero else ""))
    return "\n".join(lines)


@_one_thread
def similarity(a, b) -> dict[tuple[str, str | None], torch.Tensor]:
    """Paper Eq. 4 per module (per slice) present in both: φ[i-1, j-1] = ‖U_a^iᵀ U_b^j‖_F² / min(i, j),
    U^i the top-i right-singular vectors of A (the input-space directions), φ of shape (r_a, r_b)."""
    ma, mb = _modules(a), _modules(b)
    common = [n for n in ma if n in mb]
    if not common:
        raise UserError("the two adapters share no adapted module: compare adapters of the same base model")
    out = {}
    for name in common:
        pb = {label: A for label, A, _ in mb[name].parts()}
        for label, A1, _ in ma[name].parts():
            A2 = pb.get(label)
            if A2 is None:
                continue
            if A1.shape[1] != A2.shape[1]:
                raise UserError(f"{name}: input sizes differ ({A1.shape[1]} vs {A2.shape[1]}); "
                                "compare adapters of the same base model")
            V1 = torch.linalg.svd(A1.detach().to("cpu", F64), full_matrices=False)[2]  # (r1, in), rows by σ desc
            V2 = torch.linalg.svd(A2.detach().to("cpu", F64), full_matrices=False)[2]
            M2 = (V1 @ V2.T) ** 2  # (r1, r2)
            cum = M2.cumsum(0).cumsum(1)  # cum[i-1, j-1] = ‖U_a^iᵀ U_b^j‖_F²
            i = torch.arange(1, M2.shape[0] + 1, dtype=F64)[:, None]
            j = torch.arange(1, M2.shape[1] + 1, dtype=F64)[None, :]
            out[(name, label)] = (cum / torch.minimum(i, j)).float()
    if not out:
        raise UserError("no adapted matrix (module and slice) is common to the two adapters: compare "
                        "adapters of the same base model and targets")
    return out


# -- resize -----------------------------------------------------------------------------------
@_one_thread
def resize(adapter, out_dir, rank: int | None = None, energy: float | None = None, overwrite: bool = False) -> dict:
    """Truncate every ΔW (per slice) to rank k by SVD — `rank` fixed, or the smallest k keeping
    `energy` of Σσ² — and write a PEFT adapter folder to `out_dir`. The scale s of each module is
    kept (alpha' = s·k, rsLoRA s·sqrt(k)); factors are balanced: B' = U √(σ/s), A' = √(σ/s) Vᵀ.
    A fused module whose slices keep different ranks is written as one plain LoRA of rank Σk_i
    (A stacked, B block-structured), as PEFT has no per-slice rank. Returns a JSON-able report."""
    if (rank is None) == (energy is None):
        raise UserError("give either a rank (e.g. --rank 4) or an energy fraction (e.g. --energy 0.9)")
    if rank is not None and (not isinstance(rank, int) or rank <= 0):
        raise UserError(f"rank must be a positive integer, got {rank!r}")
    if energy is not None and not 0 < energy <= 1:
        raise UserError(f"energy must be in (0, 1], got {energy!r} (e.g. 0.9)")
    from lora_studio.engine import runfolder

    if not isinstance(adapter, AdapterFile):
        adapter = runfolder.adapter_of(adapter)
    ad = adapter if isinstance(adapter, AdapterFile) else read_adapter(adapter)
    if any(m.magnitude is not None for m in ad.modules.values()):
        raise UserError("a DoRA adapter cannot be resized by SVD (its magnitude vector is not low-rank): "
                        "merge it instead (lora-studio merge)")
    out = runfolder.check_export_target(out_dir, ad.path, overwrite, "resized adapter")
    norm = math.sqrt if ad.config.get("use_rslora") else float  # alpha = s·norm(r) keeps s
    tensors, rows_report, kept = {}, [], {}  # kept: name -> (module, rank kept per slice)
    before = after = 0
    for name, m in _modules(ad).items():
        s = m.scaling
        parts = []
        for label, A, B in m.parts():
            S, U, V = delta_svd(B, A, s, vectors=True)
            k = None if S[0] <= 0 else (min(rank, len(S)) if rank is not None else energy_rank(S, energy))
            parts.append((label, A.shape[0], S, U, V, k))
        # a zero slice (never trained) takes its module's largest rank so that slices stay uniform
        kz = max([p[5] for p in parts if p[5]] or [1])
        dtype = m.A.dtype if m.A.dtype.is_floating_point else torch.float32
        As, Bs = [], []
        for label, r, S, U, V, k in parts:
            k = k or kz
            root = (S[:k] / s).sqrt()
            Bs.append(U[:, :k] * root)  # (out_i, k)
            As.append(root[:, None] * V[:, :k].T)  # (k, in)
            e = S ** 2
            frac = (e[:k].sum() / e.sum()).item() if e.sum() > 0 else 1.0
            row = {"name": name, "target": label, "rank_before": r, "rank": k,
                   "retained_frobenius": math.sqrt(frac), "retained_energy": frac}
            if S[0] <= 0:
                row["note"] = f"dW = 0 (untrained): kept rank {k} with zeros"
            rows_report.append(row)
        ks = [b.shape[1] for b in Bs]
        R = sum(ks)
        if not m.slices:
            B_new, A_new = Bs[0], As[0]
        else:
            A_new = torch.cat(As)
            B_new = torch.zeros(m.B.shape[0], R, dtype=F64)
            off = 0
            for (_, rows), b in zip(m.slices, Bs):
                B_new[rows, off:off + b.shape[1]] = b
                off += b.shape[1]
        kept[name] = (m, ks)
        tensors[f"{PREFIX}{name}.lora_A.weight"] = A_new.to(dtype).contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = B_new.to(dtype).contiguous()
        before += m.A.numel() + m.B.numel()
        after += A_new.numel() + B_new.numel()
    for key, t in ad.heads.items():  # modules_to_save: unchanged
        tensors[PREFIX + key] = t

    peft_ra = {n: (sum(ks), m.scaling * norm(sum(ks))) for n, (m, ks) in kept.items()}  # PEFT: one rank per module
    config = dict(ad.config)
    config.update(zip(("r", "lora_alpha", "rank_pattern", "alpha_pattern"), common_rank_alpha(peft_ra)))
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(out / WEIGHTS_FILE, tensors)
    atomic_write_json(out / CONFIG_FILE, config)
    desliced = [n for n, (m, ks) in kept.items() if m.slices and len(set(ks)) > 1]
    if ad.sidecar:
        atomic_write_json(out / SIDECAR, _sidecar(ad.sidecar, kept, norm, desliced, rank, energy, ad.path))
    elif (out / SIDECAR).exists():
        (out / SIDECAR).unlink()
    labels = runfolder.read_labels(runfolder.run_of(ad.path)) or runfolder.read_labels(ad.path)
    if labels:  # a merge of the resized adapter needs the class names of its head
        atomic_write_json(out / runfolder.LABELS_FILE, labels)
    runfolder.write_export_manifest(out, "resized adapter", [WEIGHTS_FILE, CONFIG_FILE] + [SIDECAR] * bool(ad.sidecar)
                                    + [runfolder.LABELS_FILE] * bool(labels), adapter=str(ad.path))
    report = {"out": str(out), "rank": rank, "energy": energy, "params_before": before, "params_after": after,
              "modules": rows_report}
    if desliced:
        report["note"] = (f"{len(desliced)} fused module(s) keep different ranks per slice and were written as "
                          "plain LoRA on the fused matrix (rank = sum of the slices' ranks)")
    return report


def _sidecar(old: dict, kept: dict, norm, desliced: list[str], rank, energy, src) -> dict:
    """Our sidecar for the resized folder: `spec` rebuilds the same layers in `load_adapter`."""
    spec = dict(old["spec"])
    mods, ra = {}, {}
    for n, (m, ks) in kept.items():
        R, labels = sum(ks), [t for t, _ in m.slices] if m.slices else None
        if m.slices and n not in desliced:  # per slice: rank k, alpha s·norm(k)
            mods[n] = {"r": ks[0], "alpha": m.scaling * norm(ks[0]), "conv1d": m.conv1d, "targets": labels,
                       "slices": old["modules"][n]["slices"]}
        else:
            mods[n] = {"r": R, "alpha": m.scaling * norm(R), "conv1d": m.conv1d, "targets": labels, "slices": None}
        ra[n] = (mods[n]["r"], mods[n]["alpha"])
    if desliced:
        # our fused layer has one rank for all its slices: rebuild every module as a plain LoRA by
        # exact name (modules with uniform slices keep their slice map, which reading still uses)
        ra = {n: (sum(ks), m.scaling * norm(sum(ks))) for n, (m, ks) in kept.items()}
        spec.update(targets=[re.escape(n) for n in kept], layers=None)
    spec.update(zip(("rank", "alpha", "rank_pattern", "alpha_pattern"), common_rank_alpha(ra)))
    return {**old, "spec": spec, "modules": mods, "resized": {"from": str(src), "rank": rank, "energy": energy}}


def with_amplification(folder) -> list[ModuleSpectrum]:
    """Spectra with the paper's amplification factor (§7.3) for a run or adapter folder: loads the
    base model it names on the CPU (W0 is needed), so it can take a while for a large model."""
    from lora_studio.engine import runfolder
    from lora_studio.engine.models import load_model

    adapter = runfolder.adapter_of(folder)
    ad = read_adapter(adapter)
    info = runfolder.run_info(adapter)
    if not info.base_model:
        raise UserError(f"{adapter} does not name its base model (base_model_name_or_path): "
                        "the amplification factor needs the base weights W0")
    model = load_model(info.base_model, info.task, trust_remote_code=info.trust_remote_code,
                       allow_pickle=info.allow_pickle,
                       id2label=dict(enumerate(info.labels)) if info.labels else None)
    return analyse(ad, base_weights=model)
