"""Compound losses checked against independent implementations (torch, MONAI, scipy) and hand
formulas. Everything runs in float64 on small random tensors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import AsymmetricUnifiedFocalLoss, ContrastiveLoss, DiceFocalLoss, DiceLoss
from scipy import special, stats

from napari_segloss.losses import available, build, info
from napari_segloss.losses.compound import calf_branch

COMPOUND = ["combo", "exp_log", "unified_focal", "dice_focal", "dice_topk", "calf", "fess", "dice_simclr", "dice_infonce"]


def _inputs(seed: int, shape=(3, 1, 24, 20), scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and a target with one empty image, one small and one large object."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)
    target = torch.zeros(shape, dtype=torch.float64)
    target[1:2, ..., 3:5, 4:6] = 1.0
    target[2:] = (torch.rand((max(shape[0] - 2, 0), *shape[1:]), generator=gen, dtype=torch.float64) > 0.4).double()
    return logits, target


def _monai_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return DiceLoss(sigmoid=True)(logits, target)


def test_family_members_registered_in_order():
    names = [n for n in available() if info(n).family == "compound"]
    assert names == COMPOUND


@pytest.mark.parametrize("alias, name", [
    ("ComboLoss", "combo"), ("ExponentialLogarithmicLoss", "exp_log"), ("UnifiedFocalLoss", "unified_focal"),
    ("DiceFocalLoss", "dice_focal"), ("DiceTopKLoss", "dice_topk"), ("CALF", "calf"), ("FESSLoss", "fess"),
    ("DiceSimCLRLoss", "dice_simclr"), ("DiceInfoNCELoss", "dice_infonce"),
])
def test_seed_aliases(alias, name):
    assert info(alias).name == name
    assert build(alias).name == name


@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.3, 0.8), (1.0, 0.2)])
def test_combo_matches_weighted_bce_and_monai_dice(alpha, beta):
    logits, target = _inputs(0)
    weight = beta * target + (1 - beta) * (1 - target)
    wce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    dsc = 1.0 - _monai_dice(logits, target)
    expected = alpha * wce - (1 - alpha) * dsc
    got = build("combo", alpha=alpha, beta=beta)(logits, target)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


def test_combo_half_beta_alpha_one_is_half_bce():
    logits, target = _inputs(1)
    got = build("combo", alpha=1.0, beta=0.5)(logits, target)
    torch.testing.assert_close(got, 0.5 * F.binary_cross_entropy_with_logits(logits, target), rtol=1e-12, atol=0)


def test_exp_log_reduces_to_log_dice_and_bce():
    logits, target = _inputs(2)
    # gamma_dice = 1, CE off: mean over classes and images of -ln Dice_c, Dice_c from MONAI on [1 - p, p]
    prob = torch.sigmoid(logits)
    two_p, two_y = torch.cat([1 - prob, prob], 1), torch.cat([1 - target, target], 1)
    dice_c = 1.0 - DiceLoss(reduction="none")(two_p, two_y)
    expected = (-torch.log(dice_c.clamp(1e-6, 1 - 1e-6))).mean()
    got = build("exp_log", w_dice=1.0, w_ce=0.0, gamma_dice=1.0)(logits, target)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)
    # gamma_ce = 1, Dice off, unfitted: plain BCE
    got = build("exp_log", w_dice=0.0, w_ce=1.0, gamma_ce=1.0)(logits, target)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits, target), rtol=1e-10, atol=0)


def test_exp_log_class_weights_from_dataset():
    masks = [np.zeros((10, 10), bool) for _ in range(3)]
    masks[0][:2, :5] = True  # 10 foreground pixels of 300
    loss = build("exp_log", w_dice=0.0, w_ce=1.0, gamma_ce=1.0)
    loss.fit_dataset(masks)
    f = 10 / 300
    assert loss.class_weights == pytest.approx(((1 - f) ** -0.5, f**-0.5))
    state = loss.state()
    assert state["foreground_frequency"] == pytest.approx(f)
    json.dumps(state, allow_nan=False)
    logits, target = _inputs(3)
    weight = f**-0.5 * target + (1 - f) ** -0.5 * (1 - target)
    expected = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    torch.testing.assert_close(loss(logits, target), expected, rtol=1e-10, atol=0)
    with pytest.raises(ValueError):
        loss.fit_dataset([np.zeros((4, 4))])


@pytest.mark.parametrize("weight, delta, gamma", [(0.5, 0.6, 0.5), (0.3, 0.7, 0.2), (0.8, 0.5, 0.75)])
def test_unified_focal_matches_monai_with_documented_corrections(weight, delta, gamma):
    logits, target = _inputs(4)
    prob = torch.sigmoid(logits)  # MONAI expects probabilities despite its docstring

    def monai(w: float) -> torch.Tensor:
        ref = AsymmetricUnifiedFocalLoss(weight=w, delta=delta, gamma=gamma)
        ref.asy_focal_tversky_loss.epsilon = 1e-5  # the catalogue's smoothing
        return ref(prob, target)

    tversky, focal_half = monai(0.0), monai(1.0)  # weight sits on MONAI's focal part
    expected = weight * tversky + (1 - weight) * 2.0 * focal_half  # MONAI's focal part is 1/2 of the paper's
    got = build("unified_focal", weight=weight, delta=delta, gamma=gamma)(logits, target)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=0)


def test_unified_focal_gradient_finite_at_perfect_prediction():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:6] = 1
    logits = (40.0 * (2 * target - 1)).requires_grad_(True)
    build("unified_focal")(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_dice_focal_matches_monai(alpha):
    logits, target = _inputs(5)
    ref = DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=alpha, lambda_dice=0.7, lambda_focal=1.3)
    got = build("dice_focal", alpha=alpha, lambda_dice=0.7, lambda_focal=1.3)(logits, target)
    # MONAI's FocalLoss returns a float32 value even for float64 input: compare at float32 precision
    torch.testing.assert_close(got, ref(logits, target), rtol=1e-6, atol=0)


@pytest.mark.parametrize("k", [10.0, 1.0, 3.3, 100.0])
def test_dice_topk_matches_sorted_bce(k):
    logits, target = _inputs(6)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    count = max(1, int(ce.shape[1] * k / 100))
    topk = ce.sort(dim=1, descending=True).values[:, :count].mean()
    got = build("dice_topk", k=k)(logits, target)
    torch.testing.assert_close(got, _monai_dice(logits, target) + topk, rtol=1e-10, atol=0)


def _areas_to_masks(areas: np.ndarray, side: int = 64) -> list[np.ndarray]:
    masks = []
    for area in areas:
        mask = np.zeros(side * side, bool)
        mask[: int(area)] = True
        masks.append(mask.reshape(side, side))
    return masks


def test_calf_right_skewed_areas_give_bce_over_ln10():
    rng = np.random.default_rng(0)
    areas = np.clip(rng.lognormal(4.0, 0.9, size=200), 1, 4000).astype(int)
    masks = _areas_to_masks(areas) + [np.zeros((64, 64), bool)] * 50  # tumour-free slices are left out
    loss = build("calf")
    loss.fit_dataset(masks)
    assert loss.skewness == pytest.approx(stats.skew(areas.astype(float)))
    assert loss.kurtosis == pytest.approx(stats.kurtosis(areas.astype(float)))
    assert loss.skewness >= 1 and loss.branch == "log10_ce"
    state = loss.state()
    assert state["branch"] == "log10_ce" and state["n_images"] == 200
    json.dumps(state, allow_nan=False)
    logits, target = _inputs(8)
    expected = torch.nn.BCEWithLogitsLoss()(logits, target) / math.log(10)
    torch.testing.assert_close(loss(logits, target), expected, rtol=1e-12, atol=0)


def test_calf_left_skewed_areas_give_fisher_branch():
    rng = np.random.default_rng(1)
    areas = (4000 - np.clip(rng.lognormal(4.0, 0.9, size=200), 1, 3000)).astype(int)
    loss = build("calf")
    loss.fit_dataset(_areas_to_masks(areas))
    assert loss.skewness <= -1 and loss.branch == "fisher"


def test_calf_unfitted_is_bce_plus_dice():
    logits, target = _inputs(9)
    loss = build("calf")
    assert loss.branch == "bce_dice"
    assert json.loads(json.dumps(loss.state(), allow_nan=False))["skewness"] is None
    expected = F.binary_cross_entropy_with_logits(logits, target) + _monai_dice(logits, target)
    torch.testing.assert_close(loss(logits, target), expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("s, k, branch", [
    (-2.0, 0.0, "fisher"), (-1.0, 0.0, "fisher"), (-0.7, 0.0, "logit"), (-0.2, 0.0, "arcsine"),
    (0.2, -0.5, "log10_ce"), (0.2, 0.5, "bce_dice"), (0.0, -1.0, "bce_dice"), (0.7, 3.0, "ln_ce"),
    (1.0, 0.0, "log10_ce"), (3.0, 9.0, "log10_ce"), (float("nan"), float("nan"), "bce_dice"),
])
def test_calf_branch_table(s, k, branch):
    assert calf_branch(s, k) == branch


def _clipped_prob(logits: torch.Tensor) -> np.ndarray:
    return np.clip(special.expit(logits.detach().numpy()), 1e-7, 1 - 1e-7)


@pytest.mark.parametrize("branch, formula", [
    ("fisher", lambda p, y: y * np.arctanh(p) + (1 - y) * np.arctanh(1 - p)),
    ("logit", lambda p, y: y * special.logit(p) + (1 - y) * special.logit(1 - p)),
    ("arcsine", lambda p, y: y * np.arcsin(np.sqrt(p)) + (1 - y) * np.arcsin(np.sqrt(1 - p))),
])
def test_calf_forced_branches_match_numpy(branch, formula):
    logits, target = _inputs(10, scale=6.0)
    expected = -formula(_clipped_prob(logits), target.numpy()).mean()
    got = build("calf", branch=branch)(logits, target)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-9)


def _features(seed: int, batch: int = 3, shape=(6, 5), channels: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, channels, *shape), generator=gen, dtype=torch.float64).requires_grad_(True)


def test_fess_contrastive_term_is_monai_nt_xent_with_previous_view_detached():
    logits, target = _inputs(11)
    feats, prev = _features(1), _features(2)
    ref = ContrastiveLoss(temperature=0.5)
    loss = build("fess", dice_weight=0.0)
    got = loss(logits, target, features=feats, features2=prev)
    torch.testing.assert_close(got, ref(feats.flatten(1), prev.flatten(1)), rtol=1e-10, atol=0)
    got.backward()
    assert prev.grad is None and feats.grad.abs().sum() > 0
    # without a second pass the previous view is the same features, detached: still a non-zero gradient
    feats.grad = None
    got = loss(logits, target, features=feats)
    torch.testing.assert_close(got, ref(feats.flatten(1), feats.detach().flatten(1)), rtol=1e-10, atol=0)
    got.backward()
    assert feats.grad.abs().sum() > 0


def test_fess_full_loss_is_half_dice_half_contrastive():
    logits, target = _inputs(12)
    feats = _features(3)
    expected = 0.5 * _monai_dice(logits, target) + 0.5 * ContrastiveLoss(0.5)(feats.flatten(1), feats.flatten(1))
    torch.testing.assert_close(build("fess")(logits, target, features=feats), expected, rtol=1e-10, atol=0)


def test_dice_simclr_matches_monai_on_pooled_crop_views():
    logits, target = _inputs(13)
    feats = _features(4, shape=(8, 12))
    view_a = feats[:, :, :6, :9].mean(dim=(2, 3))  # 3/4 of each axis
    view_b = feats[:, :, 2:, 3:].mean(dim=(2, 3))  # offset by 1/4
    expected = 0.5 * _monai_dice(logits, target) + 0.5 * ContrastiveLoss(temperature=0.5)(view_a, view_b)
    got = build("dice_simclr")(logits, target, features=feats)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)
    second = _features(5, shape=(8, 12))
    # MONAI stores the temperature as a float32 tensor: 0.25 is exact there
    got = build("dice_simclr", dice_weight=0.0, temperature=0.25)(logits, target, features=feats, features2=second)
    expected = ContrastiveLoss(temperature=0.25)(feats.mean(dim=(2, 3)), second.mean(dim=(2, 3)))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


def test_dice_infonce_matches_per_query_formula():
    logits, target = _inputs(14)
    feats, second = _features(6), _features(7)
    q = feats.detach().mean(dim=(2, 3)).numpy()
    k = second.detach().mean(dim=(2, 3)).numpy()
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    tau = 0.5
    terms = [-np.log(np.exp(q[i] @ k[i] / tau) / sum(np.exp(q[i] @ k[j] / tau) for j in range(3))) for i in range(3)]
    got = build("dice_infonce", dice_weight=0.0)(logits, target, features=feats, features2=second)
    assert float(got.detach()) == pytest.approx(float(np.mean(terms)), rel=1e-10)


@pytest.mark.parametrize("name", ["dice_simclr", "dice_infonce"])
def test_contrastive_term_vanishes_without_negatives(name):
    logits, target = _inputs(15, shape=(1, 1, 16, 16))
    got = build(name, dice_weight=0.0)(logits, target, features=_features(8, batch=1))
    assert float(got.detach()) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["fess", "dice_simclr", "dice_infonce"])
def test_contrastive_losses_reject_bad_features(name):
    logits, target = _inputs(16)
    loss = build(name)
    with pytest.raises(ValueError, match="features"):
        loss(logits, target)
    with pytest.raises(ValueError, match="features"):
        loss(logits, target, features=torch.randn(3, 8, 4))  # missing a spatial axis
    with pytest.raises(ValueError, match="features"):
        loss(logits, target, features=torch.randn(2, 8, 4, 4))  # batch mismatch
    with pytest.raises(ValueError, match="NaN"):
        loss(logits, target, features=torch.full((3, 8, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="features2"):
        loss(logits, target, features=torch.randn(3, 8, 4, 4), features2=torch.randn(3, 8, 4, 5))


@pytest.mark.parametrize("name, bad", [
    ("combo", {"alpha": 1.5}), ("combo", {"beta": -0.1}), ("exp_log", {"gamma_dice": 2.0}),
    ("unified_focal", {"delta": 2.0}), ("dice_focal", {"alpha": 1.5}), ("dice_focal", {"alpha": "x"}),
    ("dice_topk", {"k": 0.0}), ("dice_topk", {"k": 101.0}), ("calf", {"branch": "median"}), ("fess", {"temperature": 0.0}),
    ("dice_simclr", {"dice_weight": 2.0}), ("dice_infonce", {"tau": 0.1}),
])
def test_out_of_range_hyper_parameters_raise(name, bad):
    with pytest.raises(ValueError):
        build(name, **bad)


def test_adam_steps_reduce_non_contrastive_compound_losses():
    """A few Adam steps on free logits move every non-contrastive compound loss downwards."""
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:10, 5:12] = 1
    for name in ["combo", "exp_log", "unified_focal", "dice_focal", "dice_topk", "calf"]:
        logits = torch.zeros_like(target, requires_grad=True)
        loss = build(name)
        opt = torch.optim.Adam([logits], lr=0.1)
        with torch.no_grad():
            first = float(loss(logits, target))
        for _ in range(20):
            opt.zero_grad()
            value = loss(logits, target)
            value.backward()
            opt.step()
        assert float(value.detach()) < first, name
