"""The "Will it fit?" table: the user's GPU memory and batch go to engine.fit.will_it_fit, the
table shows its rows, and a run's memory.json shows as estimated vs measured."""

from __future__ import annotations

import json
import os

from PySide6.QtCore import Qt

from lora_studio.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig


def type_into(qtbot, spin, text):
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), text)
    qtbot.keyClick(spin.lineEdit(), Qt.Key_Tab)


def test_table_is_the_engines_estimate(qtbot, tiny_model, tmp_path):
    from lora_studio.engine.fit import will_it_fit
    from lora_studio.engine.models import skeleton
    from lora_studio.ui.fit_panel import COLUMNS, FitPanel

    config = RunConfig(model=ModelConfig(path=str(tiny_model), task="classification"),
                       lora=LoraConfig(targets=["q", "v"], rank=8), data=DataConfig(max_length=64),
                       train=TrainConfig(batch_size=4))
    w = FitPanel(detect=False)
    qtbot.addWidget(w)
    w.resize(420, 480)
    w.show()
    with qtbot.waitSignal(w.computed, timeout=30_000):
        w.set_config(config)
    assert (w.batch.value(), w.seq.value()) == (4, 64)
    # a 1 GB GPU and a batch of 512 x 4096 tokens: not everything fits any more
    with qtbot.waitSignal(w.computed, timeout=30_000) as got:
        type_into(qtbot, w.gpu, "1")
        type_into(qtbot, w.batch, "512")
        type_into(qtbot, w.seq, "4096")
    t = got.args[0]
    assert (t.gpu_bytes, t.batch, t.seq) == (2**30, 512, 4096)
    want = will_it_fit(skeleton(str(tiny_model), "classification"), config.lora.to_spec("classification"),
                       2**30, 512, 4096, "bf16", "adamw")
    assert [(r.quantize, r.checkpointing, r.peak_bytes, r.fits, r.max_batch) for r in t.rows] == \
           [(r.quantize, r.checkpointing, r.peak_bytes, r.fits, r.max_batch) for r in want.rows]
    assert w.table.rowCount() == 6 and w.table.columnCount() == len(COLUMNS)
    shown = [[w.table.item(r, c).text() for c in range(len(COLUMNS))] for r in range(6)]
    assert [row[3] for row in shown] == ["✓" if r.fits else "✗" for r in want.rows]
    assert "✗" in [row[3] for row in shown]  # the case is chosen so that a row does not fit
    assert [row[4] for row in shown] == [str(r.max_batch) if r.max_batch else "–" for r in want.rows]
    assert [row[1] for row in shown] == ["off", "on"] * 3

    run = tmp_path / "run"
    run.mkdir()
    (run / "memory.json").write_text(json.dumps({"estimate_bytes": 3 * 2**20, "measured_peak_bytes": 5 * 2**20,
                                                 "measured_by": "peak RSS of the process"}))
    w.show_run(str(run))
    qtbot.waitUntil(lambda: w.measured.isVisible(), timeout=10_000)
    assert w.measured.text().startswith("This run: peak process memory 5.0 MB (RSS")  # never set against 3.0 MB
    assert "3.0 MB" not in w.measured.text()
    (run / "memory.json").write_text(json.dumps({"estimate_bytes": 3 * 2**20, "measured_peak_bytes": 5 * 2**20,
                                                 "measured_by": "cuda.max_memory_allocated", "batch": 4, "seq": 49}))
    w.show_run(str(run))
    qtbot.waitUntil(lambda: "GPU" in w.measured.text(), timeout=10_000)
    assert w.measured.text() == "This run: peak GPU tensors 5.0 MB · estimated 3.0 MB (batch 4 × 49 tokens, -40 %)"
    if os.environ.get("LORA_STUDIO_SHOTS"):
        w.grab().save(os.path.join(os.environ["LORA_STUDIO_SHOTS"], "fit.png"))
    w.runner.wait_all()


def test_bad_model_says_why(qtbot, tmp_path):
    from lora_studio.ui.fit_panel import FitPanel

    w = FitPanel(detect=False)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.failed, timeout=30_000) as got:
        w.set_config(RunConfig(model=ModelConfig(path=str(tmp_path / "nowhere"))))
    assert got.args[0].message and w.hint.text() == got.args[0].message
    assert w.table.rowCount() == 0
    w.runner.wait_all()


def test_cuda_gpu_is_detected(qtbot):
    import pytest
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the typed GPU memory is used")
    from lora_studio.ui.fit_panel import FitPanel

    w = FitPanel()
    qtbot.addWidget(w)
    total = torch.cuda.get_device_properties(0).total_memory
    qtbot.waitUntil(lambda: not w.gpu.isEnabled(), timeout=30_000)
    assert w.gpu.value() == round(total / 2**30)
    assert w.gpu_name.text().startswith(torch.cuda.get_device_name(0))
    w.runner.wait_all()
