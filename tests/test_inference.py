"""Inference engine (napari_segloss.inference): shapes, padding, batching, progress, cancel, devices."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_segloss import inference
from napari_segloss.checkpoints import ModelCard, load, save_checkpoint
from napari_segloss.inference import InferenceCancelled, batch_size_for, batches, padding_for, predict
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model
from napari_segloss.preprocess import normalize, to_grayscale


def _image(shape, seed=0):
    """A bright disc on a noisy 12-bit background: gives the random network structure to react to."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape[-2:]).astype(np.float32)
    centre = np.array(shape[-2:], dtype=np.float32)[:, None, None] / 2
    disc = (((grid - centre) ** 2).sum(0) < (min(shape[-2:]) / 4) ** 2).astype(np.float32)
    image = 400 + 2500 * disc + rng.normal(0, 150, shape)
    return np.clip(image, 0, 4095).astype(np.uint16)


def _reference(model, normalised):
    """Independent path for a normalised (H, W) slice (H, W >= 64): torch reflect-pad to a multiple
    of 32, forward, sigmoid, crop."""
    height, width = normalised.shape
    pad_h, pad_w = -height % 32, -width % 32
    top, left = pad_h // 2, pad_w // 2
    x = torch.from_numpy(normalised).float()[None, None]
    x = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="reflect")
    with torch.no_grad():
        prob = torch.sigmoid(model(x))[0, 0]
    return prob[top : top + height, left : left + width].numpy()


@pytest.fixture
def tiny(tiny_checkpoint_dir):
    return load(tiny_checkpoint_dir / "tiny_dice.json")


@pytest.mark.parametrize("shape", [(64, 64), (100, 77), (65, 97)])
def test_2d_matches_independent_pad_forward_crop(tiny, shape):
    image = _image(shape)
    result = predict(image, tiny, device="cpu")
    assert result.probability.shape == shape and result.probability.dtype == np.float32
    assert 0.0 <= result.probability.min() and result.probability.max() <= 1.0
    expected = _reference(tiny.model, normalize(image, tiny.card.normalization))
    np.testing.assert_allclose(result.probability, expected, atol=1e-5)
    assert result.checkpoint == "tiny_dice" and result.metadata["weights_sha256"] == tiny.card.weights_sha256


def test_tiny_and_single_pixel_axes_keep_their_shape(tiny):
    for shape in [(9, 20), (1, 40), (5, 1, 7)]:
        assert predict(_image(shape), tiny, device="cpu").probability.shape == shape


def test_padding_and_batch_plan():
    assert padding_for(64) == (0, 0)
    assert padding_for(77) == (9, 10)  # 77 -> 96, split around the image
    assert padding_for(1) == (31, 32)  # at least 64: the FPN's coarsest GroupNorm needs 2x2
    assert padding_for(33) == (15, 16)
    assert sum(padding_for(100)) + 100 == 128
    assert batch_size_for(512, 512, budget_bytes=512 * 2**20) == 8  # 256 B/pixel * 512^2 = 64 MiB/slice
    assert batch_size_for(512, 512, budget_bytes=1) == 1  # a slice over budget still runs alone
    assert batch_size_for(64, 64) == inference.MAX_BATCH
    assert batches(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    with pytest.raises(ValueError):
        batches(5, 0)


def test_3d_runs_slices_in_batches_and_reports_progress(tiny, monkeypatch):
    volume = np.stack([_image((48, 40), seed=s) for s in range(5)])
    whole = predict(volume, tiny, device="cpu").probability
    budget = 2 * 64 * 64 * inference.ACTIVATION_BYTES_PER_PIXEL  # two padded 64x64 slices
    monkeypatch.setattr(inference, "DEFAULT_BUDGET_BYTES", budget)
    calls = []
    result = predict(volume, tiny, device="cpu", spacing=(3.0, 0.5, 0.5), resample=False,
                     progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert result.probability.shape == (5, 48, 40) and result.spacing == (3.0, 0.5, 0.5)
    np.testing.assert_allclose(result.probability, whole, atol=1e-5)


def test_3d_is_normalised_per_volume_then_run_per_slice(tiny):
    volume = np.stack([_image((70, 66), seed=s) * (s + 1) for s in range(3)])
    result = predict(volume, tiny, device="cpu").probability
    normalised = normalize(volume, tiny.card.normalization)  # one intensity scale for the volume
    for k in range(3):
        np.testing.assert_allclose(result[k], _reference(tiny.model, normalised[k]), atol=1e-5)


def test_rgb_and_rgba_are_converted_to_grey(tiny):
    grey = _image((60, 45)).astype(np.float32) / 16
    rgb = np.stack([grey * 0.9, grey, grey * 1.1], axis=-1).clip(0, 255).astype(np.uint8)
    expected = predict(to_grayscale(rgb), tiny, device="cpu").probability
    np.testing.assert_allclose(predict(rgb, tiny, device="cpu").probability, expected, atol=1e-6)
    rgba = np.concatenate([rgb, np.full((60, 45, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_allclose(predict(rgba, tiny, device="cpu").probability, expected, atol=1e-6)
    volume = np.stack([rgb, rgb[::-1]])
    expected = predict(to_grayscale(volume), tiny, device="cpu").probability
    np.testing.assert_allclose(predict(volume, tiny, device="cpu").probability, expected, atol=1e-6)
    assert expected.shape == (2, 60, 45)


def test_multichannel_checkpoint_keeps_or_replicates_channels(tmp_path):
    arch = {**DEFAULT_ARCHITECTURE, "in_channels": 3}
    torch.manual_seed(5)
    save_checkpoint(build_model(arch), ModelCard(name="rgb", loss="bce", architecture=arch, input_channels=3), tmp_path)
    loaded = load(tmp_path / "rgb.json")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    x = torch.from_numpy(normalize(rgb, loaded.card.normalization)).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = torch.sigmoid(loaded.model(x))[0, 0].numpy()
    np.testing.assert_allclose(predict(rgb, loaded, device="cpu").probability, expected, atol=1e-5)
    grey = rgb[..., 0]
    x = torch.from_numpy(normalize(grey, loaded.card.normalization)).float()[None, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.sigmoid(loaded.model(x))[0, 0].numpy()
    np.testing.assert_allclose(predict(grey, loaded, device="cpu").probability, expected, atol=1e-5)


def test_intensity_scale_does_not_matter_after_percentile_normalisation(tiny):
    image = _image((64, 48)).astype(np.float32)
    a = predict(image, tiny, device="cpu").probability
    b = predict(image * 7.5 - 300.0, tiny, device="cpu").probability  # e.g. CT-like rescale
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_cpu_is_deterministic_and_accepts_name_or_path(tiny_registry):
    image = _image((90, 70), seed=3)
    first = predict(image, "tiny_focal", device="cpu").probability
    second = predict(image, tiny_registry / "tiny_focal.json", device="cpu").probability
    assert np.array_equal(first, second)
    other = predict(image, "tiny_bce", device="cpu").probability
    assert not np.allclose(first, other)  # different weights, different output


def test_cancel_between_batches(tiny, monkeypatch):
    monkeypatch.setattr(inference, "DEFAULT_BUDGET_BYTES", 64 * 64 * inference.ACTIVATION_BYTES_PER_PIXEL)
    volume = np.stack([_image((64, 64), seed=s) for s in range(4)])
    calls = []
    with pytest.raises(InferenceCancelled):
        predict(volume, tiny, device="cpu", progress=lambda d, t: calls.append(d), cancel=lambda: len(calls) >= 2)
    assert calls == [0, 1]  # one batch ran, then the cancel request was honoured
    with pytest.raises(InferenceCancelled):
        predict(volume, tiny, device="cpu", cancel=lambda: True)


def test_mask_threshold_after_the_fact(tiny):
    result = predict(_image((64, 64)), tiny, device="cpu")
    prob = result.probability
    assert np.array_equal(result.mask(), prob >= 0.5)
    low, high = np.quantile(prob, [0.25, 0.75])
    assert result.mask(low).sum() > result.mask(high).sum()
    assert np.all(result.mask(high) <= result.mask(low))
    assert result.mask(0.0).all() and result.mask().dtype == bool
    with pytest.raises(ValueError):
        result.mask(1.5)


@pytest.mark.parametrize(
    "image, kwargs, message",
    [
        (np.zeros(10), {}, "image must be"),
        (np.zeros((2, 2, 8, 8, 5)), {}, "image must be"),
        (np.zeros((0, 8)), {}, "empty"),
        (np.zeros((8, 8)), {"spacing": (1.0, 1.0, 1.0)}, "spacing"),
        (np.zeros((8, 8)), {"spacing": (1.0, -1.0)}, "spacing"),
        (np.zeros((8, 8)), {"device": "tpu"}, "device"),
    ],
)
def test_invalid_inputs_are_value_errors(tiny, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict(image, tiny, **kwargs)


def test_resampling_to_the_card_pixel_size(tiny, monkeypatch):
    image = _image((3, 80, 96))
    plain = predict(image, tiny)
    same = predict(image, tiny, spacing=(2.0, 1.0, 1.0), resample=True)  # the card's 1 mm already
    np.testing.assert_allclose(same.probability, plain.probability, atol=1e-6)
    assert same.metadata["resampled_to_mm"] == [1.0, 1.0] and plain.metadata["resampled_to_mm"] is None
    assert inference.resampled_size((80, 96), (0.5, 2.0), (1.0, 1.0)) == (40, 192)
    assert inference.pixel_size_ratio((3.0, 0.5, 0.5), (1.0, 1.0)) == pytest.approx(0.5)
    assert inference.pixel_size_ratio((0.5, 2.0), (1.0, 1.0)) == pytest.approx(1.0)  # geometric mean
    assert inference.pixel_size_ratio(None, (1.0, 1.0)) is None and inference.pixel_size_ratio((1.0, 1.0), None) is None
    calls = []
    real_forward = inference._forward_batch
    monkeypatch.setattr(inference, "_forward_batch",
                        lambda model, batch, device: calls.append(batch.shape) or real_forward(model, batch, device))
    half = predict(image, tiny, spacing=(2.0, 0.5, 0.5), resample=True)
    assert calls and all(shape[-2:] == (40, 48) for shape in calls)  # the network saw 1 mm pixels
    assert half.probability.shape == image.shape and 0 <= half.probability.min() <= half.probability.max() <= 1


def test_gpu_oom_falls_back_to_cpu(tiny, monkeypatch):
    """Simulated: the accelerator raises CUDA OOM on every batch; the run finishes on the CPU."""
    real_forward = inference._forward_batch
    accelerator = torch.device("meta")

    def forward(model, batch, device):
        if device == accelerator:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(model, batch, device)

    monkeypatch.setattr(inference, "resolve_device", lambda device: accelerator)
    monkeypatch.setattr(inference, "_prepared", lambda checkpoint, device: tiny)
    monkeypatch.setattr(inference, "_forward_batch", forward)
    image = _image((64, 64))
    with pytest.warns(RuntimeWarning, match="out of memory"):
        result = predict(image, tiny, device="cuda")
    assert result.metadata["device"] == "cpu"
    logits = real_forward(tiny.model, normalize(image).astype(np.float32)[None, None], torch.device("cpu"))[0]
    np.testing.assert_allclose(result.probability, torch.sigmoid(torch.from_numpy(logits)).numpy())


def test_volume_memory_is_bounded_by_the_batch_budget(tiny_checkpoint_dir):
    """Peak memory of a 3D run follows the batch budget, not the number of slices.

    Fresh process, budget of two 256x256 slices (about 34 MB of activations), 24 slices: run
    unbatched, the run takes about 150 MB. The 155x512x512 figure
    (default budget) is measured by benchmarks/bench_inference.py.
    """
    script = textwrap.dedent(
        f"""
        import json, resource, numpy as np, torch
        from napari_segloss import inference
        from napari_segloss.checkpoints import load
        torch.set_num_threads(1)
        inference.DEFAULT_BUDGET_BYTES = 2 * 256 * 256 * inference.ACTIVATION_BYTES_PER_PIXEL
        loaded = load({str(tiny_checkpoint_dir / "tiny_bce.json")!r})
        inference.predict(np.zeros((2, 256, 256), np.uint16), loaded, device="cpu")
        volume = np.random.default_rng(0).integers(0, 4096, (24, 256, 256), dtype=np.uint16)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        probability = inference.predict(volume, loaded, device="cpu").probability
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"delta_mb": (after - before) / 1024, "shape": probability.shape}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["shape"] == [24, 256, 256]
    assert report["delta_mb"] < 75, report  # measured: ~18 MB batched, ~147 MB unbatched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu(tiny):
    image = _image((100, 77))
    cpu = predict(image, tiny, device="cpu").probability
    gpu = predict(image, tiny, device="cuda").probability
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    assert np.abs(gpu - cpu).max() < 2e-2  # bf16/fp16 autocast
    assert np.mean((gpu >= 0.5) == (cpu >= 0.5)) > 0.99

