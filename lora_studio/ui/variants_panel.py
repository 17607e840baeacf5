"""LoRA variants (issue 17): LoRA+, DoRA, the initialisation, the base's precision and the optimizer.

A self-contained section: `set_config(config)` shows a RunConfig's values, `apply(config)` returns
a copy with the user's choices, `changed` fires on every edit. DoRA and a PiSSA/OLoRA init exclude
each other (config.LoraConfig refuses the pair), so choosing one disables the other.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout

from lora_studio.config import INITS, OPTIMIZERS, QUANTIZE, RunConfig
from lora_studio.core.names import PRINCIPAL_INITS
from lora_studio.ui.widgets import Section, label
from lora_studio.ui.bind import quiet

INIT_TEXT = {"kaiming": "Kaiming (LoRA paper)", "gaussian": "Gaussian", "pissa": "PiSSA (from W0's SVD)",
             "olora": "OLoRA (from W0's QR)"}
INIT_TIPS = {"kaiming": "A Kaiming-uniform, B zero: training starts exactly at the base model (the paper's choice)",
             "gaussian": "A Gaussian with std 1/r, B zero (PEFT's init_lora_weights='gaussian')",
             "pissa": "A and B from the top-r singular vectors of W0; the base keeps the rest (saved as plain LoRA)",
             "olora": "A and B from a QR decomposition of W0; the base keeps the residual (saved as plain LoRA)"}
QUANT_TEXT = {"none": "Full (bf16 / fp32)", "nf4": "4-bit (QLoRA)", "int8": "8-bit"}
QUANT_TIPS = {"none": "the base's weights at the training precision",
              "nf4": "base linear weights in bitsandbytes NF4: ~4x less weight memory (QLoRA, CUDA only)",
              "int8": "base linear weights in bitsandbytes int8: ~2x less weight memory (CUDA only)"}
OPT_TEXT = {"adamw": "AdamW", "adamw8bit": "AdamW 8-bit", "paged_adamw": "Paged AdamW"}
OPT_TIPS = {"adamw": "torch AdamW: two fp32 states per trainable parameter",
            "adamw8bit": "bitsandbytes AdamW with 8-bit states: ~4x less optimizer memory (CUDA only)",
            "paged_adamw": "bitsandbytes paged AdamW: states move to CPU memory under pressure (CUDA only)"}
EXCLUSIVE_INITS = PRINCIPAL_INITS  # not combinable with DoRA


def _combo(keys, texts: dict, tips: dict, tooltip: str) -> QComboBox:
    box = QComboBox()
    for i, key in enumerate(keys):
        box.addItem(texts.get(key, key), key)
        box.setItemData(i, tips.get(key, ""), 3)  # 3 = Qt.ToolTipRole
    box.setToolTip(tooltip)
    return box


class VariantsPanel(Section):
    """LoRA+ ratio, DoRA, init, base precision, optimizer.

    Signals:
        changed(): any field changed by the user (read the values with `apply`)
    """

    changed = Signal()

    def __init__(self, config: RunConfig | None = None, parent=None, collapsible: bool = False):
        super().__init__("LoRA variants", parent, collapsible=collapsible)
        self.loraplus = QDoubleSpinBox()
        self.loraplus.setRange(1.0, 1024.0)
        self.loraplus.setDecimals(1)
        self.loraplus.setSingleStep(1.0)
        self.loraplus.setSpecialValueText("off")
        self.loraplus.setToolTip("LoRA+ (Hayou et al. 2024): B learns this many times faster than A; "
                                 "1 = plain LoRA, the paper uses 16")
        self.dora = QCheckBox("DoRA (magnitude × direction)")
        self.dora.setToolTip("DoRA (Liu et al. 2024): W = m · (W0 + sBA) / ‖W0 + sBA‖, m trained per output row")
        self.init = _combo(INITS, INIT_TEXT, INIT_TIPS, "How A and B start")
        self.quantize = _combo(QUANTIZE, QUANT_TEXT, QUANT_TIPS,
                               "Precision of the frozen base's linear weights (bitsandbytes, CUDA)")
        self.optimizer = _combo(OPTIMIZERS, OPT_TEXT, OPT_TIPS, "The optimizer of the adapter's parameters")
        f = self.form
        row = QHBoxLayout()
        row.addWidget(self.loraplus, 1)
        row.addWidget(label("paper: 16", "Hint"))
        f.addRow("LoRA+ ratio", row)
        f.addRow(self.dora)
        f.addRow("Initialisation", self.init)
        f.addRow("Base precision", self.quantize)
        f.addRow("Optimizer", self.optimizer)
        for w, sig in ((self.loraplus, self.loraplus.valueChanged), (self.dora, self.dora.toggled),
                       (self.init, self.init.currentIndexChanged), (self.quantize, self.quantize.currentIndexChanged),
                       (self.optimizer, self.optimizer.currentIndexChanged)):
            sig.connect(self._edited)
        if config is not None:
            self.set_config(config)
        self._exclusive()

    def set_config(self, config: RunConfig):
        """Show `config`'s values (no `changed` signal)."""
        with quiet(self.loraplus, self.dora, self.init, self.quantize, self.optimizer):
            self.loraplus.setValue(float(config.train.loraplus_ratio))
            self.dora.setChecked(bool(config.lora.dora))
            self.init.setCurrentIndex(self.init.findData(config.lora.init))
            self.quantize.setCurrentIndex(self.quantize.findData(config.model.quantize))
            self.optimizer.setCurrentIndex(self.optimizer.findData(config.train.optimizer))
        self._exclusive()

    def values(self) -> dict:
        """{section: {field: value}} as RunConfig.replace takes it."""
        return {"train": {"loraplus_ratio": float(self.loraplus.value()), "optimizer": self.optimizer.currentData()},
                "lora": {"dora": self.dora.isChecked(), "init": self.init.currentData()},
                "model": {"quantize": self.quantize.currentData()}}

    def apply(self, config: RunConfig) -> RunConfig:
        """A copy of `config` with this panel's values (validated by RunConfig)."""
        return config.replace(**self.values())

    def _edited(self, *_):
        self._exclusive()
        self.changed.emit()

    def _exclusive(self):
        pissa_like = self.init.currentData() in EXCLUSIVE_INITS
        self.dora.setEnabled(not pissa_like)
        self.dora.setToolTip("DoRA cannot start from a PiSSA/OLoRA init: choose Kaiming or Gaussian first"
                             if pissa_like else
                             "DoRA (Liu et al. 2024): W = m · (W0 + sBA) / ‖W0 + sBA‖, m trained per output row")
        model = self.init.model()
        for i in range(self.init.count()):
            item = model.item(i)
            if self.init.itemData(i) in EXCLUSIVE_INITS:
                item.setEnabled(not self.dora.isChecked())
