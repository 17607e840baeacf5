"""The self-contained panels wired into the window: LoRA variants, Will it fit?, the Study tab."""

from __future__ import annotations

from PySide6.QtCore import Qt

from lora_studio.config import RunConfig


def pick(qtbot, combo, key):
    combo.setFocus()
    step = Qt.Key_Down if combo.findData(key) > combo.currentIndex() else Qt.Key_Up
    for _ in range(combo.count()):
        if combo.currentData() == key:
            return
        qtbot.keyClick(combo, step)
    assert combo.currentData() == key


def test_variants_reach_the_run_config_and_the_budget(qtbot, window):
    v, s = window.variants, window.session
    qtbot.waitUntil(lambda: s.budget.budget is not None, timeout=30_000)
    before = s.budget.budget
    v.loraplus.setValue(16.0)
    v.dora.setChecked(True)
    pick(qtbot, v.optimizer, "adamw8bit")
    pick(qtbot, v.quantize, "nf4")
    config = s.build()
    assert config.train.loraplus_ratio == 16.0 and config.lora.dora
    assert config.train.optimizer == "adamw8bit" and config.model.quantize == "nf4"
    after = s.budget.budget
    assert after is not before
    # DoRA adds a magnitude per output row: more trainable parameters than the same plain LoRA
    assert after.trainable_params > before.trainable_params
    assert after.memory_lora.weights < before.memory_lora.weights  # an NF4 base
    from lora_studio.engine.budget import estimate

    args = (s.info.skeleton, s.lora_spec(), s.budget_precision(), config.train.batch_size, config.data.max_length,
            config.train.gradient_checkpointing)
    assert after.memory_lora == estimate(*args, quantize="nf4", optimizer="adamw8bit").memory_lora
    assert after.memory_lora != estimate(*args).memory_lora

    # a loaded configuration shows in the panel
    loaded = config.replace(lora={"dora": False, "init": "pissa"}, train={"optimizer": "adamw"},
                            model={"quantize": "none"})
    s.apply_config(loaded)
    assert not v.dora.isChecked() and v.init.currentData() == "pissa" and not v.dora.isEnabled()
    assert v.optimizer.currentData() == "adamw" and v.quantize.currentData() == "none"


def test_fit_panel_follows_the_draft(qtbot, window):
    fit = window.fit
    qtbot.waitUntil(lambda: fit.table.rowCount() > 0, timeout=30_000)
    window.train_settings.batch.setValue(7)
    qtbot.waitUntil(lambda: fit.config is not None and fit.config.train.batch_size == 7, timeout=10_000)
    assert fit.batch.value() == 7


def test_study_tab_takes_the_settings_and_excludes_training(qtbot, window):
    study = window.study
    window.session.set_lora(rank=4)
    window.tabs.setCurrentWidget(study)
    assert isinstance(study.config, RunConfig) and study.config.lora.rank == 4
    assert window.header.start.isEnabled() and study.start_button.isEnabled()

    study.controller.thread = object()  # a sweep in flight, as far as the window can tell
    study.controller.running_changed.emit(True)
    assert not window.header.start.isEnabled() and not window.act_start.isEnabled()
    window.start()
    assert not window.controller.running
    study.controller.thread = None
    study.controller.running_changed.emit(False)
    assert window.header.start.isEnabled()

    window.controller._set_state("running")  # training: the study cannot start
    assert not study.start_button.isEnabled()
    window.controller._set_state("idle")
    assert study.start_button.isEnabled()

    opened = []
    window.files.open_run = opened.append  # what the window's open_run does with the folder
    study.open_run.emit("/some/run")
    assert opened == ["/some/run"]
