"""napari_segloss.overlays: layer arrays, colour table and RGB renderings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib import colormaps
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.draw import disk, polygon2mask
from skimage.segmentation import find_boundaries

from napari_segloss import metrics, overlays


def blob_mask() -> np.ndarray:
    """A disk, a ring with a hole and a rectangle touching the image border."""
    mask = np.zeros((64, 72), dtype=bool)
    mask[disk((20, 22), 11)] = True
    mask[disk((44, 46), 12)] = True
    mask[disk((44, 46), 5)] = False
    mask[0:6, 60:72] = True
    return mask


def test_heatmap_keeps_probabilities() -> None:
    prob = np.array([[0.0, 0.25], [0.999, np.nan]], dtype=np.float64)
    out = overlays.heatmap(prob)
    assert out.dtype == np.float32 and out.shape == prob.shape
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.999, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(overlays.heatmap(np.array([-0.5, 1.5, np.inf])), [0.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="probability"):
        overlays.heatmap(prob > 0.5)
    with pytest.raises(TypeError):
        overlays.heatmap(np.array([0, 255], dtype=np.uint8))


def test_contour_polygons_trace_the_mask_boundary() -> None:
    mask = blob_mask()
    polygons = overlays.contour_polygons(mask)
    assert len(polygons) == 4  # disk, ring outside, ring hole, border rectangle
    filled = np.zeros_like(mask)
    for polygon in polygons:
        assert polygon.ndim == 2 and polygon.shape[1] == 2
        np.testing.assert_array_equal(polygon[0], polygon[-1])  # closed, also at the border
        filled ^= polygon2mask(mask.shape, polygon)  # XOR turns the hole back into background
    assert abs(int(filled.sum()) - int(mask.sum())) <= 0.01 * mask.sum()
    assert (filled & mask).sum() / (filled | mask).sum() > 0.99
    # every vertex lies half-way between an inside and an outside pixel centre
    padded = np.pad(mask, 1)
    for r, c in np.concatenate(polygons) + 1:
        assert sorted([r % 1, c % 1]) == [0.0, 0.5]
        if r % 1:
            pair = padded[int(np.floor(r)), int(c)], padded[int(np.ceil(r)), int(c)]
        else:
            pair = padded[int(r), int(np.floor(c))], padded[int(r), int(np.ceil(c))]
        assert pair[0] != pair[1]


def test_contour_polygons_of_a_probability_map() -> None:
    yy, xx = np.mgrid[:80, :80]
    sigma = 9.0
    prob = np.exp(-((yy - 40.0) ** 2 + (xx - 37.0) ** 2) / (2 * sigma**2))
    (polygon,) = overlays.contour_polygons(prob, level=0.5)
    radii = np.hypot(polygon[:, 0] - 40.0, polygon[:, 1] - 37.0)
    np.testing.assert_allclose(radii, sigma * np.sqrt(2 * np.log(2)), atol=0.05)
    assert overlays.contour_polygons(prob, level=1.5) == []
    assert overlays.contour_polygons(np.zeros((8, 8), dtype=bool)) == []


def test_contour_polygons_3d_carry_the_slice_index() -> None:
    volume = np.zeros((4, 64, 72), dtype=bool)
    volume[1] = blob_mask()
    volume[3, 10:20, 10:20] = True
    polygons = overlays.contour_polygons(volume)
    assert all(p.shape[1] == 3 for p in polygons)
    assert sorted({float(p[0, 0]) for p in polygons}) == [1.0, 3.0]
    assert all(np.all(p[:, 0] == p[0, 0]) for p in polygons)
    in_slice_1 = [p[:, 1:] for p in polygons if p[0, 0] == 1.0]
    for ours, planar in zip(in_slice_1, overlays.contour_polygons(volume[1]), strict=True):
        np.testing.assert_array_equal(ours, planar)
    with pytest.raises(ValueError, match="2D"):
        overlays.contour_polygons(np.zeros(5))


def test_contour_labels_are_a_thin_inner_outline() -> None:
    mask = blob_mask()
    labels = overlays.contour_labels(mask)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    assert not np.any(labels.astype(bool) & ~mask)
    away_from_border = mask.copy()
    away_from_border[0:6, 60:72] = False
    np.testing.assert_array_equal(
        overlays.contour_labels(away_from_border).astype(bool),
        find_boundaries(away_from_border, connectivity=1, mode="inner"),
    )
    assert labels[0, 65] == 1 and labels[5, 65] == 1  # the border rectangle is outlined on the edge
    cube = np.zeros((5, 12, 12), dtype=bool)
    cube[1:4, 2:10, 2:10] = True
    stacked = overlays.contour_labels(cube)
    for z in range(5):  # per-slice outlines: the cube's top slice is a ring, not a filled face
        np.testing.assert_array_equal(stacked[z], overlays.contour_labels(cube[z]))
    assert stacked[1].sum() == 28


def test_difference_map_matches_metric_counts() -> None:
    rng = np.random.default_rng(2)
    pred, truth = rng.random((20, 30)) > 0.6, rng.random((20, 30)) > 0.5
    diff = overlays.difference_map(pred, truth)
    assert diff.dtype == np.uint8 and diff.shape == pred.shape
    counts = metrics.compute(pred, truth)
    assert [(diff == v).sum() for v in (0, 1, 2, 3)] == [counts[k] for k in ("tn", "tp", "fp", "fn")]
    assert np.all(diff[pred & truth] == 1) and np.all(diff[pred & ~truth] == 2) and np.all(diff[~pred & truth] == 3)
    with pytest.raises(ValueError, match="shape"):
        overlays.difference_map(pred, truth[:, :10])


# Machado, Oliveira & Fernandes (2009) dichromacy simulation matrices (severity 1.0, linear RGB)
CVD_MATRICES = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def _simulate_lab(rgb: tuple[float, ...], matrix: np.ndarray) -> np.ndarray:
    srgb = np.asarray(rgb[:3], dtype=float)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    seen = np.clip(matrix @ linear, 0.0, 1.0)
    back = np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)
    return rgb2lab(back[None, None, :])[0, 0]


@pytest.mark.parametrize("table", [overlays.DIFFERENCE_COLORS, overlays.CONTOUR_COLORS])
def test_colour_tables_are_colour_blind_safe(table: dict) -> None:
    for colour in table.values():
        assert len(colour) == 4 and colour[3] == 1.0 and all(0.0 <= c <= 1.0 for c in colour)
    for name, matrix in CVD_MATRICES.items():
        labs = [_simulate_lab(c, matrix) for c in table.values()]
        for a, b in itertools.combinations(labs, 2):
            assert deltaE_ciede2000(a, b) > 10.0, name
    assert set(overlays.DIFFERENCE_COLORS) == set(overlays.DIFFERENCE_NAMES) == {1, 2, 3}


def _expected_grey(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image.astype(np.float64), [0.5, 99.5])
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def test_render_heatmap_blends_inferno_over_grey() -> None:
    image = np.tile(np.linspace(100, 3000, 40), (30, 1)).astype(np.uint16)
    levels = np.arange(30 * 40) % 256 / 255.0
    prob = levels.reshape(30, 40).astype(np.float32)
    rgb = overlays.render_heatmap(image, prob, alpha=0.4)
    assert rgb.dtype == np.uint8 and rgb.shape == (30, 40, 3)
    inferno = colormaps["inferno"](prob.astype(np.float64))[..., :3]
    expected = 0.6 * _expected_grey(image)[..., None] + 0.4 * inferno
    assert np.abs(rgb.astype(float) - expected * 255).max() <= 1.0
    volume = np.stack([image, image])
    stacked = overlays.render_heatmap(volume, np.stack([prob, prob[::-1]]), alpha=0.4)
    assert stacked.shape == (2, 30, 40, 3)
    np.testing.assert_array_equal(stacked[0], rgb)
    colour_image = np.repeat(image[..., None], 3, axis=-1)
    assert overlays.render_heatmap(colour_image, prob).shape == (30, 40, 3)
    with pytest.raises(ValueError, match="shape"):
        overlays.render_heatmap(image[:, :20], prob)
    with pytest.raises(TypeError):
        overlays.render_heatmap(image, prob > 0.5)


def test_render_contours_paints_outlines_only() -> None:
    image = np.random.default_rng(0).integers(0, 4000, (64, 72)).astype(np.uint16)
    pred = blob_mask()
    truth = np.roll(pred, 3, axis=1)
    rgb = overlays.render_contours(image, pred, truth)
    pred_line = overlays.contour_labels(pred).astype(bool)
    truth_line = overlays.contour_labels(truth).astype(bool) & ~pred_line
    colour = {k: np.rint(np.array(v[:3]) * 255) for k, v in overlays.CONTOUR_COLORS.items()}
    assert np.all(rgb[pred_line] == colour["prediction"])
    assert np.all(rgb[truth_line] == colour["truth"])
    rest = rgb[~(pred_line | truth_line)]
    assert np.all((rest[:, 0] == rest[:, 1]) & (rest[:, 1] == rest[:, 2]))  # untouched grey
    only_pred = overlays.render_contours(image, pred)
    assert not np.any(np.all(only_pred == colour["truth"], axis=-1))
    volume = overlays.render_contours(np.stack([image] * 3), np.stack([pred, truth, pred]))
    assert volume.shape == (3, 64, 72, 3) and volume.dtype == np.uint8


def test_render_difference_uses_the_colour_table() -> None:
    image = np.full((8, 12), 500, dtype=np.uint16)
    image[0, 0] = 0
    image[-1, -1] = 1000
    pred, truth = np.zeros((8, 12), bool), np.zeros((8, 12), bool)
    pred[2:5, 2:8] = True
    truth[2:5, 5:11] = True
    diff = overlays.difference_map(pred, truth)
    rgb = overlays.render_difference(image, diff, alpha=1.0)
    for value, colour in overlays.DIFFERENCE_COLORS.items():
        assert np.all(rgb[diff == value] == np.rint(np.array(colour[:3]) * 255)), overlays.DIFFERENCE_NAMES[value]
    background = rgb[diff == 0]
    assert np.all((background[:, 0] == background[:, 1]) & (background[:, 1] == background[:, 2]))
    half = overlays.render_difference(image, diff, alpha=0.5)
    grey = _expected_grey(image)[3, 6]  # a TP pixel
    expected_tp = 0.5 * grey + 0.5 * np.array(overlays.DIFFERENCE_COLORS[1][:3])
    assert diff[3, 6] == 1 and np.abs(half[3, 6].astype(float) - expected_tp * 255).max() <= 1.0
    assert overlays.render_difference(np.stack([image] * 2), np.stack([diff] * 2)).shape == (2, 8, 12, 3)
    with pytest.raises(ValueError, match="0..3"):
        overlays.render_difference(image, diff + 4)
