"""The benchmark's baseline (benchmarks/seed_baseline.py): the seed tool's network and per-image path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck
from torchvision.models.resnet import ResNet

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_baseline.py"


@pytest.fixture(scope="module")
def seed():
    spec = importlib.util.spec_from_file_location("seed_baseline", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def model(seed):
    return seed.build_seed_model()


def test_parameter_count_is_the_seeds_15_5_million(seed, model):
    count = seed.count_parameters(model)
    assert count == seed.SEED_PARAMETERS
    assert 15.4e6 < count < 15.6e6


def test_trunk_matches_torchvision_bottleneck_resnet(seed, model):
    """Independent check of the four stages: torchvision's ResNet with Bottleneck [2, 2, 2, 2]."""
    reference = ResNet(TorchvisionBottleneck, [2, 2, 2, 2])
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        ours = [tuple(p.shape) for p in getattr(model, stage).parameters()]
        theirs = [tuple(p.shape) for p in getattr(reference, stage).parameters()]
        assert sorted(ours) == sorted(theirs), stage
    head = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[0] in ("laterals", "smooth", "head"))
    assert head == (256 + 512 + 1024 + 2048) * 256 + 4 * 256 + 256 * 256 * 9 + 256 + 256 + 1


def test_forward_returns_logits_at_input_size(model):
    with torch.no_grad():
        out = model(torch.randn(2, 1, 96, 128))
    assert out.shape == (2, 1, 96, 128) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_preprocess_is_grey_256_and_normalised(seed):
    image = np.tile(np.linspace(0, 4095, 300, dtype=np.float32), (200, 1)).astype(np.uint16)
    x = seed.preprocess(image)
    assert x.shape == (1, 1, 256, 256) and x.dtype == torch.float32
    assert x.min() == pytest.approx(-1.0, abs=0.02) and x.max() == pytest.approx(1.0, abs=0.02)
    rgb = np.stack([seed.to_8bit(image)] * 3, axis=-1)
    torch.testing.assert_close(seed.preprocess(rgb), x, atol=1 / 127.5, rtol=0)


def test_run_image_gives_input_sized_outputs_and_seed_scores(seed, model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, (120, 90), dtype=np.uint16)
    truth = np.zeros((120, 90), dtype=bool)
    truth[30:70, 20:60] = True
    result = seed.run_image(model, image, truth)
    assert result.probability.shape == (120, 90) and result.probability.dtype == np.float32
    assert 0.0 <= result.probability.min() and result.probability.max() <= 1.0
    np.testing.assert_array_equal(result.mask, result.probability >= 0.5)
    inter = (result.mask & truth).sum()
    assert result.dice == pytest.approx(2 * inter / (result.mask.sum() + truth.sum()))
    assert result.iou == pytest.approx(inter / (result.mask | truth).sum())
    assert set(result.overlays) == {"heatmap", "contours", "difference"}
    for rgb in result.overlays.values():
        assert rgb.shape == (120, 90, 3) and rgb.dtype == np.uint8


def test_contour_overlay_paints_the_inner_8_connected_boundary(seed):
    """Cross-check with SciPy: the outline is the mask minus its 3x3 erosion (cv2.findContours' pixels)."""
    from PIL import Image
    from scipy import ndimage

    image = Image.fromarray(np.full((40, 50), 100, dtype=np.uint8)).convert("RGB")
    truth = np.zeros((40, 50), dtype=bool)
    truth[10:30, 5:25] = True
    truth[15:20, 12:18] = False  # a hole has an outline too
    pred = np.zeros_like(truth)
    pred[5:15, 30:45] = True
    out = seed.contour_overlay(image, pred, truth)
    for mask, colour in ((truth, (0, 255, 0)), (pred, (255, 0, 0))):
        outline = mask & ~ndimage.binary_erosion(mask, structure=np.ones((3, 3)))
        assert np.all(out[outline] == colour)
        assert np.all(out[mask & ~outline] == 100)
    assert np.all(out[~truth & ~pred] == 100)
