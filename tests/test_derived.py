"""napari_segloss.derived: masks, outlines, difference maps and metrics of a probability map at a
threshold, checked against plain numpy/scipy; the module's doctests."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import ndimage

from napari_segloss import derived
from napari_segloss.derived import agreement, derive, disagreement, slice_metrics


def _pair(shape=(3, 24, 20), seed=0):
    rng = np.random.default_rng(seed)
    probability = rng.random(shape).astype(np.float32)
    probability = ndimage.uniform_filter(probability, 5)  # blobs, not salt-and-pepper
    truth = probability > np.quantile(probability, 0.7)
    return probability, np.roll(truth, 2, axis=-1)


def test_doctests() -> None:
    failed, attempted = doctest.testmod(derived)
    assert attempted >= 3 and failed == 0


@pytest.mark.parametrize("threshold", [0.0, 0.45, 0.5, 1.0])
def test_derive_against_numpy(threshold: float) -> None:
    probability, truth = _pair()
    out = derive(probability, truth, (2.0, 0.5, 0.5), threshold)
    mask = probability >= threshold
    assert out.threshold == threshold and out.mask.dtype == np.uint8 and np.array_equal(out.mask, mask)
    expected = np.zeros(mask.shape, np.uint8)
    expected[mask & truth], expected[mask & ~truth], expected[~mask & truth] = 1, 2, 3
    assert np.array_equal(out.difference, expected)
    for plane, outline in zip(mask, out.contour):  # one-pixel inner outline, slice by slice
        assert np.array_equal(outline != 0, plane & ~ndimage.binary_erosion(plane, border_value=0))
    tp, fp, fn = (mask & truth).sum(), (mask & ~truth).sum(), (~mask & truth).sum()
    dice = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    assert out.metrics["dice"] == pytest.approx(dice, nan_ok=True)
    assert out.metrics["volume_pred"] == pytest.approx(mask.sum() * 2.0 * 0.5 * 0.5)


def test_derive_without_truth_or_outline_and_bad_thresholds() -> None:
    probability, truth = _pair((16, 16))
    bare = derive(probability, None, None, 0.5)
    assert bare.difference is None and bare.metrics is None and bare.contour is not None
    assert derive(probability, truth, None, 0.5, outline=False).contour is None
    # the NSD tolerance reaches the metrics: the shifted truth scores higher with a looser tolerance
    tight, loose = (derive(probability, truth, None, 0.5, tolerance_mm=t).metrics["nsd"] for t in (0.0, 3.0))
    assert loose > tight
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
            derive(probability, truth, None, bad)


def test_slice_metrics_score_one_plane() -> None:
    probability, truth = _pair((4, 18, 22))
    mask = probability >= 0.5
    for axis, index in ((0, 2), (2, 7)):
        values = slice_metrics(mask, truth, (3.0, 0.5, 0.25), axis, index)
        plane_mask, plane_truth = np.take(mask, index, axis), np.take(truth, index, axis)
        pixel_area = {0: 0.5 * 0.25, 2: 3.0 * 0.5}[axis]
        assert values["volume_pred"] == pytest.approx(plane_mask.sum() * pixel_area)
        assert values["volume_truth"] == pytest.approx(plane_truth.sum() * pixel_area)
    unknown = slice_metrics(mask, truth, None, 0, 1)  # pixel size unknown: areas in pixels
    assert unknown["volume_pred"] == pytest.approx(mask[1].sum())


def test_agreement_and_disagreement() -> None:
    rng = np.random.default_rng(3)
    masks = [rng.random((5, 6)) > 0.5 for _ in range(4)]
    fraction = agreement(masks)
    assert fraction.dtype == np.float32 and np.allclose(fraction, np.mean(masks, axis=0))
    assert np.array_equal(disagreement(fraction), (np.any(masks, axis=0) & ~np.all(masks, axis=0)).astype(np.uint8))
    with pytest.raises(ValueError, match="at least one mask"):
        agreement([])
