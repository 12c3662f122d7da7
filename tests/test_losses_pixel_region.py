"""Pixel and region losses: registry metadata, invariants, and cross-checks against torch,
torchvision, segmentation_models_pytorch, MONAI and SciPy (to 1e-5 relative)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from napari_segloss.losses import SegLoss, available, build, info, resolve

PIXEL = ["bce", "weighted_bce", "balanced_bce", "topk", "focal", "distance_bce"]
REGION = [
    "dice", "iou", "tversky", "focal_tversky", "log_cosh_dice", "sensitivity_specificity", "generalized_dice",
    "gw_dice", "asymmetric_similarity", "penalty_gdice", "lovasz_hinge", "rmi", "robust_t", "cmss",
]
MINE = PIXEL + REGION
SEED_ALIASES = {
    "BCEWithLogitsLoss": "bce", "WeightedBinaryCrossEntropyLoss": "weighted_bce", "TopKLoss": "topk",
    "FocalLoss": "focal", "DiceLoss": "dice", "IoULoss": "iou", "TverskyLoss": "tversky",
    "FocalTverskyLoss": "focal_tversky", "SensitivitySpecificityLoss": "sensitivity_specificity",
    "GeneralizedDiceLoss": "generalized_dice", "GeneralizedWassersteinDiceLoss": "gw_dice",
    "AsymmetricSimilarityLoss": "asymmetric_similarity", "PenaltyLoss": "penalty_gdice",
    "LovaszHingeLoss": "lovasz_hinge", "RobustTLoss": "robust_t",
}
RTOL = 1e-5
SHAPES = {2: (32, 32), 3: (8, 16, 16)}


# ----------------------------------------------------------------------------- helpers
def masks(spatial: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Empty, full, single-pixel and blob (off-centre ellipse / ellipsoid) binary masks."""
    grid = np.indices(spatial).astype(float)
    centre = [0.45 * s for s in spatial]
    radii = [0.3 * s for s in spatial]
    blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0
    single = np.zeros(spatial, bool)
    single[tuple(s // 3 for s in spatial)] = True
    return {"empty": np.zeros(spatial, bool), "full": np.ones(spatial, bool), "single": single, "blob": blob}


def batch(kinds: list[str], spatial: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    pool = masks(spatial)
    return torch.from_numpy(np.stack([pool[k] for k in kinds])[:, None]).to(dtype)


def random_logits(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (2.5 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)


def random_target(shape: tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A blob per image, shifted per image, plus an empty image when the batch has >= 3."""
    spatial = shape[2:]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(shape[0]):
        grid = np.indices(spatial).astype(float)
        centre = rng.uniform(0.3, 0.7, len(spatial)) * np.array(spatial)
        radii = rng.uniform(0.15, 0.35, len(spatial)) * np.array(spatial)
        m = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0
        out.append(m & (i != 2))
    return torch.from_numpy(np.stack(out)[:, None]).to(dtype)


def built(name: str, **hparams) -> SegLoss:
    """The loss with dataset statistics fitted where it has some."""
    loss = build(name, **hparams)
    loss.fit_dataset(list(masks((32, 32)).values()))
    return loss


def close(a: torch.Tensor | float, b: torch.Tensor | float, rtol: float = RTOL, atol: float = 1e-8) -> None:
    a, b = (float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in (a, b))
    assert math.isclose(a, b, rel_tol=rtol, abs_tol=atol), f"{a!r} != {b!r}"


def nonempty_per_image(reference, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Call a batch-global reference (smp) image by image on non-empty targets, mean over images."""
    keep = [i for i in range(target.shape[0]) if target[i].sum() > 0]
    return torch.stack([reference(logits[i : i + 1], target[i : i + 1]) for i in keep]).mean()


# ----------------------------------------------------------------------------- registry
def test_catalogue_order_and_families():
    names = available()
    assert [n for n in names if n in MINE] == MINE
    assert all(info(n).family == "pixel" for n in PIXEL)
    assert all(info(n).family == "region" for n in REGION)
    assert names.index("distance_bce") < names.index("dice")


@pytest.mark.parametrize("name", MINE)
def test_info_is_complete(name):
    meta = info(name)
    assert meta.name == name and meta.title and meta.summary and meta.notes and meta.check
    assert any(str(y) in meta.reference for y in range(2013, 2025)), meta.reference
    assert meta.aliases and meta.dims <= {2, 3} and 2 in meta.dims
    assert set(meta.bounds) <= set(meta.defaults)
    loss = build(name, **dict(meta.defaults))
    assert isinstance(loss, SegLoss) and loss.name == name
    if meta.slow_reason:
        assert name in {"distance_bce"}


@pytest.mark.parametrize("alias, name", sorted(SEED_ALIASES.items()))
def test_seed_aliases_resolve(alias, name):
    assert resolve(alias) == name
    assert resolve(alias.lower()) == name
    assert build(alias).name == name


@pytest.mark.parametrize("name", MINE)
def test_every_alias_resolves(name):
    for alias in info(name).aliases:
        assert resolve(alias) == name


@pytest.mark.parametrize("name", MINE)
def test_build_rejects_unknown_and_out_of_range(name):
    with pytest.raises(ValueError, match="unknown loss"):
        build(name + "_nope")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build(name, not_a_parameter=1)
    for key, bound in info(name).bounds.items():
        default = info(name).defaults[key]
        if isinstance(default, bool) or isinstance(default, str):
            bad = ["nonsense", 7] if isinstance(default, bool) else ["nonsense", 3]
        elif len(bound) == 2 and not isinstance(default, int):
            low, high = bound
            bad = [v for v in ((low - 1.0) if low is not None else None, (high + 1.0) if high is not None else None)
                   if v is not None] + [float("nan")]
        else:  # tuple of allowed integers
            bad = [max(bound) + 1, min(bound) - 1]
        for value in bad:
            with pytest.raises(ValueError):
                build(name, **{key: value})


@pytest.mark.parametrize("name", ["weighted_bce", "balanced_bce"])
def test_optional_hparams_validated(name):
    key = "pos_weight" if name == "weighted_bce" else "dataset_beta"
    for value in (-1.0, "x", float("nan")):
        with pytest.raises(ValueError):
            build(name, **{key: value})


@pytest.mark.parametrize("name", MINE)
def test_rejects_bad_inputs(name):
    loss = built(name)
    z, y = random_logits((2, 1, 16, 16)), random_target((2, 1, 16, 16))
    with pytest.raises(ValueError):
        loss(z[:, 0], y[:, 0])
    with pytest.raises(ValueError):
        loss(z, y[:, :, :8])
    with pytest.raises(ValueError):
        loss(torch.full_like(z, float("nan")), y)
    with pytest.raises(ValueError):
        loss(z, y * 0.5)


# ----------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", MINE)
def test_finite_value_and_gradients(name, ndim):
    spatial = SHAPES[ndim]
    loss = built(name)
    cases = [[k] for k in masks(spatial)] + [[k] * 4 for k in masks(spatial)] + [list(masks(spatial))]
    for seed, kinds in enumerate(cases):
        target = batch(kinds, spatial)
        logits = random_logits(target.shape, seed).requires_grad_(True)
        value = loss(logits, target)
        value.backward()
        assert value.ndim == 0 and torch.isfinite(value), (kinds, value)
        assert torch.isfinite(logits.grad).all(), kinds
        assert logits.grad.abs().sum() > 0, kinds


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", MINE)
def test_integer_target_accepted(name, ndim):
    target = random_target((2, 1, *SHAPES[ndim]))
    logits = random_logits(target.shape)
    loss = built(name)
    close(loss(logits, target.long()), loss(logits, target), rtol=1e-6)


@pytest.mark.parametrize("kind", ["empty", "full", "single", "blob"])
@pytest.mark.parametrize("name", MINE)
def test_perfect_prediction_beats_poor_ones(name, kind):
    target = batch([kind, kind], (32, 32))
    sign = 2.0 * target - 1.0
    loss = built(name)
    perfect = loss(8.0 * sign, target)
    assert perfect < loss(-8.0 * sign, target), "confidently inverted"
    assert perfect < loss(torch.zeros_like(target), target), "uninformative p = 0.5"


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", MINE)
def test_float32_and_float64_agree(name, ndim):
    target = random_target((3, 1, *SHAPES[ndim]), dtype=torch.float64)
    logits = random_logits(target.shape, dtype=torch.float64)
    loss = built(name)
    value64 = loss(logits, target)
    assert value64.dtype == torch.float64
    close(loss(logits.float(), target.float()), value64, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", MINE)
def test_half_precision_logits_computed_in_float32(name):
    target = random_target((2, 1, 16, 16))
    logits = random_logits(target.shape)
    loss = built(name)
    value = loss(logits.half(), target)
    assert value.dtype == torch.float32
    close(value, loss(logits.half().float(), target), rtol=1e-6)


# ----------------------------------------------------------------------------- pixel cross-checks
def test_bce_matches_torch():
    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    close(build("bce")(z, y), torch.nn.BCEWithLogitsLoss()(z, y))


def test_weighted_bce_fit_state_and_torch_pos_weight():
    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    train = [m for m in masks((32, 32)).values()]
    n_pos = sum(int(m.sum()) for m in train)
    expected = (sum(m.size for m in train) - n_pos) / n_pos
    loss = build("weighted_bce")
    loss.fit_dataset(train)
    assert loss.state() == {"pos_weight": pytest.approx(expected)}
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(expected, dtype=torch.float64))
    close(loss(z, y), reference(z, y))
    close(build("weighted_bce", **loss.state())(z, y), reference(z, y))
    # before fit_dataset: the batch's own ratio; an explicit weight is kept by fit_dataset
    batch_ratio = float((y == 0).sum() / y.sum())
    close(build("weighted_bce")(z, y), torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(batch_ratio))(z, y))
    explicit = build("weighted_bce", pos_weight=3.0)
    explicit.fit_dataset(train)
    assert explicit.state() == {"pos_weight": 3.0}
    capped = build("weighted_bce", max_pos_weight=2.0)
    capped.fit_dataset(train)
    assert capped.state() == {"pos_weight": 2.0}
    empty_data = build("weighted_bce")
    empty_data.fit_dataset([np.zeros((8, 8), bool)])
    assert empty_data.state() == {"pos_weight": 100.0}


def test_balanced_bce_matches_torch_weighted_bce_and_handles_one_class_images():
    y = random_target((4, 1, 24, 24), dtype=torch.float64)  # image 2 is empty
    z = random_logits(y.shape, dtype=torch.float64)
    beta = 1.0 - y.mean(dim=(1, 2, 3), keepdim=True)
    beta[2] = 0.5  # unfitted fallback for the tumour-free image
    weight = beta * y + (1.0 - beta) * (1.0 - y)
    close(build("balanced_bce")(z, y), torch.nn.BCEWithLogitsLoss(weight=weight)(z, y))
    # fitted: one-class images use the dataset-level beta
    loss = build("balanced_bce")
    train = [m for m in masks((32, 32)).values()]
    loss.fit_dataset(train)
    dataset_beta = 1.0 - sum(int(m.sum()) for m in train) / sum(m.size for m in train)
    assert loss.state() == {"dataset_beta": pytest.approx(dataset_beta)}
    beta[2] = dataset_beta
    weight = beta * y + (1.0 - beta) * (1.0 - y)
    close(loss(z, y), torch.nn.BCEWithLogitsLoss(weight=weight)(z, y))
    close(build("balanced_bce", **loss.state())(z, y), loss(z, y))
    # a tumour-free image still penalises false positives
    empty = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    assert build("balanced_bce")(torch.full_like(empty, 3.0), empty) > 1.0


@pytest.mark.parametrize("k", [10.0, 2.5, 100.0])
def test_topk_matches_sorted_torch_bce(k):
    y = random_target((3, 1, 20, 20), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    ce = torch.nn.BCEWithLogitsLoss(reduction="none")(z, y).flatten(1).numpy()
    count = max(1, int(ce.shape[1] * k / 100))
    expected = np.mean([np.sort(row)[::-1][:count].mean() for row in ce])
    close(build("topk", k=k)(z, y), expected)
    if k == 100.0:
        close(build("topk", k=k)(z, y), build("bce")(z, y))


def test_focal_matches_torchvision_monai_and_smp():
    from monai.losses import FocalLoss as MonaiFocal
    from segmentation_models_pytorch.losses import FocalLoss as SmpFocal
    from torchvision.ops import sigmoid_focal_loss

    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    value = build("focal")(z, y)
    close(value, sigmoid_focal_loss(z, y, alpha=0.25, gamma=2.0, reduction="mean"))
    close(value, MonaiFocal(gamma=2.0, alpha=0.25)(z, y))
    close(build("focal")(z.float(), y.float()), SmpFocal("binary", alpha=0.25, gamma=2.0)(z.float(), y.float()))
    close(build("focal", alpha=0.5, gamma=0.0)(z, y), 0.5 * torch.nn.BCEWithLogitsLoss()(z, y))


def brute_force_phi(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Caliva's map from pairwise distances (no distance transform)."""
    coords = np.indices(mask.shape).reshape(mask.ndim, -1).T * np.asarray(spacing)
    flat = mask.ravel()
    phi = np.zeros(flat.shape)
    if flat.all() or not flat.any():
        return phi.reshape(mask.shape)
    for region in (flat, ~flat):
        d = np.sqrt(((coords[region][:, None] - coords[~region][None]) ** 2).sum(-1)).min(1)
        phi[region] = (d.max() - d) / d.max()
    return phi.reshape(mask.shape)


@pytest.mark.parametrize("spatial, spacing", [((20, 20), (1.0, 1.0)), ((16, 20), (2.0, 0.5)), ((6, 10, 10), (3.0, 1.0, 1.0))])
def test_distance_bce_matches_brute_force_weights(spatial, spacing):
    y = random_target((3, 1, *spatial), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    phi = np.stack([brute_force_phi(m, spacing) for m in y[:, 0].numpy() > 0.5])[:, None]
    expected = torch.nn.BCEWithLogitsLoss(weight=1.0 + torch.from_numpy(phi))(z, y)
    close(build("distance_bce")(z, y, spacing=spacing), expected)
    if len(set(spacing)) > 1:  # the spacing matters
        assert not math.isclose(float(build("distance_bce")(z, y)), float(expected), rel_tol=1e-6)


def test_distance_bce_precomputed_maps_agree_with_training_pipeline():
    from napari_segloss.train.extras import Extras

    spacing = (0.8, 1.2)
    y = random_target((3, 1, 24, 24))
    z = random_logits(y.shape)
    loss = build("distance_bce")
    extras = Extras(loss, info("distance_bce").needs)
    maps = torch.from_numpy(np.stack([extras.sample_maps(m, spacing)["target_dist"] for m in y[:, 0].numpy() > 0.5]))
    assert maps.dtype == torch.float32
    close(loss(z, y, target_dist=maps[:, None]), loss(z, y, spacing=spacing), rtol=1e-6)
    with pytest.raises(ValueError, match="target_dist must be a tensor of the target.s shape"):
        loss(z, y, target_dist=maps)
    with pytest.raises(ValueError, match="spacing"):
        loss(z, y, spacing=(1.0, 1.0, 1.0))


def test_distance_bce_without_boundary_is_bce():
    y = batch(["empty", "full"], (16, 16), torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    close(build("distance_bce")(z, y), torch.nn.BCEWithLogitsLoss()(z, y))


# ----------------------------------------------------------------------------- region cross-checks
@pytest.mark.parametrize("ndim", [2, 3])
def test_dice_matches_monai_and_smp(ndim):
    from monai.losses import DiceLoss as MonaiDice
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    y = random_target((4, 1, *SHAPES[ndim]), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    value = build("dice")(z, y)
    close(value, MonaiDice(sigmoid=True)(z, y))  # includes the empty image
    keep = [0, 1, 3]
    close(build("dice")(z[keep], y[keep]), nonempty_per_image(SmpDice("binary", smooth=1e-5), z, y))
    pooled = build("dice", per_image=False)(z, y)  # nnU-Net's batch Dice
    close(pooled, MonaiDice(sigmoid=True, batch=True)(z, y))
    assert not torch.isclose(pooled, value)


def test_iou_matches_monai_jaccard_and_smp():
    from monai.losses import DiceLoss as MonaiDice
    from segmentation_models_pytorch.losses import JaccardLoss

    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    close(build("iou")(z, y), MonaiDice(sigmoid=True, jaccard=True, smooth_nr=2e-5, smooth_dr=2e-5)(z, y))
    keep = [0, 1, 3]
    close(build("iou")(z[keep], y[keep]), nonempty_per_image(JaccardLoss("binary", smooth=1e-5), z, y))


@pytest.mark.parametrize("ndim", [2, 3])
def test_tversky_matches_monai_and_smp(ndim):
    from monai.losses import TverskyLoss as MonaiTversky
    from segmentation_models_pytorch.losses import TverskyLoss as SmpTversky

    y = random_target((4, 1, *SHAPES[ndim]), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    close(build("tversky")(z, y), MonaiTversky(sigmoid=True, alpha=0.3, beta=0.7)(z, y))
    keep = [0, 1, 3]
    smp = SmpTversky("binary", alpha=0.3, beta=0.7, smooth=1e-5)
    close(build("tversky")(z[keep], y[keep]), nonempty_per_image(smp, z, y))
    close(build("tversky", alpha=0.5, beta=0.5)(z, y), build("dice")(z, y))


def test_focal_tversky_matches_smp_and_reduces_to_tversky():
    from segmentation_models_pytorch.losses import TverskyLoss as SmpTversky

    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    keep = [0, 1, 3]
    smp = SmpTversky("binary", alpha=0.3, beta=0.7, gamma=0.75, smooth=1e-5)
    close(build("focal_tversky")(z[keep], y[keep]), nonempty_per_image(smp, z, y))
    close(build("focal_tversky", gamma=1.0)(z, y), build("tversky")(z, y))


def test_log_cosh_dice_is_log_cosh_of_monai_dice():
    from monai.losses import DiceLoss as MonaiDice

    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    per_image = MonaiDice(sigmoid=True, reduction="none")(z, y)
    close(build("log_cosh_dice")(z, y), torch.log(torch.cosh(per_image)).mean())


def test_sensitivity_specificity_weights_the_two_errors():
    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    values = {r: float(build("sensitivity_specificity", r=r)(z, y)) for r in (0.0, 0.05, 1.0)}
    close(values[0.05], 0.05 * values[1.0] + 0.95 * values[0.0])
    sq = (torch.sigmoid(z) - y) ** 2
    fg = [float((sq[i] * y[i]).sum() / (y[i].sum() + 1e-5)) for i in range(4)]
    close(values[1.0], np.mean(fg))
    # r is the weight of the error on tumour pixels: missing tumour costs more as r grows
    miss = torch.where(y > 0, -4.0, -4.0).to(torch.float64)
    assert build("sensitivity_specificity", r=0.5)(miss, y) > build("sensitivity_specificity", r=0.05)(miss, y)


def _monai_gdl(z: torch.Tensor, y: torch.Tensor, **kw) -> torch.Tensor:
    from monai.losses import GeneralizedDiceLoss

    two = torch.cat([torch.zeros_like(z), z], dim=1)
    return GeneralizedDiceLoss(softmax=True, to_onehot_y=True, **kw)(two, y)


@pytest.mark.parametrize("weight_type", ["square", "simple", "uniform"])
def test_generalized_dice_matches_monai_on_two_channels(weight_type):
    y = torch.cat([random_target((3, 1, 24, 24)), batch(["full"], (24, 24))]).double()  # empty + full images
    z = random_logits(y.shape, dtype=torch.float64)
    close(build("generalized_dice", weight_type=weight_type)(z, y), _monai_gdl(z, y, w_type=weight_type))


@pytest.mark.parametrize("ndim", [2, 3])
def test_gw_dice_matches_monai_and_equals_dice(ndim):
    from monai.losses import GeneralizedWassersteinDiceLoss

    y = random_target((4, 1, *SHAPES[ndim]), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    value = build("gw_dice")(z, y)
    monai = GeneralizedWassersteinDiceLoss(dist_matrix=np.array([[0.0, 1.0], [1.0, 0.0]]))
    close(value, monai(torch.cat([torch.zeros_like(z), z], dim=1), y[:, 0].long()))
    close(value, build("dice")(z, y), rtol=1e-9)


@pytest.mark.parametrize("beta", [1.5, 1.0, 2.0])
def test_asymmetric_similarity_is_tversky(beta):
    from monai.losses import TverskyLoss as MonaiTversky

    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    w_fp, w_fn = 1.0 / (1.0 + beta**2), beta**2 / (1.0 + beta**2)
    value = build("asymmetric_similarity", beta=beta)(z, y)
    close(value, build("tversky", alpha=w_fp, beta=w_fn)(z, y), rtol=1e-12)
    close(value, MonaiTversky(sigmoid=True, alpha=w_fp, beta=w_fn)(z, y))
    if beta == 1.0:
        close(value, build("dice")(z, y))
    # F-beta written out on the first image: (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)
    p = torch.sigmoid(z[0])
    tp, fp, fn = (p * y[0]).sum(), (p * (1 - y[0])).sum(), ((1 - p) * y[0]).sum()
    f_beta = (1 + beta**2) * tp / ((1 + beta**2) * tp + beta**2 * fn + fp)
    close(build("asymmetric_similarity", beta=beta)(z[:1], y[:1]), 1 - f_beta, rtol=1e-6)


def test_penalty_gdice_from_monai_generalized_dice():
    y = random_target((4, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    gd = _monai_gdl(z, y, reduction="none").flatten()
    close(build("penalty_gdice")(z, y), (gd / (1.0 + 2.5 * (1.0 - gd))).mean())
    close(build("penalty_gdice", k=0.0)(z, y), build("generalized_dice")(z, y))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_hinge_matches_smp(per_image, ndim):
    from segmentation_models_pytorch.losses import LovaszLoss

    y = random_target((4, 1, *SHAPES[ndim]))
    z = random_logits(y.shape)
    close(build("lovasz_hinge", per_image=per_image)(z, y), LovaszLoss("binary", per_image=per_image)(z, y))


def numpy_rmi(prob: np.ndarray, target: np.ndarray, radius: int = 3, pool: int = 4) -> float:
    """Official RMI lower bound re-derived in NumPy (zero-padded block means, np.cov, slogdet)."""

    def avg_pool(x: np.ndarray) -> np.ndarray:
        pad = pool // 2
        x = np.pad(x, pad)
        out_h, out_w = (x.shape[0] - pool) // pool + 1, (x.shape[1] - pool) // pool + 1
        x = x[: out_h * pool, : out_w * pool]
        return x.reshape(out_h, pool, out_w, pool).mean(axis=(1, 3))

    p, y = avg_pool(prob), avg_pool(target)
    pv = np.lib.stride_tricks.sliding_window_view(p, (radius, radius)).reshape(-1, radius * radius).T
    yv = np.lib.stride_tricks.sliding_window_view(y, (radius, radius)).reshape(-1, radius * radius).T
    n = pv.shape[1]
    both = np.cov(np.vstack([yv, pv]), bias=True) * n  # unnormalised, as the official code
    d = radius * radius
    cov_y, cov_yp, cov_p = both[:d, :d], both[:d, d:], both[d:, d:]
    ridge = 5e-4 * np.eye(d)
    posterior = cov_y - cov_yp @ np.linalg.inv(cov_p + ridge) @ cov_yp.T
    sign, logdet = np.linalg.slogdet(posterior + ridge)
    assert sign > 0
    return 0.5 * logdet / d


def test_rmi_matches_numpy_rederivation_and_bce_limit():
    y = random_target((3, 1, 32, 32), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    prob = torch.sigmoid(z).numpy()[:, 0] + 1e-6
    rmi = np.mean([numpy_rmi(prob[i], y[i, 0].numpy()) for i in range(3)])
    bce = torch.nn.BCEWithLogitsLoss()(z, y)
    close(build("rmi")(z, y), 0.5 * float(bce) + 0.5 * rmi)
    close(build("rmi", bce_weight=0.0)(z, y), rmi)
    close(build("rmi", bce_weight=1.0)(z, y), bce)


def test_rmi_volume_is_mean_of_slices():
    y = random_target((2, 1, 4, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    loss = build("rmi", bce_weight=0.0)
    per_slice = [float(loss(z[b : b + 1, :, d], y[b : b + 1, :, d])) for b in range(2) for d in range(4)]
    close(loss(z, y), np.mean(per_slice))
    with pytest.raises(ValueError, match="too small"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("nu", [1.0, -0.5, 3.0])
def test_robust_t_matches_scipy_multivariate_t(nu):
    y = random_target((3, 1, 8, 8), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    delta = (torch.sigmoid(z) - y).flatten(1).numpy()
    dim = delta.shape[1]
    dist = stats.multivariate_t(loc=np.zeros(dim), shape=np.exp(-1.0) * np.eye(dim), df=math.exp(nu) + 1e-8)
    nll = -np.mean([dist.logpdf(row) for row in delta])
    close(build("robust_t", nu=nu, per_pixel=False)(z, y), nll)
    close(build("robust_t", nu=nu)(z, y), nll / dim)


def test_robust_t_nu_is_a_learnable_parameter_recorded_in_state():
    loss = build("robust_t")
    params = dict(loss.named_parameters())
    assert list(params) == ["nu"] and isinstance(params["nu"], torch.nn.Parameter)
    assert loss.state() == {"nu": 1.0}
    y = random_target((2, 1, 16, 16))
    z = random_logits(y.shape)
    loss(z, y).backward()
    assert torch.isfinite(loss.nu.grad) and loss.nu.grad != 0
    torch.optim.SGD(loss.parameters(), lr=0.5).step()
    assert loss.state()["nu"] != 1.0
    rebuilt = build("robust_t", **loss.state())
    close(rebuilt(z, y), loss(z, y), rtol=1e-7)


def test_cmss_adds_a_non_negative_structural_term_to_bce():
    y = random_target((3, 1, 24, 24), dtype=torch.float64)
    z = random_logits(y.shape, dtype=torch.float64)
    bce = torch.nn.BCEWithLogitsLoss()(z, y)
    close(build("cmss", ssl_weight=0.0)(z, y), bce)
    assert build("cmss")(z, y) > bce
    # beta = 1 keeps no hard pixel (e > max e is impossible): plain BCE again
    close(build("cmss", beta=1.0)(z, y), bce)
    # the term grows with its weight, linearly (e and f carry no gradient)
    extra1 = float(build("cmss", ssl_weight=1.0)(z, y) - bce)
    close(build("cmss", ssl_weight=3.0)(z, y) - bce, 3.0 * extra1, rtol=1e-9)
