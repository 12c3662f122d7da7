"""Prediction confidence on true-tumour and true-background pixels (the seed study's
"prediction confidence of black / white pixels")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfidenceHistogram:
    """Distributions of the predicted tumour probability, split by the ground truth.

    Attributes:
        edges: ``(bins + 1,)`` bin edges in [0, 1] (the last bin includes 1).
        tumour, background: ``(bins,)`` fraction of the true-tumour / true-background pixels
            in each bin (each sums to 1; all zeros when there is no such pixel).
        n_tumour, n_background: pixel counts.
        mean_tumour, mean_background: mean predicted probability (NaN without pixels).
    """

    edges: np.ndarray
    tumour: np.ndarray
    background: np.ndarray
    n_tumour: int
    n_background: int
    mean_tumour: float
    mean_background: float


def _distribution(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.histogram(values, bins=edges)[0].astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


def confidence_histograms(probability: np.ndarray, truth: np.ndarray, bins: int | np.ndarray = 20, *,
                          within: np.ndarray | None = None) -> ConfidenceHistogram:
    """Histograms of predicted probabilities on true-tumour and on true-background pixels.

    Args:
        probability: float probabilities in [0, 1], any shape ((H, W) or (Z, H, W)).
        truth: ground truth of the same shape (non-zero = tumour).
        bins: number of equal bins on [0, 1], or explicit increasing edges within [0, 1].
        within: optional bool mask of the same shape restricting both populations (e.g. the
            brain, so the easy air around the head does not dominate the background).
    Returns:
        :class:`ConfidenceHistogram`.
    """
    prob = np.asarray(probability, dtype=np.float64)
    fg = np.asarray(truth) != 0
    if prob.shape != fg.shape:
        raise ValueError(f"probability shape {prob.shape} != truth shape {fg.shape}")
    if prob.size and (np.nanmin(prob) < 0.0 or np.nanmax(prob) > 1.0 or np.isnan(prob).any()):
        raise ValueError("probability must hold finite values in [0, 1]")
    keep = np.ones(fg.shape, bool) if within is None else np.asarray(within, dtype=bool)
    if keep.shape != fg.shape:
        raise ValueError(f"within shape {keep.shape} != truth shape {fg.shape}")
    if np.ndim(bins) == 0:
        if int(bins) < 1:
            raise ValueError(f"bins must be a positive integer, got {bins}")
        edges = np.linspace(0.0, 1.0, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0 or edges[-1] > 1:
            raise ValueError("bin edges must increase strictly within [0, 1]")
    tumour, background = prob[fg & keep], prob[~fg & keep]
    return ConfidenceHistogram(
        edges, _distribution(tumour, edges), _distribution(background, edges), int(tumour.size),
        int(background.size), float(tumour.mean()) if tumour.size else float("nan"),
        float(background.mean()) if background.size else float("nan"),
    )
