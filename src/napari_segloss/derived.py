"""What a probability map gives at a threshold: the mask, its outline, the difference map against a
ground truth and the metrics (headless, pure numpy).

Every consumer that turns a prediction into masks and numbers goes through :func:`derive`: the
widget (after inference and after every move of its threshold slider, in a worker thread),
``napari-segloss predict`` and the batch runner. :func:`slice_metrics` scores one slice of a
volume; :func:`agreement` and :func:`disagreement` summarise several checkpoints' masks.

Examples:
    >>> probability = np.zeros((8, 8), np.float32); probability[2:6, 2:6] = 0.9
    >>> truth = np.zeros((8, 8), bool); truth[2:6, 3:7] = True
    >>> derived = derive(probability, truth, None, 0.5)
    >>> int(derived.mask.sum()), round(derived.metrics["dice"], 3)
    (16, 0.75)
    >>> np.bincount(derived.difference.ravel(), minlength=4).tolist()  # none, TP, FP, FN
    [44, 12, 4, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_segloss import metrics, overlays


@dataclass(frozen=True)
class Derived:
    """The arrays and metrics of one probability map at one threshold.

    Attributes:
        threshold: the probability threshold used (``probability >= threshold`` is tumour).
        mask: uint8 0/1 prediction, the image's spatial shape.
        contour: uint8 one-pixel outline of ``mask`` (:func:`napari_segloss.overlays.contour_labels`),
            or None when not asked for.
        difference: uint8 0 / 1 TP / 2 FP / 3 FN against the ground truth
            (:func:`napari_segloss.overlays.difference_map`), or None without one.
        metrics: :func:`napari_segloss.metrics.compute` of the whole image or volume, or None
            without a ground truth.
    """

    threshold: float
    mask: np.ndarray
    contour: np.ndarray | None
    difference: np.ndarray | None
    metrics: dict[str, float | int] | None


def derive(
    probability: np.ndarray,
    truth: np.ndarray | None,
    spacing: Sequence[float] | None,
    threshold: float,
    *,
    tolerance_mm: float = 1.0,
    outline: bool = True,
) -> Derived:
    """Mask, outline, difference map and whole-image metrics of ``probability`` at ``threshold``.

    Args:
        probability: float ``(H, W)`` or ``(Z, H, W)`` in [0, 1].
        truth: bool mask of the same shape, or None.
        spacing: mm per axis, for the metrics; None = pixel size unknown (sizes in pixels).
        threshold: in [0, 1]; ``probability >= threshold`` is tumour.
        tolerance_mm: the NSD tolerance (:func:`napari_segloss.metrics.compute`).
        outline: compute :attr:`Derived.contour` (callers that render their own outlines skip it).
    Raises:
        ValueError: a threshold outside [0, 1], or what :func:`napari_segloss.metrics.compute`
            rejects (shapes, spacing).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    mask = np.asarray(probability) >= np.float32(threshold)
    difference = values = None
    if truth is not None:
        values = metrics.compute(mask, truth, spacing, tolerance_mm=tolerance_mm)
        difference = overlays.difference_map(mask, truth)
    contour = overlays.contour_labels(mask) if outline else None
    return Derived(float(threshold), mask.astype(np.uint8), contour, difference, values)


def slice_metrics(
    mask: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None, axis: int, index: int
) -> dict[str, float | int]:
    """:func:`napari_segloss.metrics.compute` of slice ``index`` along ``axis`` of a 3D pair
    (areas in mm², or px² with ``spacing`` None)."""
    plane_spacing = None if spacing is None else tuple(s for a, s in enumerate(spacing) if a != axis)
    return metrics.compute(np.take(mask, index, axis=axis), np.take(truth, index, axis=axis), plane_spacing)


def agreement(masks: Sequence[np.ndarray]) -> np.ndarray:
    """float32 fraction of ``masks`` that call each pixel tumour (0 = none, 1 = all); input shape."""
    if not masks:
        raise ValueError("agreement needs at least one mask")
    total = np.zeros(masks[0].shape, dtype=np.float32)
    for mask in masks:
        total += mask != 0
    return total / np.float32(len(masks))


def disagreement(fraction: np.ndarray) -> np.ndarray:
    """uint8 1 where the checkpoints disagree (0 < fraction < 1), else 0."""
    return ((fraction > 0) & (fraction < 1)).astype(np.uint8)
