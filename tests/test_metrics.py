"""napari_segloss.metrics against the reference numbers of io_metrics.md §2.3, MONAI and scikit-learn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_segloss import metrics


def square(r0: int, r1: int, c0: int, c1: int, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[r0:r1, c0:c1] = True
    return out


def _zshift_pair() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((8, 16, 16), dtype=bool)
    truth[2:6, 4:12, 4:12] = True
    pred = np.zeros_like(truth)
    pred[3:7, 4:12, 4:12] = True
    return pred, truth


GT6 = square(4, 10, 4, 10)
EMPTY = np.zeros((16, 16), dtype=bool)
NAN = math.nan

# io_metrics.md §2.3, "MONAI" columns (Dice with ignore_empty=False where it is not NaN) and
# this module's empty-mask policy for the empty cases: (pred, truth, spacing, expected)
REFERENCE = {
    "A identical": (GT6, GT6, (1, 1), dict(
        tp=36, fp=0, fn=0, tn=220, dice=1, iou=1, precision=1, recall=1, specificity=1, accuracy=1,
        hd95=0, assd=0, nsd=1)),
    "B shift2": (square(4, 10, 6, 12), GT6, (1, 1), dict(
        tp=24, fp=12, fn=12, tn=208, dice=0.6667, iou=0.5, precision=0.6667, recall=0.6667,
        specificity=0.9455, accuracy=0.9062, hd95=2, assd=1, nsd=0.6)),
    "C disjoint": (square(10, 14, 10, 14), square(2, 6, 2, 6), (1, 1), dict(
        tp=0, fp=16, fn=16, tn=224, dice=0, iou=0, precision=0, recall=0, specificity=0.9333,
        accuracy=0.875, hd95=10.9377, assd=9.2782, nsd=0)),
    "D empty pred": (EMPTY, GT6, (1, 1), dict(
        tp=0, fp=0, fn=36, tn=220, dice=0, iou=0, precision=NAN, recall=0, specificity=1,
        accuracy=0.8594, hd95=NAN, assd=NAN, nsd=0, pct_correct=0, pct_over=0, pct_missed=100)),
    "E empty GT": (GT6, EMPTY, (1, 1), dict(
        tp=0, fp=36, fn=0, tn=220, dice=0, iou=0, precision=0, recall=NAN, specificity=0.8594,
        accuracy=0.8594, hd95=NAN, assd=NAN, nsd=0, pct_correct=NAN, pct_over=NAN, pct_missed=NAN,
        volume_rel_diff=NAN)),
    "F both empty": (EMPTY, EMPTY, (1, 1), dict(
        tp=0, fp=0, fn=0, tn=256, dice=NAN, iou=NAN, precision=NAN, recall=NAN, specificity=1,
        accuracy=1, f2=NAN, hd95=NAN, assd=NAN, nsd=NAN, volume_pred=0, volume_truth=0,
        pct_correct=NAN)),
    "I small pred inside GT": (square(6, 8, 6, 8), GT6, (1, 1), dict(
        tp=4, fp=0, fn=32, tn=220, dice=0.2, iou=0.1111, precision=1, recall=0.1111, specificity=1,
        accuracy=0.875, hd95=2.8284, assd=2.2168, nsd=0)),
    "G 3D z-shift 5mm": (*_zshift_pair(), (5, 1, 1), dict(
        tp=192, fp=64, fn=64, tn=1728, dice=0.75, iou=0.6, precision=0.75, recall=0.75,
        specificity=0.9643, accuracy=0.9375, hd95=5, assd=2.0435, nsd=0.5652,
        volume_pred=1280, volume_truth=1280)),
    "H 3D z-shift 1mm": (*_zshift_pair(), (1, 1, 1), dict(
        hd95=1, assd=0.5435, nsd=1, dice=0.75)),
}


def assert_same(actual: float, expected: float, tol: float, label: str) -> None:
    if math.isnan(expected):
        assert math.isnan(actual), f"{label}: expected NaN, got {actual}"
    else:
        assert actual == pytest.approx(expected, abs=tol), label


@pytest.mark.parametrize("case", list(REFERENCE))
def test_reference_numbers(case: str) -> None:
    pred, truth, spacing, expected = REFERENCE[case]
    result = metrics.compute(pred, truth, spacing)
    for key, value in expected.items():
        assert_same(result[key], float(value), 5e-5, f"{case} {key}")


def test_result_dict_layout() -> None:
    result = metrics.compute(square(4, 10, 6, 12), GT6)
    assert tuple(result) == metrics.METRIC_KEYS
    for key in ("tp", "fp", "fn", "tn"):
        assert type(result[key]) is int
    assert all(type(result[k]) is float for k in metrics.METRIC_KEYS if k not in ("tp", "fp", "fn", "tn"))
    for pred, truth, spacing, _ in REFERENCE.values():
        values = metrics.compute(pred, truth, spacing).values()
        assert not any(math.isinf(v) for v in values), "undefined values must be NaN, never inf"


def random_blobs(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, rng.uniform(0.6, 0.9))


def monai_reference(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], tol: float) -> dict:
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    sp = list(spacing)
    confusion = monai_metrics.get_confusion_matrix(p, t, include_background=True)
    ref = {
        "dice": monai_metrics.DiceMetric(include_background=True, reduction="none")(p, t),
        "iou": monai_metrics.compute_iou(p, t, include_background=True),
        "hd95": monai_metrics.compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=sp),
        "assd": monai_metrics.compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=sp),
        "nsd": monai_metrics.compute_surface_dice(p, t, [tol], include_background=True, spacing=sp),
    }
    for name, monai_name in [("precision", "precision"), ("recall", "sensitivity"),
                             ("specificity", "specificity"), ("accuracy", "accuracy")]:
        ref[name] = monai_metrics.compute_confusion_matrix_metric(monai_name, confusion)
    return {k: float(v.reshape(-1)[0]) for k, v in ref.items()}


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # inside MONAI itself
@pytest.mark.parametrize(
    ("shape", "spacing", "sigma", "tol"),
    [((48, 48), (1.0, 1.0), 3.0, 1.0), ((40, 56), (0.5, 0.8), 2.5, 1.5), ((12, 32, 32), (3.0, 0.7, 0.7), 2.0, 1.0)],
)
def test_matches_monai_on_random_blobs(shape: tuple[int, ...], spacing: tuple[float, ...], sigma: float, tol: float) -> None:
    rng = np.random.default_rng(len(shape) * 100 + int(10 * spacing[-1]))
    for _ in range(5):
        pred, truth = random_blobs(rng, shape, sigma), random_blobs(rng, shape, sigma)
        ours = metrics.compute(pred, truth, spacing, tolerance_mm=tol)
        ref = monai_reference(pred, truth, spacing, tol)
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key


def test_counts_and_scores_match_sklearn() -> None:
    sk_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    pred, truth = random_blobs(rng, (40, 40), 2.0), random_blobs(rng, (40, 40), 2.0)
    y_pred, y_true = pred.ravel(), truth.ravel()
    result = metrics.compute(pred, truth)
    (tn, fp), (fn, tp) = sk_metrics.confusion_matrix(y_true, y_pred, labels=[False, True])
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (tp, fp, fn, tn)
    assert result["dice"] == pytest.approx(sk_metrics.f1_score(y_true, y_pred))
    assert result["iou"] == pytest.approx(sk_metrics.jaccard_score(y_true, y_pred))
    assert result["precision"] == pytest.approx(sk_metrics.precision_score(y_true, y_pred))
    assert result["recall"] == pytest.approx(sk_metrics.recall_score(y_true, y_pred))
    assert result["accuracy"] == pytest.approx(sk_metrics.accuracy_score(y_true, y_pred))
    assert result["f2"] == pytest.approx(sk_metrics.fbeta_score(y_true, y_pred, beta=2))
    assert metrics.fbeta(pred, truth, 0.5) == pytest.approx(sk_metrics.fbeta_score(y_true, y_pred, beta=0.5))
    assert metrics.fbeta(pred, truth, 1.0) == pytest.approx(result["dice"])
    with pytest.raises(ValueError, match="beta"):
        metrics.fbeta(pred, truth, 0.0)


def test_volumes_percentages_and_units() -> None:
    truth = np.zeros((6, 20, 20), dtype=bool)
    truth[1:5, 5:15, 5:15] = True  # 400 voxels
    pred = np.zeros_like(truth)
    pred[1:5, 5:15, 8:18] = True  # 400 voxels, 280 shared
    pred[0, 0, 0:20] = True  # +20 false positives
    spacing = (2.5, 0.5, 0.4)
    result = metrics.compute(pred, truth, spacing)
    voxel = 2.5 * 0.5 * 0.4
    assert result["volume_truth"] == pytest.approx(400 * voxel)
    assert result["volume_pred"] == pytest.approx(420 * voxel)
    assert result["volume_abs_diff"] == pytest.approx(20 * voxel)
    assert result["volume_rel_diff"] == pytest.approx(0.05)
    assert metrics.compute(truth, pred, spacing)["volume_rel_diff"] == pytest.approx(-20 / 420)
    assert (result["pct_correct"], result["pct_over"], result["pct_missed"]) == pytest.approx((70.0, 35.0, 30.0))
    assert metrics.volume(truth, spacing) == pytest.approx(400 * voxel)
    assert metrics.to_ml(metrics.volume(truth, spacing)) == pytest.approx(0.2)
    assert metrics.volume(truth[2]) == 100.0  # mm² of a slice at 1 mm


def test_crop_to_bounding_box_is_exact() -> None:
    rng = np.random.default_rng(3)
    pred, truth = random_blobs(rng, (10, 24, 24), 2.0), random_blobs(rng, (10, 24, 24), 2.0)
    spacing = (2.0, 0.9, 0.6)
    small = metrics.compute(pred, truth, spacing)
    pad = ((3, 5), (7, 2), (0, 9))
    big = metrics.compute(np.pad(pred, pad), np.pad(truth, pad), spacing)
    for key in ("dice", "hd95", "assd", "nsd", "tp", "fp", "fn", "volume_pred", "pct_missed"):
        assert big[key] == pytest.approx(small[key], rel=1e-12), key
    to_truth, to_pred = metrics.surface_distances(pred, truth, spacing)
    assert small["assd"] == pytest.approx(np.concatenate([to_truth, to_pred]).mean())
    assert small["hd95"] == pytest.approx(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def test_sparse_surfaces_use_a_kd_tree_with_the_same_distances(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scattered false positives in a volume: boundaries are sparse in the crop box, so the k-d
    tree path runs; it must give the distance transforms' distances and MONAI's metrics."""
    truth = np.zeros((16, 64, 64), dtype=bool)
    truth[5:11, 20:36, 24:40] = True
    pred = np.roll(truth, 2, axis=2)
    for z, y, x in np.random.default_rng(5).integers(0, (16, 64, 64), size=(6, 3)):
        pred[z, y, x] = True
    spacing = (2.5, 0.9, 0.9)
    box = metrics._union_crop(pred, truth)
    boundary = metrics._inner_boundary(pred[box]).sum() + metrics._inner_boundary(truth[box]).sum()
    assert boundary < metrics.SPARSE_SURFACE_FRACTION * pred[box].size
    sparse = metrics.surface_distances(pred, truth, spacing)
    monkeypatch.setattr(metrics, "SPARSE_SURFACE_FRACTION", 0.0)  # force the distance transforms
    dense = metrics.surface_distances(pred, truth, spacing)
    for ours, reference in zip(sparse, dense):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    monkeypatch.undo()
    result = metrics.compute(pred, truth, spacing, tolerance_mm=1.8)
    for key, value in monai_reference(pred, truth, spacing, 1.8).items():
        assert result[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key


def test_symmetry() -> None:
    rng = np.random.default_rng(11)
    a, b = random_blobs(rng, (36, 30), 2.0), random_blobs(rng, (36, 30), 2.0)
    ab, ba = metrics.compute(a, b, (0.7, 1.3)), metrics.compute(b, a, (0.7, 1.3))
    for key in ("dice", "iou", "hd95", "assd", "nsd", "tp", "tn", "accuracy"):
        assert ab[key] == pytest.approx(ba[key]), key
    assert ab["precision"] == pytest.approx(ba["recall"])
    assert ab["fp"] == ba["fn"]


def test_spacing_is_in_array_axis_order() -> None:
    pred, truth = _zshift_pair()
    assert metrics.compute(pred, truth, (5, 1, 1))["hd95"] == pytest.approx(5.0)
    assert metrics.compute(pred, truth, (1, 1, 5))["hd95"] == pytest.approx(1.0)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match=r"\(16, 16\).*\(16, 15\)"):
        metrics.compute(GT6, GT6[:, :15])
    with pytest.raises(ValueError, match="one value"):
        metrics.compute(GT6, GT6, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        metrics.compute(GT6, GT6, (1.0, 0.0))
    with pytest.raises(ValueError, match="probabilities"):
        metrics.compute(GT6 * 0.7, GT6)
    with pytest.raises(ValueError, match="2D"):
        metrics.compute(GT6[0], GT6[0])
    with pytest.raises(ValueError, match="tolerance"):
        metrics.compute(GT6, GT6, tolerance_mm=-1)
    png_like = GT6.astype(np.uint8) * 255
    assert metrics.compute(png_like, GT6.astype(np.float32))["dice"] == 1.0


def test_per_slice() -> None:
    rng = np.random.default_rng(5)
    pred, truth = random_blobs(rng, (6, 20, 24), 1.5), random_blobs(rng, (6, 20, 24), 1.5)
    pred[2] = False
    truth[2] = False
    spacing = (3.0, 0.8, 0.6)
    rows = metrics.per_slice(pred, truth, spacing)
    assert len(rows) == 6
    for z, row in enumerate(rows):
        expected = metrics.compute(pred[z], truth[z], (0.8, 0.6))
        assert row["dice"] == pytest.approx(expected["dice"], nan_ok=True)
        assert row["hd95"] == pytest.approx(expected["hd95"], nan_ok=True)
        assert row["volume_truth"] == pytest.approx(truth[z].sum() * 0.48)
    assert math.isnan(rows[2]["dice"]) and math.isnan(rows[2]["hd95"])
    along_x = metrics.per_slice(pred, truth, spacing, axis=-1)
    assert len(along_x) == 24
    assert along_x[5]["hd95"] == pytest.approx(
        metrics.compute(pred[:, :, 5], truth[:, :, 5], (3.0, 0.8))["hd95"], nan_ok=True)
    assert sum(r["tp"] for r in along_x) == metrics.compute(pred, truth)["tp"]
    with pytest.raises(ValueError, match="3D"):
        metrics.per_slice(GT6, GT6)


def test_format_value() -> None:
    assert metrics.format_value("dice", NAN) == "n/a"
    assert metrics.format_value("hd95", None) == "n/a"
    assert metrics.format_value("assd", np.float32("nan")) == "n/a"
    assert metrics.format_value("dice", 2 / 3) == "0.667"
    assert metrics.format_value("specificity", 0.94545) == "0.9455"
    assert metrics.format_value("hd95", 10.93774) == "10.94 mm"
    assert metrics.format_value("tp", 36) == "36"
    assert metrics.format_value("pct_missed", 12.345) == "12.3 %"
    assert metrics.format_value("volume_rel_diff", 0.25) == "+25.0 %"
    assert metrics.format_value("volume_rel_diff", -0.125) == "-12.5 %"
    assert metrics.format_value("volume_pred", 36.0, ndim=2) == "36.0 mm²"
    assert metrics.format_value("volume_truth", 2500.0, ndim=3) == "2500.0 mm³ (2.50 mL)"
    assert metrics.format_value("volume_truth", 2500.0) == "2500.0"
    assert metrics.format_value("other", 1234.5678) == "1235"
    for key, value in metrics.compute(square(4, 10, 6, 12), GT6).items():
        assert metrics.format_value(key, value) != "n/a"


# --- the registry: every consumer reads it -------------------------------------------------------

EMPTY_CASES = {"both_empty": (EMPTY, EMPTY), "false_alarm": (GT6, EMPTY), "missed": (EMPTY, GT6)}


@pytest.mark.parametrize("case", list(EMPTY_CASES))
def test_compute_follows_every_declared_empty_rule(case: str) -> None:
    pred, truth = EMPTY_CASES[case]
    result = metrics.compute(pred, truth)
    declared = {k: getattr(spec.empty, case) for k, spec in metrics.REGISTRY.items()}
    assert sum(v is not None for v in declared.values()) >= 10  # the rules are stated, not left open
    for key, expected in declared.items():
        if expected is not None:
            assert_same(result[key], expected, 1e-12, f"{case} {key}")


def test_registry_is_the_one_list() -> None:
    assert metrics.METRIC_KEYS == tuple(metrics.REGISTRY) and len(metrics.METRIC_KEYS) == 21
    assert all(spec.title and spec.key == key for key, spec in metrics.REGISTRY.items())
    assert metrics.headline_keys()[0] == "dice" and set(metrics.headline_keys()) <= set(metrics.REGISTRY)
    assert metrics.card_scores()["sensitivity"] == "recall"  # the cards' historical name
    with pytest.raises(ValueError, match="already registered"):
        metrics.register(metrics.REGISTRY["dice"])
    with pytest.raises(ValueError, match="lower-case identifier"):
        metrics.register(metrics.MetricSpec("Bad Key", "x", lambda m: 0.0))
    with pytest.raises(ValueError, match="no metric 'nope'; registered: dice, iou"):
        metrics.unregister("nope")


def _fp_per_tp(pair: metrics.MaskPair) -> float:
    return pair.fp / pair.tp if pair.tp else math.nan


#: a metric no consumer knows about: every table must show it once it is registered
FP_PER_TP = metrics.MetricSpec("fp_per_tp", "FP per TP", _fp_per_tp, direction="lower",
                               empty=metrics.EmptyRule(NAN, NAN, NAN), fmt="{:.2f}", headline=True)


@pytest.fixture
def new_metric():
    metrics.register(FP_PER_TP)
    try:
        yield FP_PER_TP
    finally:
        metrics.unregister(FP_PER_TP.key)


def _cohort(folder: Path, spacing: tuple[float, float] | None = None) -> Path:
    """Two image/mask pairs: PNG (pixel size unknown), or TIFF with ``spacing`` mm."""
    from napari_segloss.io.writers import write_array

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        truth = np.zeros((64, 64), bool)
        truth[16 + 4 * i : 44, 20:48] = True
        image = np.clip(60 + 120 * truth + rng.normal(0, 25, truth.shape), 0, 255).astype(np.uint8)
        suffix = ".png" if spacing is None else ".tif"
        write_array(folder / f"case{i}{suffix}", image, spacing=spacing)
        write_array(folder / f"case{i}_mask{suffix}", truth.astype(np.uint8), spacing=spacing)
    return folder


def _zip_text(path: Path, member: str) -> str:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return archive.read(member).decode("utf-8")


def _csv(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_a_registered_metric_reaches_cli_and_batch(new_metric, tiny_registry, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from napari_segloss.batch import run_batch
    from napari_segloss.cli import main

    data = _cohort(tmp_path / "pngs")
    pred = np.zeros((64, 64), bool)
    pred[10:40, 10:40] = True
    values = metrics.compute(pred, np.asarray(Image.open(data / "case0_mask.png")) > 0)
    assert list(values)[-1] == "fp_per_tp" and values["fp_per_tp"] == pytest.approx(values["fp"] / values["tp"])

    out = tmp_path / "predict"
    assert main(["predict", str(data / "case0.png"), "--mask", str(data / "case0_mask.png"),
                 "--checkpoint", "tiny_dice", "--out", str(out)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert "fp_per_tp" in header
    row = _csv((out / "metrics.csv").read_text())[0]
    record = json.loads((out / "metrics.json").read_text())["results"][0]
    assert "fp_per_tp" in row and "fp_per_tp" in record
    if record["tp"]:
        assert float(row["fp_per_tp"]) == pytest.approx(record["fp"] / record["tp"])

    result = run_batch(data, ["tiny_dice"], tmp_path / "batch.zip", device="cpu")
    rows = _csv(_zip_text(result.out, "metrics.csv"))
    assert list(rows[0])[-1] == "fp_per_tp" and len(rows) == 2
    for r in rows:
        expected = int(r["fp"]) / int(r["tp"]) if int(r["tp"]) else NAN
        assert_same(float(r["fp_per_tp"]), expected, 1e-12, r["image"])
    summary = _csv(_zip_text(result.out, "summary.csv"))[0]
    assert {"fp_per_tp_mean", "fp_per_tp_median", "fp_per_tp_n"} <= set(summary)
    assert "<th>fp_per_tp</th>" in _zip_text(result.out, "report.html")


def _run_result(spacing: tuple[float, float]):
    from napari_segloss.checkpoints import ModelCard
    from napari_segloss.derived import derive
    from napari_segloss.napari._results import RunResult

    truth = square(4, 10, 4, 10)
    probability = square(4, 10, 6, 12).astype(np.float32)
    card = ModelCard(name="tiny", loss="dice", family="region", patch_size=(64, 64), pixel_spacing_mm=(1.0, 1.0),
                     recipe={}, history=[])
    return RunResult("key", "scan", card, probability, truth, spacing, {}, derive(probability, truth, spacing, 0.5))


def _panel_cells(qtbot, spacing: tuple[float, float]) -> tuple[str, dict[str, str]]:
    pytest.importorskip("qtpy")
    from napari_segloss.napari._metrics_panel import MetricsPanel

    panel = MetricsPanel()
    qtbot.addWidget(panel)
    panel.show_result(_run_result(spacing))
    table = panel.table
    return panel.title.text(), {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}


def test_a_metric_registered_after_the_comparison_table_was_built_gets_its_column(qtbot) -> None:
    from napari_segloss.napari._compare import ComparisonTable

    table = ComparisonTable()
    qtbot.addWidget(table)
    metrics.register(FP_PER_TP)
    try:
        table.set_results([_run_result((0.5, 0.5))])
        assert table.horizontalHeaderItem(table.columnCount() - 1).text() == "fp_per_tp"
        assert table.column_values("fp_per_tp") == ["0.50"]  # 12 FP / 24 TP
        assert table.column_values("dice") == [metrics.format_value("dice", table.results[0].derived.metrics["dice"])]
    finally:
        metrics.unregister(FP_PER_TP.key)
    table.set_results(table.results)
    assert "fp_per_tp" not in table.columns() and table.columnCount() == len(table.columns())


def test_a_registered_metric_reaches_the_metrics_panel(new_metric, qtbot) -> None:
    _, cells = _panel_cells(qtbot, (0.5, 0.5))
    assert list(cells)[-1] == "FP per TP" and len(cells) == len(metrics.REGISTRY)
    assert cells["FP per TP"] == "0.50"  # 12 FP / 24 TP


# --- units: pixels when the pixel size is unknown ------------------------------------------------

def test_format_value_units_follow_the_known_pixel_size() -> None:
    assert metrics.format_value("hd95", 282.44, spacing_known=False) == "282.44 px"
    assert metrics.format_value("assd", 1.5) == "1.50 mm"
    assert metrics.format_value("volume_pred", 36.0, ndim=2, spacing_known=False) == "36.0 px²"
    assert metrics.format_value("volume_truth", 2500.0, ndim=3, spacing_known=False) == "2500.0 voxels"
    assert metrics.format_value("dice", 0.5, spacing_known=False) == "0.500"
    assert metrics.volume(GT6) == 36.0 and metrics.volume(GT6, (0.5, 0.5)) == 9.0


def test_unknown_pixel_size_is_explicit_in_readers_and_layers(tmp_path: Path) -> None:
    from napari_segloss import spacing
    from napari_segloss.io import read_scans

    png, tif = _cohort(tmp_path / "png") / "case0.png", _cohort(tmp_path / "tif", (0.5, 0.7)) / "case0.tif"
    (png_scan,), (tif_scan,) = read_scans(png), read_scans(tif)
    assert not png_scan.spacing_known and png_scan.spacing == (1.0, 1.0)
    assert tif_scan.spacing_known and tif_scan.spacing == pytest.approx((0.5, 0.7))
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "unitless.tif", np.zeros((3, 8, 8), np.uint8))  # no resolution unit
    assert not read_scans(tmp_path / "unitless.tif")[0].spacing_known
    assert spacing.known_spacing(png_scan.spacing, png_scan.spacing_known) is None
    assert spacing.layer_spacing((1.0, 1.0)) is None and spacing.layer_spacing((3.0, 1.0, 1.0)) is None
    assert spacing.layer_spacing((1.0, 0.5, 0.5)) == (1.0, 0.5, 0.5)
    assert spacing.spacing_text(None) == "unknown" and spacing.spacing_text((2.0, 0.8)) == "2x0.8"


def test_dicom_without_pixel_spacing_is_unknown(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from napari_segloss.io import read_scans
    from napari_segloss.io.writers import write_dicom_series

    write_dicom_series(np.zeros((2, 8, 8), np.uint16), tmp_path / "series", spacing=(2.0, 0.6, 0.6))
    assert read_scans(tmp_path / "series")[0].spacing_known
    for path in (tmp_path / "series").iterdir():
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    (scan,) = read_scans(tmp_path / "series")
    assert not scan.spacing_known and scan.spacing[-2:] == (1.0, 1.0)


def test_png_distances_are_in_pixels_in_cli_and_batch(tiny_registry, tmp_path: Path, capsys) -> None:
    from napari_segloss.batch import run_batch
    from napari_segloss.cli import main

    pngs, tifs = _cohort(tmp_path / "pngs"), _cohort(tmp_path / "tifs", (0.5, 0.5))
    assert main(["predict", str(pngs / "case0.png"), "--mask", str(pngs / "case0_mask.png"),
                 "--checkpoint", "tiny_dice", "--out", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    assert " px" in printed and " mm" not in printed, printed
    record = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert record["scans"][0]["spacing_mm"] is None
    assert _csv((tmp_path / "p" / "metrics.csv").read_text())[0]["spacing_mm"] == "unknown"
    assert main(["predict", str(tifs / "case0.tif"), "--mask", str(tifs / "case0_mask.tif"),
                 "--checkpoint", "tiny_dice", "--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert " mm" in printed and " px" not in printed, printed

    for data, unit, other in ((pngs, "px", "mm"), (tifs, "mm", "px")):
        result = run_batch(data, ["tiny_dice"], tmp_path / f"{data.name}.zip", device="cpu")
        assert {r["spacing_mm"] for r in _csv(_zip_text(result.out, "metrics.csv"))} == {
            "unknown" if unit == "px" else "0.5x0.5"}
        summary = _csv(_zip_text(result.out, "summary.csv"))[0]
        assert summary["units"] == unit and summary["ndim"] == "2"
        from napari_segloss.batch.report import format_stat

        text = format_stat("hd95", "mean", {**summary, "hd95_mean": 2.0, "ndim": 2})
        assert text == f"2.00 {unit}"
        page = _zip_text(result.out, "report.html")
        if summary["hd95_n"] != "0":
            assert f" {unit}" in page
        assert f" {other}<" not in page and f" {other} ±" not in page


def test_mixed_units_are_not_averaged_into_one_number() -> None:
    from napari_segloss.batch.report import format_stat

    row = {"units": "mixed", "ndim": 2, "hd95_mean": 3.0, "dice_mean": 0.5}
    assert format_stat("hd95", "mean", row) == "mixed units"
    assert format_stat("dice", "mean", row) == "0.500"


def test_summary_cells_write_the_unit_once() -> None:
    from napari_segloss.batch.report import mean_std

    row = {"units": "px", "ndim": 2, "hd95_mean": 12.345, "hd95_std": 5.1, "dice_mean": 0.6, "dice_std": NAN,
           "volume_rel_diff_mean": 0.12, "volume_rel_diff_std": 0.3}
    assert mean_std("hd95", row) == "12.35 ± 5.10 px"
    assert mean_std("dice", row) == "0.600"  # one image: no spread
    assert mean_std("volume_rel_diff", row) == "+12.0 ± 30.0 %"
    assert mean_std("hd95", {**row, "units": "mm"}) == "12.35 ± 5.10 mm"


def test_metrics_panel_says_px_for_a_unit_scale_layer(qtbot) -> None:
    title, cells = _panel_cells(qtbot, (1.0, 1.0))
    assert cells["Hausdorff 95 %"] == "2.00 px" and cells["Predicted size"] == "36.0 px²"
    assert "pixel size unknown" in title
    title, cells = _panel_cells(qtbot, (0.5, 0.5))
    assert cells["Hausdorff 95 %"] == "1.00 mm" and cells["Predicted size"] == "9.0 mm²"
    assert "unknown" not in title


# --- the one NaN -> None JSON cleaner --------------------------------------------------------------

def test_jsonable_makes_strict_json() -> None:
    from napari_segloss.jsonable import jsonable

    value = {"dice": NAN, "hd95": math.inf, "n": np.int64(3), "x": np.float32(0.5), "s": (1.0, 2.0),
             "nested": [{"v": -math.inf}], "a": np.array([1.0, np.nan]), "ok": True, "none": None}
    out = jsonable(value)
    assert json.loads(json.dumps(out, allow_nan=False)) == {
        "dice": None, "hd95": None, "n": 3, "x": 0.5, "s": [1.0, 2.0], "nested": [{"v": None}],
        "a": [1.0, None], "ok": True, "none": None}
    assert type(out["n"]) is int and out["ok"] is True
    with pytest.raises(ValueError, match=r"card\.files\[1\]: PosixPath is not JSON-serialisable"):
        jsonable({"files": ["a", Path("b")]}, "card")
    with pytest.raises(ValueError, match="keys must be strings"):
        jsonable({1: 2})
