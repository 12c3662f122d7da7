"""Segmentation metrics for one binary prediction against one binary ground truth.

Inputs are 2D ``(H, W)`` or 3D ``(Z, H, W)`` masks of equal shape (bool, or integers / 0-1
floats where non-zero means foreground) and ``spacing`` in mm per array axis, in array order
(``(dz, dy, dx)`` for a ``(Z, H, W)`` volume); ``None`` means 1 mm per axis.

Definitions (P = prediction, G = ground truth; TP, FP, FN, TN are voxel counts)
----------------------------------------------------------------------------
* dice = 2TP / (2TP + FP + FN); iou = TP / (TP + FP + FN)
* precision = TP / (TP + FP); recall (sensitivity) = TP / (TP + FN)
* specificity = TN / (TN + FP); accuracy = (TP + TN) / N (both depend on the field of view)
* f2 = F-beta with beta = 2 (see :func:`fbeta`): recall weighted four times as much as precision
* volume_pred, volume_truth = voxel count x prod(spacing): mm² for 2D, mm³ for 3D
  (:func:`to_ml` converts mm³ to mL); volume_abs_diff = |volume_pred - volume_truth|;
  volume_rel_diff = (volume_pred - volume_truth) / volume_truth, a *signed fraction*
  (+0.25 = prediction 25 % too large)
* pct_correct, pct_over, pct_missed = TP, FP, FN as a percentage of the true tumour size |G|
  (the seed tool's "correct / over-predicted / missed"); pct_correct + pct_missed = 100
* Surface distances follow MONAI 1.6 (``get_mask_edges`` + ``get_surface_distance``): the
  surface of a mask is its inner boundary voxels, ``mask ^ binary_erosion(mask)`` with the
  cross-shaped structuring element (voxels on the image border count as boundary); the
  directed distance from each boundary voxel of one mask to the nearest boundary voxel of the
  other is exact Euclidean in mm, from ``scipy.ndimage.distance_transform_edt(sampling=spacing)``
  (or, for sparse boundaries, a k-d tree nearest-neighbour search giving the same distances).

  - hd95: MONAI ``compute_hausdorff_distance(percentile=95)``: the 95th percentile (linear
    interpolation) of each direction separately, then the larger of the two. MedPy pools both
    directions first and DeepMind weights surfels by area; both give different numbers.
  - assd: MONAI ``compute_average_surface_distance(symmetric=True)``: the mean of both
    directions' distances pooled together (MedPy >= 0.5.2 agrees).
  - nsd: normalised surface Dice at ``tolerance_mm`` (Nikolov et al. 2021), as MONAI
    ``compute_surface_dice`` computes it by default: (boundary voxels of P within tolerance of
    G's boundary + boundary voxels of G within tolerance of P's boundary) / (all boundary
    voxels of both). DeepMind surface-distance (= MONAI ``use_subvoxels=True``) counts surfel
    areas instead and differs slightly, most under anisotropic spacing.

Empty-mask policy (the only place it is defined)
-------------------------------------------------
One rule: a ratio is NaN exactly when its denominator is 0, never a substituted 0 or 1.

================================  ==========  =========  ======  ===========  ==========  ====
case                              dice / iou  precision  recall  hd95 / assd  pct_*       nsd
================================  ==========  =========  ======  ===========  ==========  ====
P and G both empty                NaN         NaN        NaN     NaN          NaN         NaN
G empty, P not (false alarm)      0           0          NaN     NaN          NaN         0
P empty, G not (missed tumour)    0           NaN        0       NaN          0/0/100     0
================================  ==========  =========  ======  ===========  ==========  ====

Dice/IoU of two empty masks are NaN as in MONAI's default (``ignore_empty=True``), nnU-Net and
DeepMind, so averages taken with ``np.nanmean`` skip tumour-free cases; a false alarm scores 0
(MONAI ``ignore_empty=False``, MedPy, DeepMind) rather than being hidden. Distances with an
empty mask are NaN where MONAI returns inf (HD, ASSD) or NaN (HD95): there is no surface to
measure from. NSD with exactly one empty mask is 0, as in MONAI and DeepMind. The counts and
volumes are always defined, and specificity/accuracy are defined whenever the field of view
has background. :func:`format_value` shows NaN as "n/a".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import KDTree

from napari_segloss.spacing import check_spacing

#: the keys of :func:`compute`'s dict, in display order
METRIC_KEYS: tuple[str, ...] = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "accuracy",
    "f2",
    "hd95",
    "assd",
    "nsd",
    "tp",
    "fp",
    "fn",
    "tn",
    "volume_pred",
    "volume_truth",
    "volume_abs_diff",
    "volume_rel_diff",
    "pct_correct",
    "pct_over",
    "pct_missed",
)

_COUNT_KEYS = frozenset({"tp", "fp", "fn", "tn"})
_SCORE_KEYS = frozenset({"dice", "iou", "precision", "recall", "f2", "nsd"})
_NEAR_ONE_KEYS = frozenset({"specificity", "accuracy"})
_DISTANCE_KEYS = frozenset({"hd95", "assd"})
_VOLUME_KEYS = frozenset({"volume_pred", "volume_truth", "volume_abs_diff"})
_PERCENT_KEYS = frozenset({"pct_correct", "pct_over", "pct_missed"})
_AREA_UNITS = {2: "mm²", 3: "mm³"}
#: surface distances come from a k-d tree over the boundary voxels instead of two distance
#: transforms of the crop box when the boundaries hold less than this fraction of the box's voxels
#: (scattered false positives in a volume: ~9x faster; dense, noisy boundaries: the transforms win)
SPARSE_SURFACE_FRACTION = 1 / 8


def check_masks(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction / ground-truth pair and return them as bool arrays.

    Args:
        pred, truth: 2D ``(H, W)`` or 3D ``(Z, H, W)`` arrays of the same shape; bool, integer
            (non-zero = foreground, e.g. 0/255 PNG masks) or floating point holding only 0 and 1.
    Raises:
        ValueError: different shapes (both are named), unsupported dimensionality, or a float
            array with values other than 0 and 1 (a probability map, not a mask).
    """
    p = _as_mask(pred, "pred")
    t = _as_mask(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred and truth shapes differ: pred {p.shape} vs truth {t.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D (H, W) or 3D (Z, H, W), got shape {p.shape}")
    return p, t


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(
            f"{name} is a float array with values other than 0 and 1; pass a binary mask "
            "(e.g. prediction.mask(0.5)), not probabilities"
        )
    if not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"{name} must be a numeric or boolean array, got dtype {arr.dtype}")
    return arr != 0


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


def _counts(p: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int]:
    n_pred = int(np.count_nonzero(p))
    n_truth = int(np.count_nonzero(t))
    tp = int(np.count_nonzero(p & t)) if n_pred and n_truth else 0
    fp = n_pred - tp
    fn = n_truth - tp
    return tp, fp, fn, p.size - tp - fp - fn


def _fbeta_from_counts(tp: int, fp: int, fn: int, beta: float) -> float:
    b2 = beta * beta
    return _ratio((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def fbeta(pred: np.ndarray, truth: np.ndarray, beta: float = 1.0) -> float:
    """F-beta score ``(1 + b²) TP / ((1 + b²) TP + b² FN + FP)`` of two binary masks.

    ``beta = 1`` is Dice, ``beta = 2`` weights recall four times as much as precision (F2).
    NaN when both masks are empty (see the module's empty-mask policy).
    """
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite number, got {beta}")
    p, t = check_masks(pred, truth)
    tp, fp, fn, _ = _counts(p, t)
    return _fbeta_from_counts(tp, fp, fn, beta)


def volume(mask: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Physical size of a binary mask: voxel count x prod(spacing), mm² for 2D, mm³ for 3D."""
    m = _as_mask(mask, "mask")
    return int(np.count_nonzero(m)) * math.prod(check_spacing(spacing, m.ndim))


def to_ml(volume_mm3: float) -> float:
    """Convert a 3D volume from mm³ to millilitres (1 mL = 1000 mm³)."""
    return float(volume_mm3) / 1000.0


def _inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels as MONAI's ``get_mask_edges``: the mask minus its (cross) erosion."""
    return mask & ~ndimage.binary_erosion(mask)


def _union_crop(p: np.ndarray, t: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``p | t`` plus a 1-voxel margin, clipped to the array."""
    box = []
    for axis in range(p.ndim):
        others = tuple(a for a in range(p.ndim) if a != axis)
        present = np.flatnonzero(np.any(p, axis=others) | np.any(t, axis=others))
        box.append(slice(max(int(present[0]) - 1, 0), int(present[-1]) + 2))
    return tuple(box)


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between the boundaries of two non-empty masks.

    Returns ``(pred_to_truth, truth_to_pred)``: float64 1D arrays with one entry per boundary
    voxel of ``pred`` (distance to the nearest boundary voxel of ``truth``) and vice versa,
    as MONAI's ``get_surface_distance`` (see the module docstring). Either array is empty when
    its source mask is empty; both directions need both masks, so an empty mask gives two empty
    arrays. The computation is cropped to the union bounding box, which leaves it exact.
    """
    p, t = check_masks(pred, truth)
    return _surface_distances(p, t, check_spacing(spacing, p.ndim))


def _surface_distances(
    p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    if not (p.any() and t.any()):
        return np.empty(0), np.empty(0)
    box = _union_crop(p, t)
    edge_p = _inner_boundary(p[box])
    edge_t = _inner_boundary(t[box])
    if np.count_nonzero(edge_p) + np.count_nonzero(edge_t) < SPARSE_SURFACE_FRACTION * edge_p.size:
        points_p, points_t = np.argwhere(edge_p), np.argwhere(edge_t)
        return _nearest_distances(points_p, points_t, spacing), _nearest_distances(points_t, points_p, spacing)
    to_truth = ndimage.distance_transform_edt(~edge_t, sampling=spacing)[edge_p]
    to_pred = ndimage.distance_transform_edt(~edge_p, sampling=spacing)[edge_t]
    return to_truth, to_pred


def _nearest_distances(sources: np.ndarray, targets: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from each source voxel to the nearest target voxel.

    ``sources`` ``(N, ndim)`` and ``targets`` ``(M, ndim)`` are integer voxel indices; the
    nearest target is found with a k-d tree in mm coordinates and its distance is computed as
    ``distance_transform_edt`` computes it, ``sqrt(sum(((target - source) * spacing) ** 2))``.
    Returns float64 ``(N,)`` in ``sources`` order.
    """
    scale = np.asarray(spacing, dtype=np.float64)
    _, nearest = KDTree(targets * scale).query(sources * scale)
    offsets = (targets[nearest] - sources) * scale
    return np.sqrt((offsets * offsets).sum(axis=1))


def compute(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    tolerance_mm: float = 1.0,
) -> dict[str, float | int]:
    """All metrics of one prediction against its ground truth (see the module docstring).

    Args:
        pred, truth: binary masks ``(H, W)`` or ``(Z, H, W)`` of equal shape (see :func:`check_masks`).
        spacing: mm per array axis, in array order; ``None`` = 1 mm isotropic.
        tolerance_mm: NSD tolerance in mm.
    Returns:
        dict with the keys of :data:`METRIC_KEYS` in that order: counts as ``int``, everything
        else ``float``; hd95 and assd follow MONAI's definitions; NaN where undefined (see the
        empty-mask policy), never inf.
    Raises:
        ValueError: mismatched shapes (both named), bad spacing, non-binary input, or a
            negative / non-finite tolerance.
    """
    p, t = check_masks(pred, truth)
    sp = check_spacing(spacing, p.ndim)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite value >= 0, got {tolerance_mm}")
    return _compute(p, t, sp, float(tolerance_mm))


def _compute(p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> dict[str, float | int]:
    tp, fp, fn, tn = _counts(p, t)
    n_truth = tp + fn
    voxel = math.prod(spacing)
    vol_pred = (tp + fp) * voxel
    vol_truth = n_truth * voxel
    to_truth, to_pred = _surface_distances(p, t, spacing)
    if to_truth.size and to_pred.size:
        hd95 = float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))
        assd = float(np.concatenate([to_truth, to_pred]).mean())
        nsd = _ratio(np.count_nonzero(to_truth <= tolerance) + np.count_nonzero(to_pred <= tolerance),
                     to_truth.size + to_pred.size)
    else:
        hd95 = assd = math.nan
        nsd = 0.0 if (tp + fp) or n_truth else math.nan
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, n_truth),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, p.size),
        "f2": _fbeta_from_counts(tp, fp, fn, 2.0),
        "hd95": hd95,
        "assd": assd,
        "nsd": nsd,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "volume_pred": float(vol_pred),
        "volume_truth": float(vol_truth),
        "volume_abs_diff": float(abs(vol_pred - vol_truth)),
        "volume_rel_diff": _ratio(vol_pred - vol_truth, vol_truth),
        "pct_correct": 100.0 * _ratio(tp, n_truth),
        "pct_over": 100.0 * _ratio(fp, n_truth),
        "pct_missed": 100.0 * _ratio(fn, n_truth),
    }


def per_slice(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = None,
    axis: int = 0,
    *,
    tolerance_mm: float = 1.0,
) -> list[dict[str, float | int]]:
    """:func:`compute` on every 2D slice of a 3D pair along ``axis``.

    Args:
        pred, truth: 3D masks of equal shape.
        spacing: mm per axis of the *3D* array; each slice uses the spacing of its two axes.
        axis: the slicing axis (0 = Z for ``(Z, H, W)``).
    Returns:
        one dict per slice (list index = slice index), areas in mm².
    """
    p, t = check_masks(pred, truth)
    if p.ndim != 3:
        raise ValueError(f"per_slice needs 3D masks, got shape {p.shape}")
    sp = check_spacing(spacing, 3)
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be in -3..2, got {axis}")
    axis %= 3
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite value >= 0, got {tolerance_mm}")
    slice_spacing = tuple(s for a, s in enumerate(sp) if a != axis)
    p = np.moveaxis(p, axis, 0)
    t = np.moveaxis(t, axis, 0)
    return [_compute(p[i], t[i], slice_spacing, float(tolerance_mm)) for i in range(p.shape[0])]


def format_value(key: str, value: float | int | None, *, ndim: int | None = None) -> str:
    """Human-readable text for one metric value: ``"n/a"`` for NaN or None.

    Scores get 3 decimals ("0.667"), specificity/accuracy 4, distances "2.83 mm", counts as
    integers, percentages "12.5 %", volume_rel_diff as a signed percentage ("+25.0 %").
    Volumes carry "mm²"/"mm³" when ``ndim`` (2 or 3, the masks' dimensionality) is given, plus
    the mL equivalent for 3D; without ``ndim`` they are bare numbers. Unknown keys use 4
    significant digits.
    """
    if value is None or math.isnan(float(value)):
        return "n/a"
    if key in _COUNT_KEYS:
        return str(int(value))
    if key in _SCORE_KEYS:
        return f"{value:.3f}"
    if key in _NEAR_ONE_KEYS:
        return f"{value:.4f}"
    if key in _DISTANCE_KEYS:
        return f"{value:.2f} mm"
    if key in _PERCENT_KEYS:
        return f"{value:.1f} %"
    if key == "volume_rel_diff":
        return f"{100.0 * value:+.1f} %"
    if key in _VOLUME_KEYS:
        if ndim is None:
            return f"{value:.1f}"
        if ndim not in _AREA_UNITS:
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        text = f"{value:.1f} {_AREA_UNITS[ndim]}"
        return f"{text} ({to_ml(value):.2f} mL)" if ndim == 3 else text
    return f"{value:.4g}"
