"""What one checkpoint's run on one image layer produced, for the widget (headless).

:class:`RunResult` ties a probability map to its source layer, card and ground truth, with its
:class:`~napari_segloss.derived.Derived` arrays and metrics at the current threshold (computed by
:func:`napari_segloss.derived.derive`, the same function the CLI and batch use); :func:`csv_row`
is one row of the metrics panel's and comparison table's CSV export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_segloss import metrics
from napari_segloss.checkpoints import ModelCard
from napari_segloss.derived import Derived
from napari_segloss.spacing import layer_spacing, spacing_text


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

