"""Boundary family of the loss catalogue: registry entries, invariants and independent cross-checks.

Cross-checks: MONAI ``BoundaryLoss`` / ``DiceLoss`` / ``HausdorffDTLoss``, torch
``BCEWithLogitsLoss``, brute-force distances, scipy morphology, and the authors' algorithms for
the region-wise map; hand-derived values for Boundary DoU. Tensors stay small (32² / 8x16²).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_segloss.losses import SegLoss, available, build, info
from napari_segloss.losses import _distance as dist
from napari_segloss.losses.boundary import INVERSEFORM_FILE, load_inverse_net
from napari_segloss.paths import weights_dir

BOUNDARY = [
    "boundary",
    "hausdorff_dt",
    "boundary_aware",
    "active_boundary",
    "inverseform",
    "conditional_boundary",
    "boundary_dou",
    "region_wise",
    "shape_aware",
]
USES_TARGET_DIST = ["boundary", "hausdorff_dt", "boundary_aware", "active_boundary", "region_wise", "shape_aware"]
SHAPE = {2: (32, 32), 3: (8, 16, 16)}
KINDS = ["empty", "full", "single", "blob"]


def make_target(kind: str, spatial: tuple[int, ...], shift: int = 0) -> torch.Tensor:
    """(1, 1, *spatial) float target: empty, full, a single pixel or an off-centre disc/ball."""
    y = torch.zeros(1, 1, *spatial)
    if kind == "full":
        y[:] = 1
    elif kind == "single":
        y[(0, 0, *[n // 2 for n in spatial])] = 1
    elif kind == "blob":
        grid = np.indices(spatial).astype(float)
        centre = [0.45 * n for n in spatial]
        centre[-1] += shift
        radii = [max(n / 4, 1.5) for n in spatial]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
        y[0, 0] = torch.from_numpy(inside)
    return y


def batch_of(kinds: list[str], ndim: int) -> torch.Tensor:
    return torch.cat([make_target(k, SHAPE[ndim]) for k in kinds])


def extras_for(name: str, logits: torch.Tensor, seed: int = 0) -> dict:
    """Decoder-like features (B, 8, H/4, W/4) for losses that need them."""
    if name != "conditional_boundary":
        return {}
    gen = torch.Generator().manual_seed(seed)
    b, _, h, w = logits.shape
    features = torch.randn(b, 8, h // 4, w // 4, generator=gen, dtype=logits.dtype)
    return {"features": features.requires_grad_()}


def dims_of(name: str) -> list[int]:
    return sorted(info(name).dims)


CASES = [(n, d) for n in BOUNDARY for d in dims_of(n)]


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------


def test_catalogue_lists_the_boundary_family_in_order() -> None:
    names = [n for n in available() if info(n).family == "boundary"]
    assert names == BOUNDARY


@pytest.mark.parametrize("name", BOUNDARY)
def test_info_is_complete(name: str) -> None:
    meta = info(name)
    assert meta.name == name and meta.family == "boundary"
    assert meta.title and meta.summary and meta.notes and meta.aliases
    assert any(str(year) in meta.reference for year in range(2017, 2024)), meta.reference
    assert set(meta.defaults) <= set(meta.bounds)
    assert meta.check in ("MONAI HausdorffDTLoss", "MONAI BoundaryLoss", "none: invariants only")
    assert meta.dims in ({2}, {2, 3})
    if name in USES_TARGET_DIST:
        assert meta.slow_reason
    loss = build(name)
    assert isinstance(loss, SegLoss) and loss.name == name
    assert set(loss.supported_dims) == set(meta.dims)


@pytest.mark.parametrize(
    "alias, name",
    [
        ("BoundaryLoss", "boundary"),
        ("HausdorffDistanceLoss", "hausdorff_dt"),
        ("HausdorffDTLoss", "hausdorff_dt"),
        ("BoundaryAwareLoss", "boundary_aware"),
        ("ActiveBoundaryLoss", "active_boundary"),
        ("InverseFormLoss", "inverseform"),
        ("ConditionalBoundaryLoss", "conditional_boundary"),
        ("BoundaryDoULoss", "boundary_dou"),
        ("RegionWiseLoss", "region_wise"),
        ("ShapeAwareLoss", "shape_aware"),
    ],
)
def test_seed_names_resolve(alias: str, name: str) -> None:
    assert info(alias).name == name
    assert build(alias).name == name


def test_needs_and_checks() -> None:
    assert info("conditional_boundary").needs == {"features"}
    assert info("boundary").needs == {"epoch"}
    assert info("boundary").check == "MONAI BoundaryLoss"
    assert info("hausdorff_dt").check == "MONAI HausdorffDTLoss"
    for name in ("active_boundary", "inverseform", "conditional_boundary"):
        assert info(name).dims == {2}


def test_bad_hyper_parameters_raise() -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build("boundary", alpha=0.5)
    with pytest.raises(ValueError, match="out of range"):
        build("boundary_dou", alpha_max=1.5)
    with pytest.raises(ValueError, match="alpha_min"):
        build("boundary", alpha_start=0.2, alpha_min=0.5)


# ------------------------------------------------------------------------------------------------
# Invariants for every loss
# ------------------------------------------------------------------------------------------------


def _value_and_grads(name: str, target: torch.Tensor, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(target.shape, generator=gen)).requires_grad_()
    extras = extras_for(name, logits, seed)
    value = build(name)(logits, target, **extras)
    assert value.ndim == 0 and torch.isfinite(value), (name, value)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    has_outline = bool(dist.has_boundary(target).any())
    for tensor in extras.values():  # features only enter the loss through true outlines
        assert (tensor.grad is not None) == has_outline
        assert tensor.grad is None or torch.isfinite(tensor.grad).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name, ndim", CASES)
def test_finite_value_and_gradients_batch_1(name: str, ndim: int, kind: str) -> None:
    _value_and_grads(name, make_target(kind, SHAPE[ndim]))


@pytest.mark.parametrize("name, ndim", CASES)
def test_finite_value_and_gradients_batch_4(name: str, ndim: int) -> None:
    _value_and_grads(name, batch_of(KINDS, ndim), seed=1)


@pytest.mark.parametrize("name", [n for n in BOUNDARY if info(n).dims == {2}])
def test_two_d_only_losses_reject_volumes(name: str) -> None:
    y = make_target("blob", SHAPE[3])
    with pytest.raises(ValueError, match="2"):
        build(name)(torch.zeros_like(y), y)


def _perfect_and_poor(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sign = 2.0 * target - 1.0
    return 8.0 * sign, -8.0 * sign


def _features_for(labels: torch.Tensor, good: bool) -> torch.Tensor:
    """Features at H/4: class one-hot (good) or noise (poor)."""
    small = torch.nn.functional.interpolate(labels, scale_factor=0.25, mode="nearest")
    if good:
        return torch.cat([small, 1.0 - small, torch.zeros_like(small)], dim=1)
    return torch.randn(small.shape[0], 3, *small.shape[2:], generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name, ndim", CASES)
def test_perfect_prediction_scores_lower_than_a_poor_one(name: str, ndim: int) -> None:
    y = torch.cat([make_target("blob", SHAPE[ndim]), make_target("blob", SHAPE[ndim], shift=3)])
    perfect, poor = _perfect_and_poor(y)
    loss = build(name)
    if name == "conditional_boundary":
        good = loss(perfect, y, features=_features_for(y, True))
        bad = loss(poor, y, features=_features_for(y, False))
    else:
        good, bad = loss(perfect, y), loss(poor, y)
    assert good < bad, (name, float(good), float(bad))
    if name == "boundary":  # also for the pure boundary term (alpha = 0)
        pure = build(name, alpha_start=0.0, alpha_min=0.0)
        assert pure(perfect, y) < pure(poor, y)


@pytest.mark.parametrize("name, ndim", CASES)
def test_float32_and_float64_agree(name: str, ndim: int) -> None:
    y = torch.cat([make_target("blob", SHAPE[ndim]), make_target("single", SHAPE[ndim])])
    gen = torch.Generator().manual_seed(7)
    z64 = 3.0 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    loss = build(name)
    ex64 = extras_for(name, z64, seed=7)
    ex64 = {k: v.detach() for k, v in ex64.items()}
    ex32 = {k: v.float() for k, v in ex64.items()}
    v64 = loss(z64, y.double(), **ex64)
    v32 = loss(z64.float(), y, **ex32)
    assert v32.dtype == torch.float32 and v64.dtype == torch.float64
    assert float(v32) == pytest.approx(float(v64), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", USES_TARGET_DIST)
def test_precomputed_target_dist_matches_on_the_fly(name: str) -> None:
    y = batch_of(KINDS, 2)
    z = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    loss = build(name)
    spacing = (0.8, 1.3)
    on_the_fly = loss(z, y, spacing=spacing)
    given = loss(z, y, target_dist=dist.batch_signed_distance(y, spacing), spacing=spacing)
    assert float(given) == pytest.approx(float(on_the_fly), rel=1e-6)
    with pytest.raises(ValueError, match="target_dist"):
        loss(z, y, target_dist=torch.zeros(4, 1, 8, 8))


def test_training_pipeline_map_builder_matches_the_losses_convention() -> None:
    extras = pytest.importorskip("napari_segloss.train.extras")
    y = make_target("blob", SHAPE[2])[0, 0].numpy().astype(bool)
    for spacing in ((1.0, 1.0), (0.7, 1.2)):
        theirs = extras.PRECOMPUTED["target_dist"](y, spacing)
        np.testing.assert_allclose(theirs, dist.signed_distance(y, spacing), rtol=1e-6, atol=1e-6)


def test_spacing_is_validated() -> None:
    y = make_target("blob", SHAPE[2])
    with pytest.raises(ValueError, match="spacing"):
        build("hausdorff_dt")(torch.zeros_like(y), y, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        build("boundary")(torch.zeros_like(y), y, spacing=(1.0, -1.0))


# ------------------------------------------------------------------------------------------------
# Distance maps and morphology
# ------------------------------------------------------------------------------------------------


def _brute_force_signed(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    pts = np.indices(mask.shape).reshape(mask.ndim, -1).T * np.asarray(spacing)
    inside = mask.ravel()
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    to_fg = np.where(inside[None, :], d, np.inf).min(axis=1)
    to_bg = np.where(~inside[None, :], d, np.inf).min(axis=1)
    return np.where(inside, -to_bg, to_fg).reshape(mask.shape)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.9, 0.9)])
def test_signed_distance_matches_brute_force(spacing: tuple[float, ...]) -> None:
    rng = np.random.default_rng(0)
    shape = (9, 11) if len(spacing) == 2 else (4, 7, 6)
    mask = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > 0.1
    np.testing.assert_allclose(dist.signed_distance(mask, spacing), _brute_force_signed(mask, spacing), atol=1e-12)


def test_empty_and_full_masks_give_zero_maps() -> None:
    for mask in (np.zeros((5, 6), bool), np.ones((3, 5, 6), bool)):
        assert not dist.signed_distance(mask).any()
    y = batch_of(KINDS, 2)
    maps = dist.batch_signed_distance(y)
    assert maps.shape == y.shape and maps.dtype == y.dtype
    assert not maps[:2].any() and maps[2:].any()
    assert dist.has_boundary(y).tolist() == [False, False, True, True]


@pytest.mark.parametrize("ndim", [2, 3])
def test_inner_boundary_matches_scipy_erosion(ndim: int) -> None:
    rng = np.random.default_rng(1)
    masks = ndimage.gaussian_filter(rng.standard_normal((3, *SHAPE[ndim])), [0] + [1.5] * ndim) > 0
    masks[0] = True  # a full mask has no boundary, even at the image border
    expected = np.stack(
        [m & ~ndimage.binary_erosion(m, np.ones((3,) * ndim), border_value=1) for m in masks]
    )
    got = dist.inner_boundary(torch.from_numpy(masks[:, None]).float())[:, 0].numpy() > 0.5
    np.testing.assert_array_equal(got, expected)
    dilated = dist.dilate(torch.from_numpy(masks[:, None]).float(), 2)[:, 0].numpy() > 0.5
    np.testing.assert_array_equal(dilated, np.stack([ndimage.binary_dilation(m, np.ones((5,) * ndim)) for m in masks]))


# ------------------------------------------------------------------------------------------------
# Independent cross-checks
# ------------------------------------------------------------------------------------------------


def _random_case(ndim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    shape = SHAPE[ndim]
    masks = [ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > 0.3 for _ in range(3)]
    y = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    y = torch.cat([y, make_target("empty", shape), make_target("full", shape)])
    return 2.0 * torch.randn(y.shape, generator=gen), y


@pytest.mark.parametrize("ndim", [2, 3])
def test_boundary_term_matches_monai_boundary_loss(ndim: int) -> None:
    monai = pytest.importorskip("monai.losses")
    z, y = _random_case(ndim, seed=ndim)
    ours = build("boundary", alpha_start=0.0, alpha_min=0.0)(z, y)
    ref = monai.BoundaryLoss(sigmoid=True)(z, y)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_boundary_schedule_blends_monai_dice_and_boundary(ndim: int) -> None:
    monai = pytest.importorskip("monai.losses")
    z, y = _random_case(ndim, seed=10 + ndim)
    dice = float(monai.DiceLoss(sigmoid=True)(z, y))
    bl = float(monai.BoundaryLoss(sigmoid=True)(z, y))
    loss = build("BoundaryLoss")
    assert loss.state() == {"epoch": 0, "alpha": 1.0}
    assert float(loss(z, y)) == pytest.approx(dice, rel=1e-5)
    loss.on_epoch(30, 100)
    assert loss.state()["alpha"] == pytest.approx(0.7)
    assert float(loss(z, y)) == pytest.approx(0.7 * dice + 0.3 * bl, rel=1e-5)
    loss.on_epoch(500, 1000)
    assert loss.state() == {"epoch": 500, "alpha": 0.01}
    constant = build("boundary", alpha_start=0.5, alpha_step=0.0, alpha_min=0.0)
    constant.on_epoch(40, 100)
    assert constant.state()["alpha"] == 0.5


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("alpha", [2.0, 1.0])
def test_hausdorff_dt_matches_monai(ndim: int, alpha: float) -> None:
    monai = pytest.importorskip("monai.losses")
    z, y = _random_case(ndim, seed=20 + ndim)
    ours = build("HausdorffDistanceLoss", alpha=alpha)(z, y)
    ref = monai.HausdorffDTLoss(alpha=alpha, include_background=True, sigmoid=True)(z, y)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_distances_scale_with_spacing() -> None:
    z, y = _random_case(2, seed=30)
    hd = build("hausdorff_dt")
    assert float(hd(z, y, spacing=(2.0, 2.0))) == pytest.approx(4.0 * float(hd(z, y)), rel=1e-6)
    bl = build("boundary", alpha_start=0.0, alpha_min=0.0)
    assert float(bl(z, y, spacing=(2.0, 2.0))) == pytest.approx(2.0 * float(bl(z, y)), rel=1e-6)
    assert float(bl(z, y, spacing=(1.0, 1.0))) == pytest.approx(float(bl(z, y)), rel=1e-7)
    rw = build("region_wise")  # normalised distances: isotropic spacing changes nothing
    assert float(rw(z, y, spacing=(3.0, 3.0))) == pytest.approx(float(rw(z, y)), rel=1e-6)


def test_boundary_aware_reduces_to_bce() -> None:
    z, y = _random_case(2, seed=40)
    bce = torch.nn.BCEWithLogitsLoss()(z, y)
    assert float(build("boundary_aware", weight=0.0)(z, y)) == pytest.approx(float(bce), rel=1e-6)
    empty = torch.zeros_like(y)
    ref = torch.nn.BCEWithLogitsLoss()(z, empty)
    assert float(build("boundary_aware")(z, empty)) == pytest.approx(float(ref), rel=1e-6)
    assert float(build("boundary_aware")(z, y)) > float(bce)


def test_shape_aware_is_bce_without_a_predicted_contour() -> None:
    _, y = _random_case(2, seed=50)
    z = torch.full_like(y, -3.0)  # nothing predicted: no contour, E = 0
    ref = torch.nn.BCEWithLogitsLoss()(z, y)
    assert float(build("shape_aware")(z, y)) == pytest.approx(float(ref), rel=1e-6)
    ring = make_target("blob", SHAPE[2], shift=6)  # a contour far from the truth costs extra
    z_far = 4.0 * (2 * ring - 1).expand_as(y)
    assert float(build("shape_aware")(z_far, y)) > float(torch.nn.BCEWithLogitsLoss()(z_far, y))


def _authors_rrw_loss(z: torch.Tensor, y: torch.Tensor) -> float:
    """Valverde & Tohka's rrwmap + torch.mean(softmax · map), re-derived with scipy per class."""
    onehot = np.concatenate([1 - y.numpy(), y.numpy()], axis=1)
    rrw = np.zeros_like(onehot, dtype=np.float64)
    for b in range(onehot.shape[0]):
        for c in range(2):
            d = ndimage.distance_transform_edt(onehot[b, c])
            rrw[b, c] = -d / (d.max() + 1e-15)
    rrw[rrw == 0] = 1
    prob = torch.softmax(torch.cat([torch.zeros_like(z), z], 1), 1).double().numpy()
    return float(np.mean(prob * rrw))


def test_region_wise_matches_the_authors_map() -> None:
    z, y = _random_case(2, seed=60)
    y, z = y[:3], z[:3]  # the authors' scipy path is undefined for classes that fill the image
    assert float(build("RegionWiseLoss")(z, y)) == pytest.approx(_authors_rrw_loss(z, y), rel=1e-5)
    full = make_target("full", SHAPE[2])
    perfect = build("region_wise")(torch.full_like(full, 20.0), full)
    assert float(perfect) == pytest.approx(-0.5, abs=1e-6)  # Z_fg = −1 (fills image), Z_bg unused


def test_boundary_dou_hand_derived_values() -> None:
    y = torch.zeros(1, 1, 32, 32)
    y[0, 0, 5:15, 5:15] = 1  # S = 100, C = 36 -> alpha = 1 − 2·36/100 = 0.28
    p = 0.8
    z = torch.where(y > 0, math.log(p / (1 - p)), -40.0)
    inter, y_sq, p_sq = 80.0, 100.0, 64.0
    expected = (p_sq + y_sq - 2 * inter) / (p_sq + y_sq - 1.28 * inter)
    assert float(build("BoundaryDoULoss")(z, y)) == pytest.approx(expected, rel=1e-5)
    big = torch.zeros(1, 1, 64, 64)
    big[0, 0, 10:50, 10:50] = 1  # alpha = 1 − 2·156/1600 = 0.805 -> truncated to 0.8
    zb = torch.where(big > 0, math.log(p / (1 - p)), -40.0)
    i, s_y, s_p = 1280.0, 1600.0, 1024.0
    assert float(build("boundary_dou")(zb, big)) == pytest.approx(
        (s_p + s_y - 2 * i) / (s_p + s_y - 1.8 * i), rel=1e-5
    )


def test_active_boundary_term_vanishes_without_a_true_outline() -> None:
    z = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    for kind in ("empty", "full"):
        y = make_target(kind, SHAPE[2]).expand(2, -1, -1, -1)
        ref = torch.nn.BCEWithLogitsLoss()(z, y)
        assert float(build("active_boundary")(z, y)) == pytest.approx(float(ref), rel=1e-6)


def test_active_boundary_prefers_the_true_outline() -> None:
    y = make_target("blob", SHAPE[2])
    near = 4.0 * (2 * make_target("blob", SHAPE[2], shift=1) - 1)
    far = 4.0 * (2 * make_target("blob", SHAPE[2], shift=5) - 1)
    abl = build("active_boundary", abl_weight=1.0)

    def abl_term(z: torch.Tensor) -> float:
        return float(abl(z, y)) - float(torch.nn.BCEWithLogitsLoss()(z, y))

    assert 0.0 <= abl_term(near) < abl_term(far)


def test_conditional_boundary_needs_features() -> None:
    y = make_target("blob", SHAPE[2])
    loss = build("conditional_boundary")
    with pytest.raises(ValueError, match="features"):
        loss(torch.zeros_like(y), y)
    with pytest.raises(ValueError, match="features"):
        loss(torch.zeros_like(y), y, features=torch.zeros(2, 4, 8, 8))


def test_conditional_boundary_context_term_is_zero_for_class_one_hot_features() -> None:
    from napari_segloss.losses.boundary import ConditionalBoundaryLoss

    y = make_target("blob", (16, 16))
    one_hot = torch.cat([y, 1 - y], dim=1)
    centres = torch.ones_like(y, dtype=torch.bool)
    assert float(ConditionalBoundaryLoss.context(one_hot, y, centres)) == pytest.approx(0.0, abs=1e-12)
    noise = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float(ConditionalBoundaryLoss.context(noise, y, centres)) > 0.1


# ------------------------------------------------------------------------------------------------
# InverseForm and its retrained net
# ------------------------------------------------------------------------------------------------


def test_inverseform_net_card_and_weights() -> None:
    from safetensors import safe_open

    path = weights_dir() / INVERSEFORM_FILE
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["name"] == "inverseform" and "napari_segloss.data.synthetic" in card["data"]["source"]
    assert {"tile", "hidden", "outputs"} <= set(card["architecture"])
    assert {"schema_version", "loss", "recipe", "history", "test_metrics", "weights_sha256"} <= set(card)
    held_out = card["test_metrics"]
    assert held_out["mean_norm_transformed"] > held_out["mean_norm_identity_or_uninformative"]
    by_shift = list(held_out["mean_norm_by_column_shift"].values())
    assert by_shift == sorted(by_shift)  # the loss grows with the misalignment of tumour outlines
    assert card["history"][-1]["train_mse"] < card["history"][0]["train_mse"]
    with safe_open(str(path), framework="pt") as handle:  # safetensors, not pickle
        assert all(key.startswith("fc.") for key in handle.keys())
    net = load_inverse_net()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    loss = build("inverseform")
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    assert loss.state()["net_weights_sha256"] == card["weights_sha256"] == net.weights_sha256
    # the bundled inverseform checkpoint was trained with this very net
    bundled = json.loads((weights_dir() / "inverseform.json").read_text())
    assert bundled["loss_state"]["net_weights_sha256"] == card["weights_sha256"]


def test_inverseform_distance_grows_with_misalignment() -> None:
    loss = build("inverseform")
    blob = make_target("blob", (64, 64))
    y = torch.cat([blob, blob.transpose(-1, -2), blob.flip(-2), make_target("blob", (64, 64), shift=-9)])
    values = [float(loss.distance(torch.roll(y, shifts=s, dims=-1), y)) for s in (0, 3, 6)]
    assert values[0] < values[1] < values[2], values


def test_inverseform_losses_in_other_dtypes_do_not_move_each_others_net() -> None:
    """One loss evaluated in float64 must not turn the shared frozen net (or another loss's) into float64."""
    a, b = build("inverseform"), build("inverseform")
    y = make_target("blob", (64, 64))
    z32 = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    first = a(z32, y)
    b(z32.double(), y.double())
    torch.testing.assert_close(a(z32, y), first)  # raised a dtype error when b moved the cached net
    assert {p.dtype for p in load_inverse_net().parameters()} == {torch.float32}
    assert {p.device.type for p in load_inverse_net().parameters()} == {"cpu"}
