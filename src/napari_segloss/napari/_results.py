"""What one checkpoint's run produced, and everything derived from it at a threshold (headless).

:func:`derive` turns a probability map into the arrays behind the result layers and the metrics;
it is pure numpy, so the widget runs it in a worker thread after inference and after every move of
the threshold slider. :func:`agreement` and :func:`disagreement` summarise several checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_segloss import metrics, overlays
from napari_segloss.checkpoints import ModelCard
from napari_segloss.spacing import layer_spacing, spacing_text


@dataclass(frozen=True)
class Derived:
    """The arrays and metrics of one probability map at one threshold.

    Attributes:
        threshold: the probability threshold used (``probability >= threshold`` is tumour).
        mask: uint8 0/1 prediction, the image's spatial shape.
        contour: uint8 one-pixel outline of ``mask`` (:func:`napari_segloss.overlays.contour_labels`).
        difference: uint8 0 / 1 TP / 2 FP / 3 FN against the ground truth, or None without one.
        metrics: :func:`napari_segloss.metrics.compute` of the whole image or volume, or None
            without a ground truth.
    """

    threshold: float
    mask: np.ndarray
    contour: np.ndarray
    difference: np.ndarray | None
    metrics: dict[str, float | int] | None


@dataclass
class RunResult:
    """One checkpoint run on one image layer.

    Attributes:
        source: the source layer's key (:func:`napari_segloss.napari._layers.source_key`).
        image_name: the source layer's name when it was run.
        card: the checkpoint's model card.
        probability: float32 foreground probability, the image's spatial shape.
        truth: bool ground truth of the same shape, or None.
        spacing: mm per spatial axis (the source layer's scale).
        run: what was run (``Prediction.metadata``: checkpoint, loss, sha256, device, seconds, version).
        derived: the arrays and metrics at the current threshold.
    """

    source: str
    image_name: str
    card: ModelCard
    probability: np.ndarray
    truth: np.ndarray | None
    spacing: tuple[float, ...]
    run: dict[str, Any]
    derived: Derived

    @property
    def checkpoint(self) -> str:
        """The checkpoint's name."""
        return self.card.name

    @property
    def ndim(self) -> int:
        """Spatial dimensionality (2 or 3)."""
        return self.probability.ndim


def derive(
    probability: np.ndarray, truth: np.ndarray | None, spacing: Sequence[float], threshold: float
) -> Derived:
    """Mask, outline, difference map and whole-image metrics of ``probability`` at ``threshold``.

    Args:
        probability: float ``(H, W)`` or ``(Z, H, W)`` in [0, 1].
        truth: bool mask of the same shape, or None.
        spacing: mm per axis, for the metrics.
        threshold: in [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    mask = probability >= np.float32(threshold)
    difference = values = None
    if truth is not None:
        difference = overlays.difference_map(mask, truth)
        values = metrics.compute(mask, truth, spacing)
    return Derived(float(threshold), mask.astype(np.uint8), overlays.contour_labels(mask), difference, values)


def slice_metrics(
    mask: np.ndarray, truth: np.ndarray, spacing: Sequence[float], axis: int, index: int
) -> dict[str, float | int]:
    """:func:`napari_segloss.metrics.compute` of slice ``index`` along ``axis`` of a 3D pair (areas in mm²)."""
    plane_spacing = tuple(s for a, s in enumerate(spacing) if a != axis)
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


def csv_row(result: RunResult, values: dict[str, float | int], scope: str) -> dict[str, Any]:
    """One CSV row: image, checkpoint, loss, threshold, scope, the metric values, what was run."""
    row: dict[str, Any] = {
        "image": result.image_name,
        "checkpoint": result.checkpoint,
        "loss": result.card.loss,
        "family": result.card.family,
        "threshold": result.derived.threshold,
        "scope": scope,
        "spacing_mm": spacing_text(layer_spacing(result.spacing)),  # "unknown" for a unit scale
    }
    row.update({key: values.get(key, math.nan) for key in metrics.METRIC_KEYS})
    row.update({
        "weights_sha256": result.card.weights_sha256,
        "device": result.run.get("device", ""),
        "napari_segloss_version": result.run.get("napari_segloss_version", ""),
    })
    return row
