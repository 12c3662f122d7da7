"""Interpretability core: loss maps vs autograd of independent implementations, response curves vs
closed forms, size response, confidence histograms, fine-tuning (headless, small tensors)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from napari_segloss.interpret import (
    FineTuneCancelled,
    checkpoint_loss_map,
    confidence_histograms,
    fine_tune,
    loss_map,
    response_curves,
    save_fine_tuned,
    size_response,
    user_checkpoint_dir,
)
from napari_segloss.interpret.maps import WEIGHTED_BCE, decomposes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    """float64 logits (24, 28) and a bool target with an off-centre rectangle of tumour."""
    rng = np.random.default_rng(0)
    target = np.zeros((24, 28), bool)
    target[6:15, 9:20] = True
    logits = rng.normal(0.0, 2.0, target.shape) + np.where(target, 1.0, -1.0)
    return logits, target


def _torch_grad(fn, logits: np.ndarray) -> np.ndarray:
    """|d fn(z) / dz| by autograd of an independent implementation ``fn`` of (1, 1, H, W) logits."""
    z = torch.tensor(logits, dtype=torch.float64)[None, None].requires_grad_(True)
    fn(z).backward()
    return z.grad[0, 0].abs().numpy()


def _y(target: np.ndarray) -> torch.Tensor:
    return torch.tensor(target, dtype=torch.float64)[None, None]


# ----------------------------------------------------------------------------- loss maps


def test_bce_map_matches_torch(case):
    logits, target = case
    result = loss_map(logits, target, "bce", kind="logits")
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    expected_terms = bce(torch.tensor(logits)[None, None], _y(target))[0, 0].numpy()
    np.testing.assert_allclose(result.per_pixel, expected_terms, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.gradient, _torch_grad(lambda z: torch.nn.BCEWithLogitsLoss()(z, _y(target)), logits),
                               rtol=1e-5, atol=1e-12)
    assert result.value == pytest.approx(expected_terms.mean(), rel=1e-9)
    assert result.gradient.dtype == np.float32 and result.gradient.shape == target.shape and result.index is None


def test_weighted_bce_map_matches_torch_pos_weight(case):
    logits, target = case
    result = loss_map(logits, target, "weighted_bce", kind="logits", pos_weight=3.0)
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0, dtype=torch.float64), reduction="none")
    expected = bce(torch.tensor(logits)[None, None], _y(target))[0, 0].numpy()
    np.testing.assert_allclose(result.per_pixel, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.gradient, _torch_grad(lambda z: bce(z, _y(target)).mean(), logits),
                               rtol=1e-5, atol=1e-12)


def test_focal_map_matches_torchvision(case):
    from torchvision.ops import sigmoid_focal_loss

    logits, target = case
    result = loss_map(logits, target, "focal", kind="logits", alpha=0.25, gamma=2.0)
    expected = sigmoid_focal_loss(torch.tensor(logits)[None, None], _y(target), alpha=0.25, gamma=2.0,
                                  reduction="none")[0, 0].numpy()
    np.testing.assert_allclose(result.per_pixel, expected, rtol=1e-5, atol=1e-9)
    grad = _torch_grad(lambda z: sigmoid_focal_loss(z, _y(target), alpha=0.25, gamma=2.0, reduction="mean"), logits)
    np.testing.assert_allclose(result.gradient, grad, rtol=1e-4, atol=1e-12)


def test_topk_per_pixel_is_the_hardest_pixels_cross_entropy(case):
    logits, target = case
    result = loss_map(logits, target, "topk", kind="logits", k=10.0)
    ce = torch.nn.BCEWithLogitsLoss(reduction="none")(torch.tensor(logits)[None, None], _y(target))[0, 0].numpy()
    count = int(ce.size * 0.10)
    chosen = np.zeros(ce.size, bool)
    chosen[np.argsort(ce.ravel())[-count:]] = True
    expected = np.where(chosen.reshape(ce.shape), ce * ce.size / count, 0.0)
    np.testing.assert_allclose(result.per_pixel, expected, rtol=1e-5, atol=1e-7)
    assert np.count_nonzero(result.gradient) == count


@pytest.mark.parametrize(("name", "monai_kwargs"), [("dice", {}), ("tversky", {"alpha": 0.3, "beta": 0.7})])
def test_region_loss_maps_match_monai(case, name, monai_kwargs):
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = case
    cls = monai_losses.TverskyLoss if name == "tversky" else monai_losses.DiceLoss
    reference = cls(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, **monai_kwargs)
    result = loss_map(logits, target, name, kind="logits")
    np.testing.assert_allclose(result.gradient, _torch_grad(lambda z: reference(z, _y(target)), logits),
                               rtol=1e-5, atol=1e-12)
    assert result.per_pixel is None and not decomposes(name)


@pytest.mark.parametrize("name", sorted(WEIGHTED_BCE | {"focal", "hausdorff_dt", "region_wise"}))
def test_per_pixel_terms_add_up_to_the_loss(case, name):
    from napari_segloss.losses import build

    logits, target = case
    result = loss_map(logits, target, name, kind="logits", spacing=(0.8, 1.2))
    assert result.per_pixel is not None
    assert result.per_pixel.mean() == pytest.approx(result.value, rel=1e-5, abs=1e-7)
    kwargs = {"spacing": (0.8, 1.2)} if name in {"distance_bce", "boundary_aware", "shape_aware",
                                                  "hausdorff_dt", "region_wise"} else {}
    direct = build(name)(torch.tensor(logits)[None, None], _y(target), **kwargs)
    assert result.value == pytest.approx(float(direct), rel=1e-6)  # target_dist precomputed in float32


def test_focal_ignores_easy_background_where_bce_does_not(case):
    logits, target = case
    easy = ~target & (logits < -3.0)
    hard = ~target & (logits > 1.0)
    assert easy.sum() > 10 and hard.sum() > 10

    def ratio(name: str) -> float:
        grad = loss_map(logits, target, name, kind="logits").gradient
        return float(grad[easy].mean() / grad[hard].mean())

    assert ratio("focal") < 0.05 * ratio("bce")


def test_tversky_pushes_harder_on_missed_tumour_than_dice():
    target = np.zeros((20, 20), bool)
    target[5:15, 5:15] = True
    prob = np.where(target, 0.5, 0.5)
    tversky = loss_map(prob, target, "tversky").gradient
    dice = loss_map(prob, target, "dice").gradient
    # ratio of the push on a tumour pixel to the push on a background pixel
    assert tversky[10, 10] / tversky[0, 0] > 1.5 * dice[10, 10] / dice[0, 0]


def test_probability_input_and_3d_slice(case):
    logits, target = case
    prob = 1.0 / (1.0 + np.exp(-logits))
    from_prob = loss_map(prob, target, "dice")
    from_logits = loss_map(logits, target, "dice", kind="logits")
    np.testing.assert_allclose(from_prob.gradient, from_logits.gradient, rtol=1e-4, atol=1e-10)
    volume, truth = np.stack([prob[::-1], prob]), np.stack([target[::-1], target])
    sliced = loss_map(volume, truth, "bce", index=1)
    np.testing.assert_allclose(sliced.gradient, loss_map(prob, target, "bce").gradient)
    assert sliced.index == 1 and sliced.gradient.shape == target.shape
    with pytest.raises(ValueError, match="index"):
        loss_map(volume, truth, "bce")
    with pytest.raises(ValueError, match="shape"):
        loss_map(prob, target[:-1], "bce")
    with pytest.raises(ValueError, match="features"):
        loss_map(prob, target, "fess")


def test_checkpoint_loss_map_uses_the_models_logits_and_features(tiny_registry):
    from napari_segloss.checkpoints import load
    from napari_segloss.inference import predict

    rng = np.random.default_rng(1)
    image = rng.integers(0, 1000, size=(40, 50)).astype(np.uint16)
    target = np.zeros((40, 50), bool)
    target[10:25, 12:30] = True
    loaded = load("tiny_dice")
    result = checkpoint_loss_map(loaded, image, target, "dice")
    probability = predict(image, loaded, device="cpu").probability
    expected = loss_map(probability.astype(np.float64), target, "dice", kind="probability")
    np.testing.assert_allclose(result.gradient, expected.gradient, rtol=1e-3, atol=1e-8)
    with_features = checkpoint_loss_map(loaded, np.stack([image, image]), np.stack([target, target]), "fess", index=0)
    assert with_features.gradient.shape == (40, 50) and with_features.index == 0
    assert np.isfinite(with_features.value) and with_features.gradient.max() > 0


# ----------------------------------------------------------------------------- response curves


P = np.linspace(0.02, 0.98, 25)


def _numeric_derivative(fn, p: np.ndarray, h: float = 1e-6) -> np.ndarray:
    return (fn(p + h) - fn(p - h)) / (2 * h)


def test_response_curves_match_closed_forms_on_one_pixel():
    alpha, gamma, s = 0.25, 2.0, 1e-5
    forms = {
        "bce": (lambda p: -np.log(p), lambda p: -np.log(1 - p)),
        "focal": (lambda p: -alpha * (1 - p) ** gamma * np.log(p), lambda p: -(1 - alpha) * p**gamma * np.log(1 - p)),
        "dice": (lambda p: 1 - (2 * p + s) / (1 + p + s), lambda p: 1 - s / (p + s)),
    }
    for method in ("auto", "autograd"):
        curves = response_curves(list(forms), P, context="pixel", method=method)
        for name, (fg, bg) in forms.items():
            curve = curves[name]
            assert curve.method == ("analytic" if method == "auto" else "autograd")
            np.testing.assert_allclose(curve.fg_value, fg(P), rtol=1e-9, err_msg=name)
            np.testing.assert_allclose(curve.bg_value, bg(P), rtol=1e-9, err_msg=name)
            np.testing.assert_allclose(curve.fg_grad, _numeric_derivative(fg, P), rtol=1e-5, err_msg=name)
            np.testing.assert_allclose(curve.bg_grad, _numeric_derivative(bg, P), rtol=1e-5, atol=1e-9, err_msg=name)


def test_analytic_curves_equal_the_implementation_in_the_image_context():
    names = ["bce", "focal", "dice"]
    analytic = response_curves(names, P, hparams={"focal": {"gamma": 1.5}})
    numeric = response_curves(names, P, method="autograd", hparams={"focal": {"gamma": 1.5}})
    for name in names:
        for field in ("fg_value", "fg_grad", "bg_value", "bg_grad"):
            np.testing.assert_allclose(getattr(analytic[name], field), getattr(numeric[name], field),
                                       rtol=1e-7, atol=1e-12, err_msg=f"{name}.{field}")


def test_numerical_curve_of_tversky_matches_its_one_pixel_form():
    a, b, s = 0.3, 0.7, 1e-5
    curve = response_curves(["TverskyLoss"], P, context="pixel")["tversky"]
    fg = lambda p: 1 - (p + s) / (p + b * (1 - p) + s)  # noqa: E731
    bg = lambda p: 1 - s / (a * p + s)  # noqa: E731
    assert curve.method == "autograd"
    np.testing.assert_allclose(curve.fg_value, fg(P), rtol=1e-9)
    np.testing.assert_allclose(curve.fg_grad, _numeric_derivative(fg, P), rtol=1e-5)
    np.testing.assert_allclose(curve.bg_value, bg(P), rtol=1e-9)


def test_response_curves_report_losses_that_cannot_run(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(tmp_path))  # no InverseForm net there
    curves = response_curves(["inverseform", "fess"], P[:3])
    assert "InverseForm" in curves["inverseform"].note and np.isnan(curves["inverseform"].fg_value).all()
    assert curves["fess"].note == "" and np.isfinite(curves["fess"].fg_grad).all()
    with pytest.raises(ValueError, match="inside"):
        response_curves(["bce"], [0.0, 0.5])


# ----------------------------------------------------------------------------- size response


def test_size_response_grows_both_ways_and_tversky_is_asymmetric():
    from scipy import ndimage
    from skimage.morphology import disk

    rows, cols = np.mgrid[:64, :64]
    truth = (rows - 30) ** 2 + (cols - 33) ** 2 <= 12**2
    radii = list(range(-4, 5))
    names = ["bce", "focal", "dice", "iou", "tversky"]
    result = size_response(names, truth, radii)
    zero = radii.index(0)
    for name in names:
        values = result.values[name]
        assert np.all(np.diff(values[: zero + 1]) < 0), name  # shrinking: the loss falls towards r = 0
        assert np.all(np.diff(values[zero:]) > 0), name  # growing: the loss rises
    for k, r in enumerate(radii):
        op = ndimage.binary_dilation if r > 0 else ndimage.binary_erosion
        mask = truth if r == 0 else op(truth, structure=disk(abs(r)))
        assert result.false_positives[k] == (mask & ~truth).sum() and result.false_negatives[k] == (truth & ~mask).sum()

    def under_over(name: str) -> float:
        v = result.values[name]
        return (v[0] - v[zero]) / (v[-1] - v[zero])

    assert under_over("tversky") > 1.5 * under_over("dice")


# ----------------------------------------------------------------------------- confidence


def test_confidence_histograms_match_numpy():
    rng = np.random.default_rng(3)
    prob = rng.beta(0.5, 2.0, size=(2, 30, 30))
    truth = rng.random((2, 30, 30)) < 0.2
    result = confidence_histograms(prob, truth, bins=10)
    np.testing.assert_allclose(result.tumour, np.histogram(prob[truth], bins=10, range=(0, 1))[0] / truth.sum())
    np.testing.assert_allclose(result.background, np.histogram(prob[~truth], bins=10, range=(0, 1))[0] / (~truth).sum())
    assert result.n_tumour == truth.sum() and result.mean_background == pytest.approx(prob[~truth].mean())
    within = np.zeros_like(truth)
    within[0] = True
    restricted = confidence_histograms(prob, truth, np.array([0.0, 0.5, 1.0]), within=within)
    assert restricted.n_tumour + restricted.n_background == 900 and restricted.tumour.sum() == pytest.approx(1.0)
    empty = confidence_histograms(prob, np.zeros_like(truth))
    assert empty.n_tumour == 0 and np.isnan(empty.mean_tumour) and not empty.tumour.any()
    with pytest.raises(ValueError):
        confidence_histograms(prob + 1.0, truth)


# ----------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def glioma():
    from napari_segloss.data.synthetic import generate_slice

    return generate_slice(6, 128)


def test_fine_tune_improves_dice_and_saves_a_listed_checkpoint(tiny_registry, glioma, tmp_path, monkeypatch):
    from napari_segloss.checkpoints import list_checkpoints, load
    from napari_segloss.inference import predict
    from napari_segloss.metrics import compute

    reports = []
    model, card = fine_tune("tiny_dice", glioma.image, glioma.mask, loss="dice", steps=30, lr=3e-3, batch=2,
                            device="cpu", progress=reports.append, name="tiny_dice_ft")
    tuned = card.recipe["fine_tune"]
    assert [r.step for r in reports] == list(range(1, 31))
    assert tuned["fit_dice_after"] > tuned["fit_dice_before"] + 0.15
    assert tuned["parent"] == "tiny_dice" and tuned["parent_sha256"] == load("tiny_dice").card.weights_sha256
    assert card.loss == "dice" and card.family == "region" and card.history[-1]["step"] == 30

    out = tmp_path / "own_checkpoints"
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", str(tiny_registry))
    environment = dict(os.environ)
    path = save_fine_tuned(model, card, out)
    assert path == out / "tiny_dice_ft.safetensors"
    assert dict(os.environ) == environment  # configuration is passed, never put into the environment
    assert "tiny_dice_ft" not in [i.name for i in list_checkpoints()]  # another folder: listed when named
    assert "tiny_dice_ft" in [i.name for i in list_checkpoints([out])]
    probability = predict(glioma.image, str(path), device="cpu").probability
    dice = compute(probability >= 0.5, glioma.mask)["dice"]
    assert dice == pytest.approx(tuned["fit_dice_after"], abs=0.02)
    with pytest.raises(FileExistsError):
        save_fine_tuned(model, card, out)
    saved = save_fine_tuned(model, card)  # the user folder, which the registry always searches
    assert saved.parent == user_checkpoint_dir() and dict(os.environ) == environment
    assert next(i for i in list_checkpoints() if i.name == "tiny_dice_ft").path.parent == user_checkpoint_dir()


def test_fine_tune_cancel_and_synthetic_mix(tiny_registry, glioma, tmp_path, monkeypatch):
    import napari_segloss.interpret.finetune as finetune

    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(FineTuneCancelled, match="2 of 5"):
        fine_tune("tiny_bce", glioma.image, glioma.mask, loss="bce", steps=5, device="cpu", cancel=cancel)
    monkeypatch.setattr(finetune, "N_SYNTHETIC", 2)
    monkeypatch.setenv("NAPARI_SEGLOSS_CACHE_DIR", str(tmp_path))
    volume, masks = np.stack([glioma.image] * 2), np.stack([glioma.mask] * 2)
    _, card = fine_tune("tiny_bce", [volume], [masks], loss="focal", steps=2, batch=2, device="cpu",
                        include_synthetic=True)
    assert card.data["n_slices"] == 2 and card.data["synthetic"]["n"] == 2
    with pytest.raises(ValueError, match="shape"):
        fine_tune("tiny_bce", glioma.image, glioma.mask[:-1], loss="bce", steps=1, device="cpu")
