"""Test-set evaluation of a trained network: metrics, bootstrap intervals, breakdowns, pairing.

The definitions used in every model card and in ``docs/results.md`` are :data:`DEFINITION`
(also stored in each card's ``test_metrics["definition"]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from napari_segloss.metrics import card_scores, compute

#: per-image metrics kept from :func:`napari_segloss.metrics.compute` (card name -> metrics key):
#: the registry's ``MetricSpec.card_key`` entries
SCORES = card_scores()
#: what the card's test metrics mean
DEFINITION = (
    "Test Dice (the headline number) = mean, over the test slices that contain tumour, of the per-slice Dice "
    "of the thresholded prediction (probability >= 0.5) at the data's native resolution; a missed tumour "
    "counts as Dice 0. IoU, sensitivity, specificity, precision and HD95 (mm) are averaged over the same "
    "slices (undefined cases, e.g. HD95 of an empty prediction, are left out and counted in n_undefined). "
    "False alarms are reported separately on the tumour-free test images (tumour-free slices; for real data, "
    "which has none, crops of the test slices far from the tumour: see the card's data.negatives): "
    "empty_slice_false_positives = number of such images with any predicted pixel, empty_slice_fp_rate its "
    "share, empty_slice_fp_area_mm2 = mean predicted area there; for real data also "
    "empty_slice_fp_rate_in_context = the share of the same windows with any pixel marked in the prediction of "
    "their whole slice. ci95 = "
    "percentile bootstrap 95% intervals over test images. Size classes small/medium/large = tertiles of the "
    "tumour area (mm^2) of the fixed test slices (size_thresholds_mm2). volumes = the same metrics on whole "
    "3-D test volumes predicted slice by slice."
)
N_BOOT = 2000
#: tumour test slices whose Dice the card lists one by one (to re-check a released checkpoint)
N_REFERENCE = 8
THRESHOLD = 0.5


def probabilities(model: torch.nn.Module, images: np.ndarray, *, device: str | torch.device = "cpu",
                  image_size: Sequence[int] | None = None) -> np.ndarray:
    """Foreground probabilities ``(N, H, W)`` of normalised float32 ``images`` ``(N, H, W)``
    through the path users run (:class:`napari_segloss.inference.Segmenter`).

    With the network's training ``image_size`` (``(H, W)`` pixels: the card's), the images are
    brought to that field of view and their probabilities mapped back to their own grid, as
    ``predict`` does by default for a slice of unknown pixel size (the PNG slices of a labelled
    folder); a no-op when they already have that size. Without it the network runs on the input grid.
    """
    from napari_segloss.inference import Segmenter

    segmenter = Segmenter(model, device=device, image_size=image_size)
    data = np.asarray(images, dtype=np.float32)[:, None]
    return segmenter.scaled_probabilities(data, None, resample=image_size is not None)[0]


def overlap(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean per-slice Dice and IoU over the slices of ``truth`` ``(N, H, W)`` that contain tumour.

    A quick validation score (no surface distances); NaN when no slice has tumour.
    """
    axes = tuple(range(1, truth.ndim))
    keep = truth.any(axis=axes)
    if not keep.any():
        return {"dice": float("nan"), "iou": float("nan")}
    p, t = pred[keep], truth[keep]
    tp = (p & t).sum(axis=axes)
    size = p.sum(axis=axes) + t.sum(axis=axes)
    return {"dice": float(np.mean(2 * tp / size)), "iou": float(np.mean(tp / (size - tp)))}


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped first)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def summarise(values: Sequence[float] | np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """``{"mean", "ci95", "n", "n_undefined"}`` of per-image values (NaN = undefined)."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    mean = float(v[finite].mean()) if finite.any() else float("nan")
    return {"mean": mean, "ci95": list(bootstrap_ci(v, seed=seed)), "n": int(finite.sum()),
            "n_undefined": int((~finite).sum())}


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Mean of ``a - b`` over images where both are defined, with a paired bootstrap interval."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    s = summarise(d, seed=seed)
    return {"diff": s["mean"], "ci95": s["ci95"], "n": s["n"]}


def image_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """The :data:`SCORES` of one image (2-D slice or 3-D volume) plus predicted area/volume (mm^n)."""
    m = compute(pred, truth, spacing=tuple(float(s) for s in spacing))
    row = {k: float(m[src]) for k, src in SCORES.items()}
    row["pred_size"] = float(pred.sum() * np.prod(spacing))
    row["truth_size"] = float(truth.sum() * np.prod(spacing))
    return row


def size_thresholds(masks: np.ndarray, spacing: np.ndarray) -> list[float]:
    """Tertiles (mm^2) of the tumour areas of the slices that contain tumour."""
    areas = masks.sum(axis=(1, 2)) * np.prod(spacing, axis=1)
    areas = areas[areas > 0]
    return [float(q) for q in np.quantile(areas, [1 / 3, 2 / 3])] if areas.size else [0.0, 0.0]


def size_class(area: float, thresholds: Sequence[float]) -> str:
    """``"small" | "medium" | "large"`` for a tumour area (mm^2) given the tertile thresholds."""
    return "small" if area <= thresholds[0] else "medium" if area <= thresholds[1] else "large"


def score_slices(prob: np.ndarray, truth: np.ndarray, spacing: np.ndarray, kinds: Sequence[str],
                 thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Per-slice rows: scores, ``tumour`` flag, ``kind``, ``size`` class, false-alarm area (mm^2)."""
    rows = []
    for p, t, sp, kind in zip(prob >= THRESHOLD, truth, spacing, kinds):
        row: dict[str, Any] = image_scores(p, t, sp)
        row["tumour"] = bool(t.any())
        row["kind"] = kind
        row["size"] = size_class(row["truth_size"], thresholds) if row["tumour"] else "none"
        rows.append(row)
    return rows


def aggregate(rows: Sequence[Mapping[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Card metrics from per-slice (or per-volume) rows of :func:`score_slices`.

    Flat keys ``dice, iou, sensitivity, specificity, precision, hd95`` hold means over images with
    tumour; ``ci95`` their intervals; ``empty_slice_false_positives`` counts tumour-free images
    with any predicted pixel; ``breakdown`` holds Dice per kind and size class.
    """
    tumour = [r for r in rows if r["tumour"]]
    empty = [r for r in rows if not r["tumour"]]
    out: dict[str, Any] = {"n_images": len(rows), "n_tumour": len(tumour), "n_tumour_free": len(empty)}
    out["ci95"] = {}
    for key in SCORES:
        s = summarise([r[key] for r in tumour], seed=seed)
        out[key] = s["mean"]
        out["ci95"][key] = s["ci95"]
        if s["n_undefined"]:
            out.setdefault("n_undefined", {})[key] = s["n_undefined"]
    alarms = np.array([r["pred_size"] > 0 for r in empty], dtype=np.float64)
    out["empty_slice_false_positives"] = int(alarms.sum())
    out["empty_slice_fp_rate"] = summarise(alarms, seed=seed) if empty else None
    out["empty_slice_fp_area_mm2"] = float(np.mean([r["pred_size"] for r in empty])) if empty else float("nan")
    breakdown: dict[str, Any] = {}
    for field in ("kind", "size"):
        groups = sorted({r[field] for r in tumour})
        breakdown[field] = {g: summarise([r["dice"] for r in tumour if r[field] == g], seed=seed) for g in groups}
    out["breakdown"] = breakdown
    return out


def crop_network_size(crop: Sequence[int], full: Sequence[int], image_size: Sequence[int]) -> list[int]:
    """In-plane size at which a network trained at ``image_size`` sees a ``crop`` ``(H, W)`` of a
    ``full`` ``(H, W)`` slice: the crop scaled by the factor that brings its slice to ``image_size``."""
    return [max(1, round(n * size / whole)) for n, size, whole in zip(crop[-2:], image_size[-2:], full[-2:])]


def in_context_false_alarms(prob: np.ndarray, windows: Sequence[tuple[int, tuple[slice, slice]]]) -> np.ndarray:
    """Per negative window ``(slice index, window)``
    (:func:`~napari_segloss.train.data.negative_windows`): 1.0 when the prediction ``prob``
    ``(N, H, W)`` of the whole slice marks any pixel inside that window, else 0.0.

    The negative crops run on their own are the cards' false-alarm set; this asks the same of the
    tissue seen in its slice (a network can stay silent on a small crop yet mark it in context).
    """
    return np.asarray([float((prob[i][window] >= THRESHOLD).any()) for i, window in windows], dtype=np.float64)


def evaluate(model: torch.nn.Module, splits: Any, *, device: str | torch.device = "cpu",
             seed: int = 0, image_size: Sequence[int] | None = None,
             ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Evaluate on ``splits.test`` slices (with ``splits.negatives``, tumour-free test images, when
    present) and ``splits.volumes`` (each may be ``None``), scored at the data's own resolution;
    with the network's training ``image_size`` the slices are run at that field of view first,
    as ``predict`` does (:func:`probabilities`).

    Returns ``(test_metrics, rows)``: the card's ``test_metrics`` (2-D slice metrics at the top
    level, ``"volumes"`` for 3-D, ``"definition"`` in words) and the per-image rows
    (``{"slices": [...], "volumes": [...]}``) for paired comparisons.
    """
    metrics: dict[str, Any] = {}
    rows: dict[str, list[dict[str, Any]]] = {"slices": [], "volumes": []}
    test = splits.test
    if test is not None and len(test):
        thresholds = size_thresholds(test.masks, test.spacing)
        whole = probabilities(model, test.images, device=device, image_size=image_size)
        rows["slices"] = score_slices(whole, test.masks, test.spacing, test.kinds, thresholds)
        for row, name in zip(rows["slices"], test.names):
            row["name"] = name
        negatives = getattr(splits, "negatives", None)
        if negatives is not None and len(negatives):
            crop_size = None if image_size is None else crop_network_size(
                negatives.images.shape[-2:], test.images.shape[-2:], image_size)
            on_crops = probabilities(model, negatives.images, device=device, image_size=crop_size)
            extra = score_slices(on_crops, negatives.masks, negatives.spacing, negatives.kinds, thresholds)
            for row, name in zip(extra, negatives.names):
                row["name"] = name
            rows["slices"] += extra
        metrics["definition"] = DEFINITION
        metrics.update(aggregate(rows["slices"], seed=seed))
        windows = getattr(splits, "negative_windows", None)
        if windows:
            metrics["empty_slice_fp_rate_in_context"] = summarise(in_context_false_alarms(whole, windows), seed=seed)
        metrics["size_thresholds_mm2"] = thresholds
        metrics["reference_slices"] = [{"name": r["name"], "dice": r["dice"]}
                                       for r in rows["slices"] if r["tumour"]][:N_REFERENCE]
    vols = splits.volumes
    if vols is not None and len(vols):
        for image, truth, spacing, kind, name in zip(vols.images, vols.masks, vols.spacing, vols.kinds, vols.names):
            pred = probabilities(model, image, device=device, image_size=image_size) >= THRESHOLD
            row: dict[str, Any] = image_scores(pred, truth, spacing)
            row.update(tumour=bool(truth.any()), kind=kind, size="volume", name=name)
            rows["volumes"].append(row)
        vol = aggregate(rows["volumes"], seed=seed)
        vol.pop("breakdown")
        metrics["volumes"] = vol
    return metrics, rows
