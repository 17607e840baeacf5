"""The packing toggle beside the batch size, and the padding share under the throughput."""

from __future__ import annotations

import pytest

from lora_studio.engine import UserError
from lora_studio.engine.events import Step


def test_pack_toggle_reaches_the_config_and_is_off_for_classification(qtbot, window):
    s, box = window.session, window.train_settings.packing
    assert not box.isChecked() and not s.draft.train.packing
    assert not box.isEnabled()  # the window's model classifies: an example is one label, nothing to pack
    s.set_train(packing=True)  # as a configuration file may say
    assert box.isChecked() and box.isEnabled()  # so that it can be unticked
    with pytest.raises(UserError, match="packing is for causal-LM and preference training"):
        s.build()
    box.click()
    config = s.build()
    assert not config.train.packing and not box.isEnabled()
    s.apply_config(config.replace(model={"task": "causal-lm"}, train={"packing": True}))
    assert box.isChecked() and box.isEnabled()
    box.click()
    assert not s.draft.train.packing and "examples per step" in window.train_settings.effective.text()


def test_throughput_card_shows_the_padding_share(qtbot, window):
    view = window.training
    view._stepped(Step(step=1, total_steps=4, epoch=0.1, loss=2.0, lr=1e-3, grad_norm=1.0, tokens_per_s=1234.0,
                       elapsed=1.0, eta=3.0, mem_allocated=0, mem_peak=0, padding=0.375))
    view._refresh()
    assert view.speed.value.text() == "1,234 tok/s"
    assert view.speed.sub.text().startswith("38% padding")
