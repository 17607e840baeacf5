"""benchmarks/bench_chat_demo.py --quick: every engine runs in its own process and its results hold
every field with sane values (no time is asserted: speed is measured, never tested)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("ours", "ours-packed", "trl", "trl-packed")
FIELDS = ("load_s", "train_s", "step_s", "tokens_per_s", "examples_per_step", "peak_rss_mib", "lrs", "heldout")


@pytest.mark.slow
def test_quick_run_reports_every_engine(smollm2_dir, tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "bench"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_chat_demo.py"), "--quick", "--model", smollm2_dir,
                    "--out", str(out)], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    r = json.loads((out / "results.json").read_text())
    assert set(r["engines"]) == set(ENGINES) and r["quick"]
    for name, e in r["engines"].items():
        assert all(k in e for k in FIELDS), (name, sorted(e))
        assert e["steps"] == 2 and e["tokens"] > 0 and e["peak_rss_mib"] > 0
        assert e["lrs"] == r["engines"]["ours"]["lrs"]  # the same learning rate at every step
        h = e["heldout"]
        assert math.isfinite(h["loss"]) and h["loss"] > 0
        assert 0 <= h["style"] <= 1 and 0 <= h["stopped"] <= 1 and h["n"] == 2
    # the same examples in the same steps: LoRA Studio packed holds the padded run's examples and tokens
    ours, packed = r["engines"]["ours"], r["engines"]["ours-packed"]
    assert packed["examples_per_step"] == ours["examples_per_step"] == 8 and packed["tokens"] == ours["tokens"]
    assert r["engines"]["trl-packed"]["examples_per_step"] > 8  # bfd fills rows of 128 tokens across examples
    assert 0 <= r["engines"]["trl-packed"]["packed_max_diff"] < math.inf  # measured, not judged here
    assert r["base_same_everywhere"] and math.isfinite(r["base"]["loss"])
