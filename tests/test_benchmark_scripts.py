"""The training and widget benchmarks run (one short pass each, in a fresh process): they print
figures for people to read, so only that they run and print every figure is checked, never a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _run(*args: str, timeout: int = 300) -> str:
    env = dict(os.environ, NAPARI_SEGLOSS_THREADS="1")
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_training_benchmark_prints_every_configuration_and_option():
    out = _run(str(BENCHMARKS / "bench_training.py"), "--steps", "1", "--rounds", "1")
    assert "previous (per-sample SciPy, fp32)" in out and "recipe (Augment.batch, fp32)" in out
    assert "speed-up of the recipe's path over the previous one" in out
    out = _run(str(BENCHMARKS / "bench_training.py"), "--alternatives", "--steps", "1")
    for option in ("eager, channels-last (the recipe)", "eager, contiguous", "AdamW(fused=True)"):
        assert option in out


@pytest.mark.gui
def test_widget_benchmark_runs_the_plugin_in_a_fresh_napari():
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs a display (run under xvfb-run, as make test does)")
    figures = json.loads(_run(str(BENCHMARKS / "bench_widget.py"), "--child").strip().splitlines()[-1])
    assert set(figures) == {"import_napari_s", "viewer_s", "dock_s", "first_run_s", "network_s", "second_run_s",
                            "first_run_beyond_network_s"}
    assert 0 < figures["network_s"] < figures["first_run_s"]
