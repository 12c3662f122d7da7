"""Calibration measures and the post-hoc temperature (napari_segloss.interpret.calibration),
cross-checked against scikit-learn and torchmetrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import binary_calibration_error

from napari_segloss.interpret import calibration as cal


def _miscalibrated(n: int, seed: int = 0, temperature: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and logits ``temperature * z``: over-confident by ``temperature``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    return temperature * z, y


def test_reliability_width_matches_sklearn_calibration_curve() -> None:
    rng = np.random.default_rng(1)
    p, y = rng.random(5000), rng.random(5000) < 0.3
    diagram = cal.reliability(p, y, n_bins=15)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy="uniform")
    keep = diagram.count > 0
    np.testing.assert_allclose(diagram.frequency[keep], prob_true, rtol=1e-12)
    np.testing.assert_allclose(diagram.confidence[keep], prob_pred, rtol=1e-12)
    assert diagram.count.sum() == 5000


def test_reliability_mass_matches_sklearn_quantile_bins() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(0.5, 2.0, 15 * 400)  # skewed: equal-width bins would be very unequal
    y = rng.random(p.size) < p
    diagram = cal.reliability(p, y, n_bins=15, strategy="mass")
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy="quantile")
    assert np.all(diagram.count == 400)
    np.testing.assert_allclose(diagram.frequency, prob_true, rtol=1e-12)
    np.testing.assert_allclose(diagram.confidence, prob_pred, rtol=1e-12)


def test_ece_and_mce_match_torchmetrics() -> None:
    z, y = _miscalibrated(20000, seed=3)
    p = 1.0 / (1.0 + np.exp(-z))
    preds, target = torch.from_numpy(p), torch.from_numpy(y.astype(np.int64))
    ece = float(binary_calibration_error(preds, target, n_bins=15, norm="l1"))
    mce = float(binary_calibration_error(preds, target, n_bins=15, norm="max"))
    assert cal.expected_calibration_error(p, y) == pytest.approx(ece, abs=1e-9)
    assert cal.maximum_calibration_error(p, y) == pytest.approx(mce, abs=1e-9)
    assert ece > 0.05  # an over-confident model is measurably miscalibrated


def test_brier_and_nll_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    p, y = rng.uniform(0.01, 0.99, 3000), rng.random(3000) < 0.4
    assert cal.brier_score(p, y) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert cal.negative_log_likelihood(p, y) == pytest.approx(log_loss(y, p), rel=1e-12)


def test_nll_of_saturated_wrong_pixel_is_bounded() -> None:
    assert cal.negative_log_likelihood(np.array([1.0]), np.array([0])) == pytest.approx(-np.log(cal.EPS), rel=1e-6)


def test_perfectly_calibrated_data_has_small_ece_and_adaptive_ece() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    assert cal.expected_calibration_error(p, y) < 0.01
    assert cal.expected_calibration_error(p, y, strategy="mass") < 0.01


def test_fit_temperature_recovers_the_over_confidence() -> None:
    z, y = _miscalibrated(60000, seed=6, temperature=3.0)
    t = cal.fit_temperature(z, y)
    assert t == pytest.approx(3.0, rel=0.05)
    # the fitted T is where the exact NLL is lowest (against torch's BCE with logits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    zt, yt = torch.from_numpy(z), torch.from_numpy(y.astype(np.float64))
    at = float(bce(zt / t, yt))
    assert at <= float(bce(zt / (t * 1.05), yt)) and at <= float(bce(zt / (t / 1.05), yt))
    under, y2 = _miscalibrated(60000, seed=7, temperature=0.5)
    assert cal.fit_temperature(under, y2) == pytest.approx(0.5, rel=0.05)


def test_temperature_keeps_the_mask_at_one_half() -> None:
    z, _ = _miscalibrated(5000, seed=8)
    before, after = cal.apply_temperature(z, 1.0), cal.apply_temperature(z, 2.7)
    np.testing.assert_array_equal(before >= 0.5, after >= 0.5)
    rescaled = cal.rescale_probability(before, 2.7)
    np.testing.assert_allclose(rescaled, after, atol=1e-3)  # float32 probabilities near 1 lose logit digits
    np.testing.assert_array_equal(rescaled >= 0.5, before >= 0.5)
    assert cal.rescale_probability(np.array([0.0, 1.0], np.float32), 3.0).tolist() == [0.0, 1.0]


def test_slice_presence_uses_the_highest_probability() -> None:
    prob = np.zeros((3, 4, 4), np.float32)
    prob[0, 1, 1], prob[1, 2, 2] = 0.8, 0.3
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 1, 1] = True
    p, y = cal.slice_presence(prob, masks)
    np.testing.assert_allclose(p, [0.8, 0.3, 0.0])
    assert y.tolist() == [True, False, False]


def test_calibration_summary_is_json_and_improves_after_temperature() -> None:
    rng = np.random.default_rng(9)
    z = rng.normal(0.0, 1.5, (12, 16, 16))
    y = rng.random(z.shape) < 1.0 / (1.0 + np.exp(-z))
    logits = 4.0 * z
    summary = cal.calibration_summary(logits[:6], y[:6], logits[6:], y[6:])
    json.dumps(summary, allow_nan=False)
    assert summary["temperature"] == pytest.approx(4.0, rel=0.15)
    pixels = summary["pixels"]
    assert pixels["after"]["ece"] < pixels["before"]["ece"]
    assert pixels["after"]["nll"] < pixels["before"]["nll"]
    assert pixels["before"]["n"] == 6 * 16 * 16 and summary["slices"]["before"]["n"] == 6
    width = cal.Reliability.from_dict(pixels["before"]["reliability"]["width"])
    test_p = 1.0 / (1.0 + np.exp(-logits[6:]))
    assert width.ece == pytest.approx(cal.expected_calibration_error(test_p, y[6:]), rel=1e-6)
    assert summary["fit"]["nll_after"] <= summary["fit"]["nll_before"]


@pytest.mark.parametrize(("probability", "target", "message"), [
    (np.array([0.2, 1.3]), np.array([0, 1]), "in \\[0, 1\\]"),
    (np.array([0.2, np.nan]), np.array([0, 1]), "finite"),
    (np.zeros(3), np.zeros(4), "shape"),
    (np.zeros(0), np.zeros(0), "at least one"),
])
def test_bad_input_is_one_clear_error(probability: np.ndarray, target: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cal.calibration_metrics(probability, target)


def test_fit_temperature_refuses_probabilities_that_saturate_to_infinity() -> None:
    with pytest.raises(ValueError, match="finite"):
        cal.fit_temperature(np.array([np.inf, -1.0]), np.array([1, 0]))


def test_uncertainty_layer_matches_numpy_std_and_scipy_entropy() -> None:
    from scipy.stats import entropy

    from napari_segloss.overlays import uncertainty

    rng = np.random.default_rng(10)
    maps = [rng.random((5, 7)).astype(np.float32) for _ in range(4)]
    np.testing.assert_allclose(uncertainty(maps), np.std(np.stack(maps), axis=0), atol=1e-6)
    mean = np.mean(np.stack(maps).astype(np.float64), axis=0)
    expected = entropy(np.stack([mean, 1 - mean]), base=2, axis=0)
    np.testing.assert_allclose(uncertainty(maps, "entropy"), expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        uncertainty(maps[:1])
    with pytest.raises(ValueError, match="differ in shape"):
        uncertainty([maps[0], maps[1][:3]])


def test_write_card_rewrites_only_the_card_and_refuses_other_weights(tiny_checkpoint_dir, tmp_path) -> None:
    import shutil

    from napari_segloss.checkpoints import CheckpointError, read_card, write_card

    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_checkpoint_dir / f"tiny_bce{suffix}", tmp_path / f"tiny_bce{suffix}")
    weights = (tmp_path / "tiny_bce.safetensors").read_bytes()
    card = read_card(tmp_path / "tiny_bce.json")
    card.calibration = {"temperature": 1.5}
    write_card(card, tmp_path)
    assert read_card(tmp_path / "tiny_bce.json").calibration == {"temperature": 1.5}
    assert (tmp_path / "tiny_bce.safetensors").read_bytes() == weights
    (tmp_path / "tiny_bce.safetensors").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="sha256"):
        write_card(card, tmp_path)


def test_batch_summary_and_report_show_the_cards_test_ece(tiny_checkpoint_dir, tmp_path) -> None:
    import shutil

    from napari_segloss.batch import report
    from napari_segloss.batch.process import CheckpointRef
    from napari_segloss.checkpoints import read_card, write_card

    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_checkpoint_dir / f"tiny_dice{suffix}", tmp_path / f"tiny_dice{suffix}")
    z, y = _miscalibrated(2 * 8 * 8, seed=11)
    card = read_card(tmp_path / "tiny_dice.json")
    card.calibration = cal.calibration_summary(z[:128].reshape(2, 8, 8), y[:128].reshape(2, 8, 8),
                                               z[:128].reshape(2, 8, 8), y[:128].reshape(2, 8, 8))
    write_card(card, tmp_path)
    refs = [CheckpointRef("tiny_dice", "dice", "region", str(tmp_path / "tiny_dice.json")),
            CheckpointRef("tiny_bce", "bce", "pixel", str(tiny_checkpoint_dir / "tiny_bce.json"))]
    rows = report.summarize([], refs)
    assert rows[0]["card_ece"] == pytest.approx(card.calibration["pixels"]["before"]["ece"])
    assert rows[0]["card_temperature"] == pytest.approx(card.calibration["temperature"])
    assert np.isnan(rows[1]["card_ece"])  # a card without calibration
    page = report.render_html(summary=rows, run={}, entries=[], boxplot=None, thumbnails=[], checkpoints=refs)
    assert "test ECE (card)" in page and f"{rows[0]['card_ece']:.4f}" in page and "n/a" in page


def test_results_page_tabulates_plots_and_ranks_from_the_cards(tiny_checkpoint_dir, tmp_path) -> None:
    from types import SimpleNamespace

    from napari_segloss.checkpoints import load, read_card
    from napari_segloss.train import results

    cards = []
    for k, name in enumerate(("tiny_dice", "tiny_focal", "tiny_bce")):
        card = read_card(tiny_checkpoint_dir / f"{name}.json").to_dict()
        z, y = _miscalibrated(2 * 8 * 8, seed=20 + k, temperature=1.0 + k)
        z, y = z.reshape(2, 8, 8), y.reshape(2, 8, 8)
        card["calibration"] = cal.calibration_summary(z, y, z, y) if k < 2 else {}
        card["test_metrics"] = {"dice": 0.5 - 0.1 * k}
        cards.append(card)
    text = results.table(cards, {})
    row = next(line for line in text.splitlines() if "| tiny_focal |" in line)
    numbers = cal.headline(cards[1]["calibration"])
    assert f"{numbers['ece']:.4f} → {numbers['ece_calibrated']:.4f} ({numbers['temperature']:.2f})" in row
    assert "n/a → n/a (n/a)" in next(line for line in text.splitlines() if "| tiny_bce |" in line)
    assert results.reliability_figure(cards, tmp_path / "rel.png").stat().st_size > 1000
    assert results.reliability_figure([cards[2]], tmp_path / "none.png") is None

    rng = np.random.default_rng(0)
    masks = np.zeros((5, 64, 64), bool)
    masks[:4, 20:40, 20:40] = True
    test = SimpleNamespace(images=rng.normal(size=(5, 64, 64)).astype(np.float32), masks=masks,
                           spacing=np.ones((5, 2)), kinds=["glioma"] * 5, names=[f"s{i}" for i in range(5)])
    models = {c["name"]: load(tiny_checkpoint_dir / f"{c['name']}.json") for c in cards}
    curves = results.landscapes(models, test, steps=3)
    assert set(curves) == set(models) and set(curves["tiny_bce"].values) == {"own", "dice", "bce"}
    assert results.landscape_figure(curves, cards, tmp_path / "land.png").stat().st_size > 1000
    notes = results.calibration_findings(cards, curves)
    hottest = max(cards[:2], key=lambda c: c["calibration"]["temperature"])["name"]
    assert hottest in notes[0] and "Flattest" in notes[2]

    # the part of the page both sets carry (the real set's with the "_real" figures)
    paths = [tiny_checkpoint_dir / f"{c['name']}.json" for c in cards]
    lines = results.analysis_section(cards, paths, test, tmp_path, "_real")
    page = "\n".join(lines)
    for figure in ("results_curves_real.png", "results_reliability_real.png", "results_landscapes_real.png"):
        assert f"]({figure})" in page and (tmp_path / figure).stat().st_size > 1000
    assert "## Findings under the shared recipe" in page and notes[0] in page
    assert "results_landscapes" not in "\n".join(results.analysis_section(cards, paths, None, tmp_path))


def test_make_calibration_fills_the_card_and_keeps_the_weights(tiny_checkpoint_dir, tmp_path, monkeypatch) -> None:
    import importlib.util
    import shutil
    from pathlib import Path

    from napari_segloss.checkpoints import load, read_card
    from napari_segloss.inference import Segmenter
    from napari_segloss.train.data import SliceSet, Splits

    spec = importlib.util.spec_from_file_location(
        "make_calibration", Path(__file__).resolve().parents[1] / "scripts" / "make_calibration.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_checkpoint_dir / f"tiny_focal{suffix}", tmp_path / f"tiny_focal{suffix}")
    weights = (tmp_path / "tiny_focal.safetensors").read_bytes()
    rng = np.random.default_rng(12)

    def slices(n: int) -> SliceSet:
        masks = np.zeros((n, 64, 64), bool)
        masks[: n - 1, 20:40, 24:44] = True
        images = (rng.normal(0.2, 0.05, masks.shape) + 0.5 * masks).astype(np.float32)
        return SliceSet(images, masks, np.ones((n, 2)), ["glioma"] * n, [f"s{i}" for i in range(n)])

    splits = Splits(None, slices(3), slices(4), None)
    monkeypatch.setattr(script, "load_splits", lambda data, recipe, norm: splits)
    assert script.main(["--weights", str(tmp_path)]) == 0
    stored = read_card(tmp_path / "tiny_focal.json").calibration
    assert (tmp_path / "tiny_focal.safetensors").read_bytes() == weights
    model = load(tmp_path / "tiny_focal.json").model
    segmenter = Segmenter(model)
    expected = cal.calibration_summary(segmenter.logits(splits.val.images), splits.val.masks,
                                       segmenter.logits(splits.test.images), splits.test.masks)
    assert stored["temperature"] == pytest.approx(expected["temperature"], rel=1e-6)
    assert stored["slices"]["after"]["ece"] == pytest.approx(expected["slices"]["after"]["ece"], rel=1e-6)
