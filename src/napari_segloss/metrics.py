"""Segmentation metrics for one binary prediction against one binary ground truth.

Inputs are 2D ``(H, W)`` or 3D ``(Z, H, W)`` masks of equal shape (bool, or integers / 0-1
floats where non-zero means foreground) and ``spacing`` in mm per array axis, in array order
(``(dz, dy, dx)`` for a ``(Z, H, W)`` volume); ``None`` means the pixel size is unknown, and
lengths/areas/volumes are then in pixels.

Definitions (P = prediction, G = ground truth; TP, FP, FN, TN are voxel counts)
----------------------------------------------------------------------------
* dice = 2TP / (2TP + FP + FN); iou = TP / (TP + FP + FN)
* precision = TP / (TP + FP); recall (sensitivity) = TP / (TP + FN)
* specificity = TN / (TN + FP); accuracy = (TP + TN) / N (both depend on the field of view)
* f2 = F-beta with beta = 2 (see :func:`fbeta`): recall weighted four times as much as precision
* volume_pred, volume_truth = voxel count x prod(spacing): mm² for 2D, mm³ for 3D (px² / voxels
  when the spacing is unknown)
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
One rule: a ratio is NaN exactly when its denominator is 0, never a substituted 0 or 1. Each
metric's :class:`MetricSpec` states its value in the three empty cases (``spec.empty``, an
:class:`EmptyRule`; ``tests/test_metrics.py`` checks :func:`compute` against every rule):
both masks empty; ground truth empty, prediction not (a false alarm); prediction empty, ground
truth not (a missed tumour).

Dice/IoU of two empty masks are NaN as in MONAI's default (``ignore_empty=True``), nnU-Net and
DeepMind, so averages taken with ``np.nanmean`` skip tumour-free cases; a false alarm scores 0
(MONAI ``ignore_empty=False``, MedPy, DeepMind) rather than being hidden. Distances with an
empty mask are NaN where MONAI returns inf (HD, ASSD) or NaN (HD95): there is no surface to
measure from. NSD with exactly one empty mask is 0, as in MONAI and DeepMind. The counts and
volumes are always defined, and specificity/accuracy are defined whenever the field of view
has background. :func:`format_value` shows NaN as "n/a".

Units and the registry
----------------------
:data:`REGISTRY` holds one :class:`MetricSpec` per metric (key, title, unit kind, direction,
empty-mask rule, number format, the function that computes it); :func:`compute`, the CLI, the
batch CSV/HTML/PDF, the model cards, the results page and the metrics panel all read it, so a new
metric is one :func:`register` call. ``spacing=None`` means the pixel size is *unknown*
(PNG/JPG, a layer scale of 1, see :mod:`napari_segloss.spacing`): lengths, areas and volumes are
then in pixels (1 per pixel) and :func:`format_value` labels them "px", "px²" and "voxels",
never "mm".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
from scipy import ndimage

from napari_segloss.spacing import check_spacing

#: what a metric measures: a plain number, a length (mm, or px when the pixel size is unknown) or
#: a size, which is an area for 2D masks (mm² / px²) and a volume for 3D ones (mm³ / voxels)
Unit = Literal["none", "length", "size"]
#: which values are better: higher, lower, closer to zero, or neither (a count, a size)
Direction = Literal["higher", "lower", "zero", "none"]

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
    """Size of a binary mask: voxel count x prod(spacing), mm² for 2D, mm³ for 3D; the voxel
    count when ``spacing`` is None (pixel size unknown)."""
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
    from scipy.spatial import KDTree  # lazily: not needed by predict without a ground truth

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
        spacing: mm per array axis, in array order; ``None`` = pixel size unknown: distances,
            sizes and the tolerance are then in pixels.
        tolerance_mm: NSD tolerance in mm (in pixels when ``spacing`` is None).
    Returns:
        dict with the keys of :data:`METRIC_KEYS` (one per :data:`REGISTRY` entry) in that
        order: counts as ``int``, everything else ``float``; hd95 and assd follow MONAI's
        definitions; NaN where undefined (see the empty-mask policy), never inf.
    Raises:
        ValueError: mismatched shapes (both named), bad spacing, non-binary input, or a
            negative / non-finite tolerance.

    Examples:
        >>> square = np.zeros((8, 8), bool); square[2:6, 2:6] = True
        >>> values = compute(np.roll(square, 1, axis=1), square)  # spacing unknown: pixels
        >>> format_value("dice", values["dice"]), format_value("hd95", values["hd95"], spacing_known=False)
        ('0.750', '1.00 px')
    """
    p, t = check_masks(pred, truth)
    sp = check_spacing(spacing, p.ndim)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite value >= 0, got {tolerance_mm}")
    return _compute(p, t, sp, float(tolerance_mm))


def _compute(p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> dict[str, float | int]:
    pair = MaskPair(p, t, spacing, tolerance, *_counts(p, t))
    out: dict[str, float | int] = {}
    for key, spec in REGISTRY.items():
        value = spec.compute(pair)
        out[key] = value if type(value) is int else float(value)
    return out


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


@dataclass(frozen=True)
class MaskPair:
    """What a metric's function reads: one binary pair, its voxel counts and its geometry.

    Attributes:
        pred, truth: bool masks ``(H, W)`` or ``(Z, H, W)`` of equal shape.
        spacing: size of a voxel per array axis: mm, or 1.0 per axis when the pixel size is
            unknown (distances are then in pixels).
        tolerance: the NSD tolerance, in the unit of ``spacing``.
        tp, fp, fn, tn: voxel counts.
    """

    pred: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, ...]
    tolerance: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n_pred(self) -> int:
        """Foreground voxels of the prediction (TP + FP)."""
        return self.tp + self.fp

    @property
    def n_truth(self) -> int:
        """Foreground voxels of the ground truth (TP + FN)."""
        return self.tp + self.fn

    @property
    def voxel(self) -> float:
        """Size of one voxel: prod(spacing), mm² (2D) or mm³ (3D), 1 when unknown."""
        return math.prod(self.spacing)

    @cached_property
    def surface(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`surface_distances` ``(pred_to_truth, truth_to_pred)``, computed once per pair."""
        return _surface_distances(self.pred, self.truth, self.spacing)


@dataclass(frozen=True)
class EmptyRule:
    """A metric's value in the three empty-mask cases: a number, NaN (undefined), or None when
    it is always computed from the counts (TN, volumes, specificity, ...)."""

    both_empty: float | None
    false_alarm: float | None  #: ground truth empty, prediction not
    missed: float | None  #: prediction empty, ground truth not


@dataclass(frozen=True)
class MetricSpec:
    """One metric: everything a consumer needs to compute, show, sort and document it.

    Attributes:
        key: the column / dict key (``"dice"``); snake case.
        title: the readable row title (``"Dice"``) shown by the metrics panel.
        compute: ``compute(pair) -> value`` for a :class:`MaskPair`; ``int`` for counts, else
            a float (NaN where undefined, never inf).
        unit: ``"none"``, ``"length"`` (mm / px) or ``"size"`` (area in 2D, volume in 3D).
        direction: which values are better (``"higher"``, ``"lower"``, ``"zero"``, ``"none"``).
        empty: the value in the empty-mask cases (the module's policy).
        fmt: ``str.format`` template of the number, without the unit (``"{:.3f}"``, ``"{:.1f} %"``).
        scale: the value is multiplied by it before formatting (100 for a fraction shown in %).
        headline: shown in the summary tables (CLI table, batch HTML and PDF); every metric is in
            the CSV/JSON files and the metrics panel.
        card_key: the key of the model cards' ``test_metrics`` that records it, or None.
    """

    key: str
    title: str
    compute: Callable[[MaskPair], float | int]
    unit: Unit = "none"
    direction: Direction = "higher"
    empty: EmptyRule = EmptyRule(math.nan, 0.0, 0.0)
    fmt: str = "{:.3f}"
    scale: float = 1.0
    headline: bool = False
    card_key: str | None = None


#: every metric, in display order; :func:`register` adds one
REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add ``spec`` at the end of :data:`REGISTRY`; :func:`compute` and every consumer then show it.

    Raises ``ValueError`` if its key is already registered or is not a snake-case identifier.
    """
    if not (spec.key.isidentifier() and spec.key == spec.key.lower()):
        raise ValueError(f"metric key {spec.key!r} must be a lower-case identifier (e.g. 'hd99')")
    if spec.key in REGISTRY:
        raise ValueError(f"metric {spec.key!r} is already registered")
    REGISTRY[spec.key] = spec
    return spec


def unregister(key: str) -> MetricSpec:
    """Remove and return the spec of ``key``; ``ValueError`` naming the registered keys if absent."""
    if key not in REGISTRY:
        raise ValueError(f"no metric {key!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY.pop(key)


class _Keys(Sequence[str]):
    """A live, read-only view of :data:`REGISTRY`'s keys (a registered metric appears at once)."""

    def __getitem__(self, index):  # type: ignore[override]
        return tuple(REGISTRY)[index]

    def __len__(self) -> int:
        return len(REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(REGISTRY))

    def __repr__(self) -> str:
        return f"METRIC_KEYS{tuple(REGISTRY)!r}"

    def __eq__(self, other: object) -> bool:  # compares like the tuple it replaced
        return isinstance(other, Sequence) and not isinstance(other, str) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the registry


#: the keys of :func:`compute`'s dict, in display order (a live view of :data:`REGISTRY`)
METRIC_KEYS: Sequence[str] = _Keys()


def headline_keys() -> tuple[str, ...]:
    """Keys of the metrics shown in summary tables (``MetricSpec.headline``), in display order."""
    return tuple(k for k, spec in REGISTRY.items() if spec.headline)


def card_scores() -> dict[str, str]:
    """Model-card ``test_metrics`` key -> metric key, for the metrics cards record."""
    return {spec.card_key: k for k, spec in REGISTRY.items() if spec.card_key}


def _distance(reduce: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[MaskPair], float]:
    def value(pair: MaskPair) -> float:
        to_truth, to_pred = pair.surface
        return reduce(to_truth, to_pred) if to_truth.size and to_pred.size else math.nan

    return value


def _nsd(pair: MaskPair) -> float:
    to_truth, to_pred = pair.surface
    if not (to_truth.size and to_pred.size):
        return 0.0 if pair.n_pred or pair.n_truth else math.nan
    within = np.count_nonzero(to_truth <= pair.tolerance) + np.count_nonzero(to_pred <= pair.tolerance)
    return _ratio(within, to_truth.size + to_pred.size)


_NAN = math.nan
_DEFINED = EmptyRule(None, None, None)
_PER_TUMOUR = EmptyRule(_NAN, _NAN, None)  # a percentage of the true tumour: undefined without one
for _spec in (
    MetricSpec("dice", "Dice", lambda m: _ratio(2 * m.tp, 2 * m.tp + m.fp + m.fn), headline=True, card_key="dice"),
    MetricSpec("iou", "IoU (Jaccard)", lambda m: _ratio(m.tp, m.tp + m.fp + m.fn), headline=True, card_key="iou"),
    MetricSpec("precision", "Precision", lambda m: _ratio(m.tp, m.n_pred), empty=EmptyRule(_NAN, 0.0, _NAN),
               headline=True, card_key="precision"),
    MetricSpec("recall", "Recall (sensitivity)", lambda m: _ratio(m.tp, m.n_truth), empty=EmptyRule(_NAN, _NAN, 0.0),
               headline=True, card_key="sensitivity"),
    MetricSpec("specificity", "Specificity", lambda m: _ratio(m.tn, m.tn + m.fp), empty=_DEFINED, fmt="{:.4f}",
               card_key="specificity"),
    MetricSpec("accuracy", "Accuracy", lambda m: _ratio(m.tp + m.tn, m.pred.size), empty=_DEFINED, fmt="{:.4f}"),
    MetricSpec("f2", "F2 (recall-weighted)", lambda m: _fbeta_from_counts(m.tp, m.fp, m.fn, 2.0), headline=True),
    MetricSpec("hd95", "Hausdorff 95 %",
               _distance(lambda a, b: float(max(np.percentile(a, 95), np.percentile(b, 95)))),
               unit="length", direction="lower", empty=EmptyRule(_NAN, _NAN, _NAN), fmt="{:.2f}",
               headline=True, card_key="hd95"),
    MetricSpec("assd", "Avg. surface distance", _distance(lambda a, b: float(np.concatenate([a, b]).mean())),
               unit="length", direction="lower", empty=EmptyRule(_NAN, _NAN, _NAN), fmt="{:.2f}", headline=True),
    MetricSpec("nsd", "Surface Dice (NSD)", _nsd, headline=True),
    MetricSpec("tp", "TP count (correct)", lambda m: m.tp, empty=_DEFINED, fmt="{:d}"),
    MetricSpec("fp", "FP count (over-predicted)", lambda m: m.fp, direction="lower", empty=_DEFINED, fmt="{:d}"),
    MetricSpec("fn", "FN count (missed)", lambda m: m.fn, direction="lower", empty=_DEFINED, fmt="{:d}"),
    MetricSpec("tn", "TN count (background)", lambda m: m.tn, direction="none", empty=_DEFINED, fmt="{:d}"),
    MetricSpec("volume_pred", "Predicted size", lambda m: m.n_pred * m.voxel, unit="size", direction="none",
               empty=_DEFINED, fmt="{:.1f}"),
    MetricSpec("volume_truth", "True size", lambda m: m.n_truth * m.voxel, unit="size", direction="none",
               empty=_DEFINED, fmt="{:.1f}"),
    MetricSpec("volume_abs_diff", "Size difference", lambda m: abs(m.n_pred - m.n_truth) * m.voxel, unit="size",
               direction="lower", empty=_DEFINED, fmt="{:.1f}"),
    MetricSpec("volume_rel_diff", "Relative size difference", lambda m: _ratio(m.n_pred - m.n_truth, m.n_truth),
               direction="zero", empty=EmptyRule(_NAN, _NAN, -1.0), fmt="{:+.1f} %", scale=100.0, headline=True),
    MetricSpec("pct_correct", "Correct, % of tumour", lambda m: 100.0 * _ratio(m.tp, m.n_truth),
               empty=EmptyRule(_NAN, _NAN, 0.0), fmt="{:.1f} %"),
    MetricSpec("pct_over", "Over-predicted, % of tumour", lambda m: 100.0 * _ratio(m.fp, m.n_truth),
               direction="lower", empty=EmptyRule(_NAN, _NAN, 0.0), fmt="{:.1f} %"),
    MetricSpec("pct_missed", "Missed, % of tumour", lambda m: 100.0 * _ratio(m.fn, m.n_truth),
               direction="lower", empty=EmptyRule(_NAN, _NAN, 100.0), fmt="{:.1f} %"),
):
    register(_spec)
del _spec


def unit_label(unit: Unit, ndim: int | None, *, spacing_known: bool = True) -> str:
    """The unit text of a ``unit`` kind: "" for "none"; "mm" / "px" for lengths; for sizes
    "mm²" / "px²" (``ndim`` 2), "mm³" / "voxels" (``ndim`` 3), "" when ``ndim`` is None."""
    if unit == "none" or (unit == "size" and ndim is None):
        return ""
    if unit == "length":
        return "mm" if spacing_known else "px"
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    if spacing_known:
        return "mm²" if ndim == 2 else "mm³"
    return "px²" if ndim == 2 else "voxels"


def format_value(key: str, value: float | int | None, *, ndim: int | None = None,
                 spacing_known: bool = True) -> str:
    """Human-readable text for one metric value: ``"n/a"`` for NaN or None.

    The number follows the spec's ``fmt`` (scores "0.667", specificity/accuracy "0.9455", counts
    "36", percentages "12.5 %", volume_rel_diff "+25.0 %") and its unit follows
    :func:`unit_label`: distances "2.83 mm", or "2.83 px" when ``spacing_known`` is False (the
    pixel size is unknown). Sizes carry "mm²"/"mm³" (or "px²"/"voxels") when ``ndim`` (2 or 3,
    the masks' dimensionality) is given, plus the mL equivalent of a 3D size in mm³; without
    ``ndim`` they are bare numbers. Unregistered keys use 4 significant digits.

    Examples:
        >>> format_value("hd95", 2.828, spacing_known=False), format_value("volume_pred", 36.0, ndim=2)
        ('2.83 px', '36.0 mm²')
    """
    if value is None or math.isnan(float(value)):
        return "n/a"
    spec = REGISTRY.get(key)
    if spec is None:
        return f"{value:.4g}"
    number = int(value) if spec.fmt.endswith(":d}") else float(value) * spec.scale
    text = spec.fmt.format(number)
    unit = unit_label(spec.unit, ndim, spacing_known=spacing_known)
    if not unit:
        return text
    if spec.unit == "size" and ndim == 3 and spacing_known:
        return f"{text} {unit} ({to_ml(value):.2f} mL)"
    return f"{text} {unit}"
