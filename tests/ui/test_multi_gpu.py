"""Several processes from the GUI: the Devices choice, the cluster command, and a 2-process run
(gloo on the CPU, forced by LORA_STUDIO_GUI_NPROC) followed through its run folder and stopped."""

from __future__ import annotations

import dataclasses
import math

from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication

from gui_helpers import make_draft, open_window, shut
from lora_studio.config import RunConfig


def test_devices_choice_shows_with_two_gpus(qtbot, window, monkeypatch):
    from lora_studio.ui.probes import Device

    monkeypatch.delenv("LORA_STUDIO_GUI_NPROC", raising=False)
    ts = window.train_settings
    assert not ts.form.isRowVisible(ts.devices) and ts.nproc() == 1
    info = dataclasses.replace(window.session.info, devices=[Device("cuda:0", "GPU 0"), Device("cuda:1", "GPU 1"),
                                                             Device("cpu", "CPU")])
    ts._devices(info)
    assert ts.form.isRowVisible(ts.devices) and ts.devices.itemText(1) == "All 2 GPUs"
    assert ts.nproc() == 1
    ts.devices.setCurrentIndex(ts.devices.findData("all"))
    assert ts.nproc() == 2
    monkeypatch.setenv("LORA_STUDIO_GUI_NPROC", "3")
    assert ts.nproc() == 3


def test_copy_command_for_a_cluster(qtbot, window, tmp_path, dialogs):
    path = tmp_path / "cluster.toml"
    text = window.train_settings.copy_cluster_command(str(path))
    # GUI N15: it says what it copied, and the Slurm run folder is absolute (sbatch runs from anywhere)
    assert dialogs.shown[-1].title == "Command copied" and str(path) in dialogs.shown[-1].text
    runs = str(Path(window.session.draft.out).parent)
    assert f'--out "{runs}/$SLURM_JOB_ID"' in text and "--out runs/" not in text
    assert QGuiApplication.clipboard().text() == text
    assert f"torchrun --standalone --nproc-per-node 1 -m lora_studio train --config {path}" in text
    assert "#SBATCH --nodes=1" in text and f"--config {path}" in text.split("#!/bin/bash")[1]
    assert RunConfig.load(path).to_dict() == window.session.build().to_dict()


@pytest.mark.slow
def test_two_process_run_from_the_gui_shows_curves_and_stops(qtbot, tiny_model, tiny_data, tmp_path, monkeypatch):
    from lora_studio.engine import runfolder

    monkeypatch.setenv("LORA_STUDIO_GUI_NPROC", "2")
    monkeypatch.setenv("LORA_STUDIO_DIST_TIMEOUT", "60")
    out = tmp_path / "run"
    w = open_window(qtbot, make_draft(tiny_model, tiny_data, out, max_steps=400, eval_every=0, save_every=0,
                                      log_every=1))
    try:
        c = w.controller
        w.start()
        assert c.multi and c.state == "starting"
        assert not w.header.pause.isEnabled()
        with qtbot.waitSignal(c.started, timeout=60_000) as started:
            pass
        assert started.args[0].out == str(out) and started.args[0].total_steps == 400
        qtbot.waitUntil(lambda: len(w.training.plots.raw.data()[0]) >= 2, timeout=30_000)
        steps, losses = w.training.plots.raw.data()
        records = [r for r in runfolder.read_metrics(out) if r.get("loss") is not None]
        assert list(steps[:2]) == [r["step"] for r in records[:2]]
        assert all(math.isfinite(x) for x in losses)
        with qtbot.waitSignal(c.finished, timeout=60_000) as finished:
            w.header.stop.click()
        ev = finished.args[0]
        assert not isinstance(ev, Exception) and getattr(ev, "stopped", False), ev
        assert 2 <= ev.step < 400 and c.state == "idle" and not c.multi
        assert runfolder.latest_checkpoint(out) is not None
        assert runfolder.run_state(out)["state"] == "stopped"
    finally:
        shut(w)
