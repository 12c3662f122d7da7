"""The CUDA paths of :class:`~napari_segloss.inference.Segmenter` (``pytest -m cuda``, skipped
without a GPU; ``benchmarks/gpu_check.sh`` runs them): CPU/GPU agreement, autocast and
channels-last, the CUDA out-of-memory fallback forced by a small memory budget. The unmarked
tests check ``gpu_check.sh`` and ``bench_gpu.py`` on the CPU (syntax, the no-CUDA exit, one
smoke run of every figure)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_segloss.inference import Segmenter, _amp_dtype, predict

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _scan(shape, seed=0):
    from napari_segloss.data import generate_slice

    rng = np.random.default_rng(seed)
    base = generate_slice(seed, shape[-2:]).image.astype(np.float32)
    if len(shape) == 3:
        base = np.stack([base * (1 + 0.02 * k) + rng.normal(0, 5, base.shape) for k in range(shape[0])])
    return np.clip(base, 0, 65535).astype(np.uint16)


@pytest.fixture
def card(tiny_checkpoint_dir):
    return tiny_checkpoint_dir / "tiny_dice.json"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("shape", [(256, 256), (200, 311), (5, 240, 240)])
def test_cuda_agrees_with_cpu_on_slices_and_volumes(card, shape):
    image = _scan(shape)
    cpu = predict(image, Segmenter.load(card, device="cpu", backend="torch"), resample=False).probability
    gpu = predict(image, Segmenter.load(card, device="cuda"), resample=False).probability
    assert gpu.shape == cpu.shape == shape and gpu.dtype == np.float32
    assert np.abs(gpu - cpu).max() < 2e-2  # bf16/fp16 autocast
    assert np.mean((gpu >= 0.5) == (cpu >= 0.5)) > 0.99


@pytest.mark.cuda
@needs_cuda
def test_cuda_runs_channels_last_under_autocast(card):
    segmenter = Segmenter.load(card, device="cuda")
    assert segmenter.backend is None  # GPUs keep torch
    amp = _amp_dtype(segmenter.device)
    assert amp == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    seen = []
    conv = [m for m in segmenter.model.modules() if isinstance(m, torch.nn.Conv2d)][1]  # C > 1: layout visible
    handle = conv.register_forward_hook(lambda module, args, out: seen.append((args[0].is_contiguous(memory_format=torch.channels_last), out.dtype)))
    try:
        logits = segmenter.logits(segmenter.prepare(_scan((256, 256)))[0])
    finally:
        handle.remove()
    assert seen and seen[0] == (True, amp)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()


@pytest.mark.cuda
@needs_cuda
def test_cuda_out_of_memory_falls_back_to_the_cpu(card):
    """A real OOM: the process may use ~64 MiB of the GPU, one batch of 16 512² slices needs ~1 GiB."""
    volume = _scan((16, 512, 512))
    expected = predict(volume, Segmenter.load(card, device="cpu", backend="torch"), resample=False).probability
    segmenter = Segmenter.load(card, device="cuda", budget_bytes=2**34)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(64 * 2**20 / total)
    try:
        with pytest.warns(RuntimeWarning, match="out of memory"):
            result = predict(volume, segmenter, resample=False)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert result.metadata["device"] == "cpu" and segmenter.device.type == "cpu"
    np.testing.assert_allclose(result.probability, expected, atol=1e-5)


def test_gpu_check_script_is_valid_bash():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", str(SCRIPT)], check=True, timeout=30)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_gpu_check_without_cuda_exits_cleanly_with_the_flag_and_fails_without():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), "--allow-no-cuda"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1 and "no CUDA device" in done.stderr


def test_bench_gpu_smoke_runs_every_figure_on_the_cpu(tiny_registry):
    """The figure code that will run on the GPU, once on the CPU at small sizes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NAPARI_SEGLOSS_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--smoke"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for figure in ("slices/s at 64²", "volume 4x64x64", "tiny_dice", "tiny_focal", "tiny_bce", "peak memory"):
        assert figure in out, out
