"""What to adapt and how: the adapter's specification, validated on construction. Torch-free
(`LoraConfig.to_spec()` builds it; engine/lora.py's `inject` applies it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_studio.core.names import check_init, check_lora, scaling


@dataclass
class LoraSpec:
    """What to adapt and how. Validated on construction."""

    targets: list[str] = field(default_factory=lambda: ["q", "v"])  # logical (q k v o gate up down) or module regex
    rank: int = 8  # r: rank of every adapted matrix (per slice for fused ones)
    alpha: float = 16.0  # scaling numerator: s = alpha / r (rsLoRA: alpha / sqrt(r))
    dropout: float = 0.0  # dropout on the adapter's input; skipped entirely when 0
    layers: list[int] | None = None  # layer indices to adapt; None = all
    rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r)
    modules_to_save: list[str] = field(default_factory=list)  # leaf names trained in full (task heads)
    rank_pattern: dict[str, int] = field(default_factory=dict)  # module name -> rank override
    alpha_pattern: dict[str, float] = field(default_factory=dict)  # module name -> alpha override
    dora: bool = False  # weight-decomposed update (DoRA): trained magnitude x direction (engine/variants.py)
    init: str = "kaiming"  # kaiming | gaussian | pissa | olora (engine/variants.py)

    def __post_init__(self):
        self.targets, self.rank, self.alpha, self.dropout = check_lora(self.targets, self.rank, self.alpha,
                                                                        self.dropout)
        check_init(self.init)

    def scaling(self, r: int, alpha: float) -> float:
        return scaling(r, alpha, self.rslora)

    def rank_of(self, name: str) -> tuple[int, float]:
        return self.rank_pattern.get(name, self.rank), float(self.alpha_pattern.get(name, self.alpha))
