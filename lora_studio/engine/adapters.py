"""PEFT-format adapter files: save_adapter / load_adapter / read_adapter.

Keys are `base_model.model.<module>.lora_A.weight` (R x in) and `.lora_B.weight` (out x R); a
fused-slice module is written as one LoRA of rank R = n*r on the fused matrix, B block-structured,
with alpha scaled so that PEFT's alpha'/r' (or alpha'/sqrt(r')) equals ours. What PEFT has no
field for (which logical slices a fused module holds) goes in a sidecar, `lora_studio.json`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lora_studio.core.atomic import atomic_write_bytes, atomic_write_json, public_mode  # noqa: F401 - re-exported
from lora_studio.core.names import PRINCIPAL_INITS
from lora_studio.engine.errors import UserError
from lora_studio.engine.runfolder import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from lora_studio.engine import inits
from lora_studio.engine.lora import LoraLayer, LoraSpec, inject, lora_layers

PREFIX = "base_model.model."
CONFIG_FILE = ADAPTER_CONFIG
WEIGHTS_FILE = ADAPTER_WEIGHTS
SIDECAR = "lora_studio.json"
MAGNITUDE = "lora_magnitude_vector"  # DoRA's m (out,): PEFT 0.21 writes `<module>.lora_magnitude_vector`


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata=None):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata or {"format": "pt"})
        public_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _ranges(rows: list[int]) -> list[list[int]]:
    """[0,1,2,5,6] -> [[0,3],[5,7]] (half-open), to keep the sidecar small."""
    out: list[list[int]] = []
    for r in rows:
        if out and out[-1][1] == r:
            out[-1][1] += 1
        else:
            out.append([r, r + 1])
    return out


def _unranges(ranges) -> list[int]:
    return [r for a, b in ranges for r in range(a, b)]


def task_type(model: nn.Module) -> str:
    name = type(model).__name__
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "CAUSAL_LM"
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    return "FEATURE_EXTRACTION"


def _peft_rank_alpha(m: LoraLayer, rslora: bool, residual: bool = False) -> tuple[int, float]:
    """Rank and alpha of the equivalent PEFT LoRA (fused: rank n*r, alpha keeping the scale;
    PiSSA/OLoRA saved against the original base: rank 2r, alpha keeping the scale)."""
    R = m.total_rank
    n = R // m.r
    alpha = m.alpha * (math.sqrt(n) if rslora else n)
    if not residual and inits.converted(m) is not None:
        return 2 * R, inits.converted_alpha(alpha, rslora)
    return R, alpha


def adapter_state(model: nn.Module, residual: bool = False) -> dict[str, torch.Tensor]:
    """The PEFT state dict (CPU, contiguous copies): lora_A/lora_B per module (+ DoRA's
    magnitude) and saved heads. PiSSA/OLoRA layers are converted to the original base unless
    `residual` (checkpoints: the A, B that train on the residual base)."""
    out = {}
    for name, m in lora_layers(model).items():
        conv = None if residual else inits.converted(m)
        A, B = conv if conv is not None else (m.lora_A, m.b_full())
        out[f"{PREFIX}{name}.lora_A.weight"] = A.detach().to("cpu", copy=True).contiguous()
        out[f"{PREFIX}{name}.lora_B.weight"] = B.detach().to("cpu", copy=True).contiguous()
        if m.use_dora:
            out[f"{PREFIX}{name}.{MAGNITUDE}"] = m.lora_magnitude_vector.detach().to("cpu", copy=True).contiguous()
    for name in getattr(model, "lora_studio_saved", []):
        for pname, p in model.get_submodule(name).named_parameters():
            out[f"{PREFIX}{name}.{pname}"] = p.detach().to("cpu", copy=True).contiguous()
    return out


def common_rank_alpha(ra: dict[str, tuple[int, float]]) -> tuple[int, float, dict, dict]:
    """PEFT's encoding of per-module (rank, alpha): the most common pair as `r`/`lora_alpha`, the
    others in `rank_pattern`/`alpha_pattern`. Returns (r, alpha, rank_pattern, alpha_pattern)."""
    values = list(ra.values())
    r, alpha = max(set(values), key=values.count)
    return (r, alpha, {n: v[0] for n, v in ra.items() if v[0] != r},
            {n: v[1] for n, v in ra.items() if v[1] != alpha})


def save_adapter(model: nn.Module, out_dir, base_model_name_or_path: str | None = None,
                 residual: bool = False) -> Path:
    """Write `out_dir/adapter_config.json` + `adapter_model.safetensors` (+ sidecar), atomically.
    PiSSA/OLoRA adapters are written as plain LoRAs on the original base, unless `residual`."""
    layers = lora_layers(model)
    if not layers:
        raise UserError("this model has no LoRA adapters to save")
    spec: LoraSpec | None = getattr(model, "lora_studio_spec", None)
    if spec is None:  # a guessed default would write another rank, alpha or init than the layers have
        raise ValueError("this model's LoRA layers carry no LoraSpec (they were not made by inject() or "
                         "load_adapter()): cannot write a faithful adapter_config.json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    convert = not residual and spec.init in PRINCIPAL_INITS
    ranks = {n: _peft_rank_alpha(m, spec.rslora, residual) for n, m in layers.items()}
    r, alpha, rank_pattern, alpha_pattern = common_rank_alpha(ranks)
    saved = getattr(model, "lora_studio_saved", [])
    base = base_model_name_or_path or getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", "")
    config = {
        "peft_type": "LORA",
        "task_type": task_type(model),
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": alpha,
        "target_modules": sorted(layers),
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "use_rslora": spec.rslora,
        "fan_in_fan_out": any(m.conv1d for m in layers.values()),
        "lora_dropout": spec.dropout,
        "bias": "none",
        "modules_to_save": sorted({n.rsplit(".", 1)[-1] for n in saved}) or None,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_dora": any(m.use_dora for m in layers.values()),
        "layers_to_transform": None,
        "layers_pattern": None,
    }
    k = 2 if convert else 1  # a converted PiSSA/OLoRA file is a plain LoRA of rank 2r
    conv_alpha = (lambda a: inits.converted_alpha(a, spec.rslora)) if convert else (lambda a: a)
    sidecar = {
        "format": 1,
        "spec": {"targets": spec.targets, "layers": spec.layers, "rank": k * spec.rank, "alpha": conv_alpha(spec.alpha),
                 "dropout": spec.dropout, "rslora": spec.rslora, "modules_to_save": spec.modules_to_save,
                 "rank_pattern": {n: k * r for n, r in spec.rank_pattern.items()},
                 "alpha_pattern": {n: conv_alpha(a) for n, a in spec.alpha_pattern.items()},
                 "dora": spec.dora, "init": "kaiming" if convert else spec.init},
        "modules": {n: {"r": k * m.r, "alpha": conv_alpha(m.alpha), "conv1d": m.conv1d,
                        "targets": None if not m.slices else [t for t, _ in m.slices],
                        "slices": None if not m.slices else [[t, _ranges(rows)] for t, rows in m.slices]}
                    for n, m in layers.items()},
    }
    if convert:
        sidecar["converted_from"] = spec.init  # trained as PiSSA/OLoRA, saved against the original base
    atomic_save_tensors(out / WEIGHTS_FILE, adapter_state(model, residual))
    atomic_write_json(out / CONFIG_FILE, config)
    atomic_write_json(out / SIDECAR, sidecar)
    return out


@dataclass
class AdapterModule:
    """One adapted module as stored: A (R x in), B_full (out x R), and the scale s."""

    name: str
    A: torch.Tensor
    B: torch.Tensor
    r: int  # per slice
    alpha: float
    scaling: float
    conv1d: bool = False
    slices: list[tuple[str, list[int]]] | None = None  # [(logical, rows)] for a fused module
    magnitude: torch.Tensor | None = None  # DoRA's m (out,): W = m·(W0 + sBA)/‖W0 + sBA‖_c

    def parts(self):
        """(label, A_i, B_i) per slice (whole module: one part) -> ΔW_i = scaling * B_i A_i."""
        if not self.slices:
            return [(None, self.A, self.B)]
        out = []
        for i, (t, rows) in enumerate(self.slices):
            cols = slice(i * self.r, (i + 1) * self.r)
            out.append((t, self.A[cols], self.B[rows, cols]))
        return out


@dataclass
class AdapterFile:
    path: Path
    config: dict
    modules: dict[str, AdapterModule]
    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    sidecar: dict | None = None


def _pattern_get(pattern: dict, name: str, default):
    """PEFT's rule: a key matches a module name equal to it or ending in '.' + key (regex)."""
    if name in pattern:
        return pattern[name]
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def read_adapter(path) -> AdapterFile:
    """Read any PEFT LoRA adapter folder (ours or not) into plain tensors."""
    path = Path(path)
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: give a run folder or a PEFT adapter folder")
    if not cfg_path.is_file():
        raise UserError(f"{path} has no {CONFIG_FILE}: it is not a PEFT adapter folder")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e})") from None
    if config.get("peft_type") != "LORA":
        raise UserError(f"{path} holds a {config.get('peft_type')} adapter; only LoRA adapters are supported")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(("pissa", "olora", "corda", "eva", "loftq")):
        raise UserError(f"{path} was saved against a {init} residual base model, which it needs; save it "
                        "converted to the original base (PEFT: path_initial_model_for_weight_conversion)")
    if not w_path.is_file():
        if (path / "adapter_model.bin").is_file():
            raise UserError(f"{path} has only a pickled adapter_model.bin; convert it to safetensors")
        raise UserError(f"{path} has no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{w_path} is unreadable ({e}); the file is truncated or corrupt") from None
    sidecar = json.loads((path / SIDECAR).read_text()) if (path / SIDECAR).is_file() else None
    rslora = bool(config.get("use_rslora"))
    modules, heads = {}, {}
    for key, t in tensors.items():
        k = key[len(PREFIX):] if key.startswith(PREFIX) else key
        k = re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", k)  # tolerate adapter names
        k = re.sub(r"\.lora_magnitude_vector(\.[^.]+)*$", "." + MAGNITUDE, k)  # older: .weight, adapter names
        if "lora_embedding" in k:
            raise UserError(f"{path} adapts embeddings ({k}); not supported")
        if k.endswith(".lora_A.weight"):
            name = k[: -len(".lora_A.weight")]
            B = tensors.get(key.replace("lora_A", "lora_B"))
            if B is None:
                raise UserError(f"{path}: {name} has lora_A but no lora_B")
            R = t.shape[0]
            side = (sidecar or {}).get("modules", {}).get(name)
            if side and side.get("slices"):
                r, alpha = side["r"], side["alpha"]
                slices = [(s, _unranges(rg)) for s, rg in side["slices"]]
            else:
                r = R
                alpha = float(_pattern_get(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", r)))
                slices = None
            scaling = alpha / math.sqrt(r) if rslora else alpha / r
            _check_module(path, name, config, R, rslora, alpha, scaling, t, B)
            conv = bool(side["conv1d"]) if side else bool(config.get("fan_in_fan_out"))
            mkey = next((q for q in tensors if q.startswith(key.split(".lora_A")[0] + ".lora_magnitude_vector")), None)
            mag = tensors[mkey] if mkey else None
            modules[name] = AdapterModule(name, t, B, r, alpha, scaling, conv, slices, mag)
        elif not k.endswith((".lora_B.weight", "." + MAGNITUDE)):
            if not torch.isfinite(t).all():
                raise UserError(f"{path}: {k} holds NaN or infinite values (the training diverged): "
                                "use an earlier checkpoint, or train again with a lower learning rate")
            heads[k] = t
    if not modules:
        raise UserError(f"{path} holds no LoRA weights")
    return AdapterFile(path, config, modules, heads, sidecar)


def _check_module(path, name, config, R, rslora, alpha, scaling, A, B):
    """Refuse what would merge into a wrong model: non-finite weights, alpha <= 0, and an
    adapter_config.json that disagrees with the scaling the weights were trained with."""
    if not alpha > 0:
        raise UserError(f"{path}: {name} has lora_alpha {alpha}; alpha must be > 0 (fix adapter_config.json)")
    if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
        raise UserError(f"{path}: {name} holds NaN or infinite values (the training diverged): "
                        "use an earlier checkpoint, or train again with a lower learning rate")
    peft_alpha = float(_pattern_get(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", R)))
    peft_r = int(_pattern_get(config.get("rank_pattern") or {}, name, config.get("r", R)))
    if peft_r != R:
        raise UserError(f"{path}: {name} has rank {R} in its weights but {peft_r} in adapter_config.json; "
                        "the files disagree (was one of them edited?)")
    peft_scaling = peft_alpha / math.sqrt(R) if rslora else peft_alpha / R
    if not math.isclose(peft_scaling, scaling, rel_tol=1e-6):
        raise UserError(f"{path}: {name} is scaled by {peft_scaling:.6g} according to adapter_config.json "
                        f"(lora_alpha {peft_alpha:g}) but was trained with {scaling:.6g} (lora_studio.json); "
                        "the files disagree (was adapter_config.json edited?): restore it, or delete "
                        "lora_studio.json to use the edited value")


def load_adapter(model: nn.Module, path, strict: bool = True) -> list[str]:
    """Adapt `model` with the adapter in `path` (ours or PEFT's). If `model` already carries
    adapters of the same layout, their weights are replaced instead (checkpoints, resume)."""
    ad = read_adapter(path)
    layers = lora_layers(model)
    if not layers:
        if ad.sidecar:
            s = ad.sidecar["spec"]
            spec = LoraSpec(targets=s["targets"], rank=s["rank"], alpha=s["alpha"], dropout=s["dropout"],
                            layers=s["layers"], rslora=s["rslora"], modules_to_save=s["modules_to_save"],
                            rank_pattern=s["rank_pattern"], alpha_pattern=s["alpha_pattern"],
                            dora=s.get("dora", False), init=s.get("init", "kaiming"))
        else:
            mts = ad.config.get("modules_to_save") or []
            spec = LoraSpec(targets=[re.escape(n) for n in ad.modules], rank=ad.config.get("r", 8),
                            alpha=ad.config.get("lora_alpha", 8), rslora=bool(ad.config.get("use_rslora")),
                            rank_pattern={n: m.r for n, m in ad.modules.items()},
                            alpha_pattern={n: m.alpha for n, m in ad.modules.items()},
                            modules_to_save=list(mts), dora=bool(ad.config.get("use_dora")))
        from lora_studio.engine.inits import read_principal

        try:
            inject(model, spec, principal=read_principal(path))  # a checkpoint's PiSSA/OLoRA residual
        except UserError as e:
            raise UserError(f"adapter {path} does not fit this model: {e}") from None
        layers = lora_layers(model)
    missing = set(ad.modules) ^ set(layers)
    if missing and strict:
        raise UserError(f"adapter {path} does not match this model's adapted modules "
                        f"(e.g. {sorted(missing)[0]}); was it made for another base model?")
    with torch.no_grad():
        for name, am in ad.modules.items():
            m = layers.get(name)
            if m is None:
                continue
            if am.A.shape != m.lora_A.shape or am.B.shape != (m.out_features, m.total_rank):
                raise UserError(f"adapter {path}: {name} has shape A{tuple(am.A.shape)} B{tuple(am.B.shape)}, "
                                f"the model expects A{tuple(m.lora_A.shape)}; another base model?")
            if (am.magnitude is not None) != m.use_dora:
                raise UserError(f"adapter {path}: {name} is {'' if m.use_dora else 'not '}DoRA in this model "
                                f"but {'' if am.magnitude is not None else 'not '}in the file")
            m.lora_A.copy_(am.A)
            if m.use_dora:
                m.lora_magnitude_vector.copy_(am.magnitude)
            if m.slices is None:
                m.lora_B.copy_(am.B)
            else:
                m.lora_B.copy_(am.B.reshape(-1)[m.b_index.cpu()].view_as(m.lora_B))
        for key, t in ad.heads.items():
            try:
                p = model.get_parameter(key)
            except AttributeError:
                if strict:
                    raise UserError(f"adapter {path} has {key}, which this model lacks") from None
                continue
            p.copy_(t)
    return list(ad.modules)
