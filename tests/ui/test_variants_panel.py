"""The LoRA variants section: what a user types and picks lands in the RunConfig."""

from __future__ import annotations

import os

from PySide6.QtCore import QPoint, Qt

from lora_studio.config import RunConfig


def pick(qtbot, combo, key):
    """Choose an item as a user does: keyboard through the list until its data is `key`."""
    combo.setFocus()
    step = Qt.Key_Down if combo.findData(key) > combo.currentIndex() else Qt.Key_Up
    for _ in range(combo.count()):
        if combo.currentData() == key:
            return
        qtbot.keyClick(combo, step)
    assert combo.currentData() == key


def test_values_reach_the_config(qtbot):
    from lora_studio.ui.variants_panel import VariantsPanel

    w = VariantsPanel(RunConfig())
    qtbot.addWidget(w)
    w.resize(420, w.sizeHint().height())
    w.show()
    assert w.loraplus.text() == "off" and not w.dora.isChecked()
    w.loraplus.lineEdit().selectAll()
    with qtbot.waitSignal(w.changed):
        qtbot.keyClicks(w.loraplus.lineEdit(), "16")
    qtbot.mouseClick(w.dora, Qt.LeftButton, pos=QPoint(8, w.dora.height() // 2))
    pick(qtbot, w.quantize, "nf4")
    pick(qtbot, w.optimizer, "paged_adamw")
    cfg = w.apply(RunConfig())
    assert cfg.train.loraplus_ratio == 16.0
    assert cfg.lora.dora is True
    assert cfg.model.quantize == "nf4"
    assert cfg.train.optimizer == "paged_adamw"
    # DoRA on: PiSSA and OLoRA cannot be chosen
    inits = w.init.model()
    assert [inits.item(i).isEnabled() for i in range(w.init.count())] == [True, True, False, False]
    if os.environ.get("LORA_STUDIO_SHOTS"):
        w.grab().save(os.path.join(os.environ["LORA_STUDIO_SHOTS"], "variants.png"))


def test_pissa_disables_dora_and_round_trips(qtbot):
    from lora_studio.ui.variants_panel import VariantsPanel

    w = VariantsPanel()
    qtbot.addWidget(w)
    seen = RunConfig().replace(lora={"init": "olora"}, train={"optimizer": "adamw8bit", "loraplus_ratio": 4.0},
                               model={"quantize": "int8"})
    w.set_config(seen)
    assert not w.dora.isEnabled()
    assert w.apply(RunConfig()).to_dict() == seen.to_dict()
    pick(qtbot, w.init, "gaussian")
    assert w.dora.isEnabled()
    assert w.apply(RunConfig()).lora.init == "gaussian"
