"""Pixel-level losses: every pixel contributes its own (weighted) cross-entropy.

All take ``logits`` ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` and a binary ``target`` of the same
shape and return the mean over every pixel of the batch (images have equal sizes, so this is
also the mean of the per-image means).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from napari_segloss.losses._distance import target_distance
from napari_segloss.losses._functional import bce_map, focal_map, per_image_sum
from napari_segloss.losses._registry import LossInfo, register
from napari_segloss.losses.base import SegLoss


def _optional_in_range(loss: str, key: str, value: float | None, low: float, high: float | None) -> None:
    """Validate an optional numeric hyper-parameter (``None`` means "from the data")."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{loss}: {key} must be None or a number, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{loss}: {key}={value!r} is out of range [{low}, {high}]")


def _foreground_counts(masks: Iterable[np.ndarray]) -> tuple[int, int]:
    """Total (foreground, background) pixel counts over an iterable of binary masks."""
    pos = total = 0
    for mask in masks:
        mask = np.asarray(mask)
        pos += int(np.count_nonzero(mask))
        total += int(mask.size)
    return pos, total - pos


@register(
    LossInfo(
        name="bce",
        title="Binary cross-entropy",
        family="pixel",
        summary="Scores every pixel on its own: confident wrong pixels cost most, whatever the tumour size.",
        reference="Standard binary cross-entropy; for segmentation: Ronneberger, Fischer, Brox, "
        "'U-Net: convolutional networks for biomedical image segmentation', MICCAI 2015, arXiv:1505.04597.",
        notes="Computed from logits with logsigmoid (never log of a clamped probability); mean over all pixels.",
        aliases=("BCEWithLogitsLoss", "BCELoss", "BinaryCrossEntropy", "CrossEntropyLoss", "CE"),
        check="torch.nn.BCEWithLogitsLoss",
    )
)
class BCELoss(SegLoss):
    """Mean binary cross-entropy over all pixels (nats)."""

    name = "bce"

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_map(logits, target).mean()


@register(
    LossInfo(
        name="weighted_bce",
        title="Weighted binary cross-entropy",
        family="pixel",
        summary="Cross-entropy where tumour pixels count more, by how rare tumour is in the training set.",
        reference="Class-weighted cross-entropy as described in Azad et al., 'Loss functions in the era of "
        "semantic segmentation: a survey and outlook', arXiv:2312.05391 (2023), sec. 2.1.1; Jadon, 'A survey of "
        "loss functions for semantic segmentation', CIBCB 2020, arXiv:2006.14822.",
        defaults={"pos_weight": None, "max_pos_weight": 100.0},
        bounds={"max_pos_weight": (1.0, None)},
        needs=frozenset({"dataset_stats"}),
        notes="L = mean[-w+ y log p - (1 - y) log(1 - p)] (torch pos_weight). w+ = N_neg / N_pos counted once over "
        "the training masks by fit_dataset(masks), clipped to [1 / max_pos_weight, max_pos_weight] (tumour-free "
        "data -> the cap). "
        "pos_weight=None before fit_dataset: w+ is estimated from the current batch (capped). An explicit "
        "pos_weight is never overwritten by fit_dataset. state() = {'pos_weight': w+}, so "
        "build('weighted_bce', **state) rebuilds the fitted loss. The U-Net border weight map reading of the "
        "seed name is not implemented (it needs several touching objects).",
        aliases=("WeightedBinaryCrossEntropyLoss", "WeightedBCELoss", "WeightedCrossEntropyLoss", "WCE"),
        check="torch.nn.BCEWithLogitsLoss(pos_weight=w+)",
    )
)
class WeightedBCELoss(SegLoss):
    """BCE with a fixed positive-class weight ``w+ = N_neg / N_pos`` of the training set."""

    name = "weighted_bce"

    def __init__(self, pos_weight: float | None = None, max_pos_weight: float = 100.0) -> None:
        super().__init__()
        _optional_in_range(self.name, "pos_weight", pos_weight, 1e-6, None)
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.max_pos_weight = float(max_pos_weight)
        self._explicit = pos_weight is not None

    def _ratio(self, n_pos: float, n_neg: float) -> float:
        """``N_neg / N_pos`` clipped to ``[1 / max_pos_weight, max_pos_weight]``."""
        if n_pos == 0:
            return self.max_pos_weight
        return min(max(n_neg / n_pos, 1.0 / self.max_pos_weight), self.max_pos_weight)

    def fit_dataset(self, masks: Iterable[np.ndarray]) -> None:
        """Set ``w+ = N_neg / N_pos`` over all training masks (unless given explicitly)."""
        if self._explicit:
            return
        n_pos, n_neg = _foreground_counts(masks)
        self.pos_weight = self._ratio(n_pos, n_neg)

    def state(self) -> dict[str, Any]:
        return {"pos_weight": self.pos_weight}

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.pos_weight
        if weight is None:
            n_pos = float(target.sum())
            weight = self._ratio(n_pos, target.numel() - n_pos)
        log_p = torch.nn.functional.logsigmoid(logits)
        log_not_p = torch.nn.functional.logsigmoid(-logits)
        return -(weight * target * log_p + (1.0 - target) * log_not_p).mean()


@register(
    LossInfo(
        name="balanced_bce",
        title="Balanced binary cross-entropy",
        family="pixel",
        summary="Cross-entropy where tumour and background count equally in each image, however small the tumour.",
        reference="Xie & Tu, 'Holistically-nested edge detection', ICCV 2015, arXiv:1504.06375 (class-balanced "
        "cross-entropy); Jadon, 'A survey of loss functions for semantic segmentation', CIBCB 2020, arXiv:2006.14822.",
        defaults={"dataset_beta": None},
        needs=frozenset({"dataset_stats"}),
        notes="L = mean[-beta y log p - (1 - beta)(1 - y) log(1 - p)] with beta = N_neg / N of the current image. "
        "An image with one class only (tumour-free or all tumour) would get beta = 1 (or 0) and its false "
        "positives (negatives) would cost nothing; such images use the dataset-level beta = N_neg / N measured by "
        "fit_dataset(masks) (or given as dataset_beta), and 0.5 (plain BCE / 2) when neither is available. "
        "state() = {'dataset_beta': beta}.",
        aliases=("BalancedBCELoss", "BalancedCrossEntropyLoss", "BalancedCE"),
        check="torch.nn.BCEWithLogitsLoss(weight=per-pixel beta map)",
    )
)
class BalancedBCELoss(SegLoss):
    """BCE with per-image class balancing ``beta = N_neg / N``."""

    name = "balanced_bce"

    def __init__(self, dataset_beta: float | None = None) -> None:
        super().__init__()
        _optional_in_range(self.name, "dataset_beta", dataset_beta, 0.0, 1.0)
        self.dataset_beta = None if dataset_beta is None else float(dataset_beta)

    def fit_dataset(self, masks: Iterable[np.ndarray]) -> None:
        """Measure the dataset-level ``beta = N_neg / N`` used for one-class images."""
        n_pos, n_neg = _foreground_counts(masks)
        if n_pos + n_neg:
            self.dataset_beta = n_neg / (n_pos + n_neg)

    def state(self) -> dict[str, Any]:
        return {"dataset_beta": self.dataset_beta}

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = target[0].numel()
        n_pos = per_image_sum(target)
        beta = 1.0 - n_pos / n
        fallback = 0.5 if self.dataset_beta is None else self.dataset_beta
        beta = torch.where((n_pos == 0) | (n_pos == n), torch.full_like(beta, fallback), beta)
        beta = beta.view(-1, *([1] * (target.ndim - 1)))
        log_p = torch.nn.functional.logsigmoid(logits)
        log_not_p = torch.nn.functional.logsigmoid(-logits)
        return -(beta * target * log_p + (1.0 - beta) * (1.0 - target) * log_not_p).mean()


@register(
    LossInfo(
        name="topk",
        title="TopK cross-entropy",
        family="pixel",
        summary="Cross-entropy on the hardest pixels only (the worst k percent of each image).",
        reference="Wu, Shen, van den Hengel, 'Bridging category-level and instance-level semantic image "
        "segmentation', arXiv:1605.06885 (2016); k-percent form from nnU-Net / Ma et al., 'Loss odyssey in medical "
        "image segmentation', Medical Image Analysis 71 (2021) 102035, arXiv:2005.13449.",
        defaults={"k": 10.0},
        bounds={"k": (0.01, 100.0)},
        notes="Mean of the BCE of the max(1, int(N k / 100)) pixels with the largest BCE, chosen per image (not over "
        "the flattened batch as in nnU-Net), then averaged over the batch; k = 100 is plain BCE.",
        aliases=("TopKLoss", "TopK10", "TopKBCELoss"),
        check="torch.nn.BCEWithLogitsLoss(reduction='none') sorted with numpy",
    )
)
class TopKLoss(SegLoss):
    """BCE averaged over the ``k`` % hardest pixels of each image."""

    name = "topk"

    def __init__(self, k: float = 10.0) -> None:
        super().__init__()
        self.k = float(k)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = bce_map(logits, target).flatten(1)
        count = max(1, int(ce.shape[1] * self.k / 100.0))
        return ce.topk(count, dim=1, sorted=False).values.mean()


@register(
    LossInfo(
        name="focal",
        title="Focal loss",
        family="pixel",
        summary="Cross-entropy that fades out pixels the network already gets right, focusing on the hard ones.",
        reference="Lin, Goyal, Girshick, He, Dollar, 'Focal loss for dense object detection', ICCV 2017, "
        "arXiv:1708.02002.",
        defaults={"alpha": 0.25, "gamma": 2.0},
        bounds={"alpha": (0.0, 1.0), "gamma": (0.0, 10.0)},
        notes="alpha_t (1 - p_t)^gamma CE per pixel, mean over pixels; alpha weights the positive (tumour) class, "
        "so the published alpha = 0.25 down-weights the rare tumour pixels. (1 - p_t)^gamma is evaluated as "
        "exp(gamma logsigmoid(-z_t)), finite for every logit.",
        aliases=("FocalLoss", "SigmoidFocalLoss", "BinaryFocalLoss"),
        check="torchvision.ops.sigmoid_focal_loss(reduction='mean'), monai.losses.FocalLoss, "
        "segmentation_models_pytorch.losses.FocalLoss('binary')",
    )
)
class FocalLoss(SegLoss):
    """Sigmoid focal loss, mean over pixels."""

    name = "focal"

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_map(logits, target, gamma=self.gamma, alpha=self.alpha).mean()


def boundary_proximity(target_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Caliva's inverted, normalised distance map ``Phi`` in [0, 1], same shape as ``target``.

    Per image and per region (object, background): ``(max d - d) / max d`` with ``d = |target_dist|``
    the distance to the boundary, so ``Phi`` is about 1 next to the boundary and 0 farthest
    from it; an image without boundary (all ``target_dist`` zero) gives zeros.
    """
    distance = target_dist.abs()
    phi = torch.zeros_like(distance)
    inside = target > 0.5
    for region in (inside, ~inside):
        region_dist = torch.where(region, distance, torch.zeros_like(distance))
        top = region_dist.flatten(1).max(1).values.view(-1, *([1] * (distance.ndim - 1)))
        phi = torch.where(region & (top > 0), (top - distance) / top.clamp_min(1e-12), phi)
    return phi


@register(
    LossInfo(
        name="distance_bce",
        title="Distance-map-penalised cross-entropy",
        family="pixel",
        summary="Cross-entropy that counts up to twice as much near the tumour border, where mistakes change the outline.",
        reference="Caliva, Iriondo, Martinez, Majumdar, Pedoia, 'Distance map loss penalty term for semantic "
        "segmentation', MIDL 2019 (abstract track, openreview B1eIcvS45V), arXiv:1908.03679.",
        notes="L = mean[(1 + Phi) CE] with Phi = boundary_proximity: per image and per region (object, "
        "background) the normalised inverted Euclidean distance to the boundary, in [0, 1], as in SegLossOdyssey's "
        "compute_edts_forPenalizedLoss (whose DisPenalizedCE then returns the unweighted CE; here the weighted one "
        "is returned). Empty or full targets have no boundary: Phi = 0, plain BCE. Distances are in mm when "
        "spacing= (mm per spatial axis) is passed; a data loader may pass target_dist= (B, 1, *spatial), the "
        "signed distance map of losses.signed_distance (negative inside), and Phi is derived from it. Not the "
        "seed's DistanceMapPenalizingLoss (it collapsed).",
        aliases=("DistancePenalizedCELoss", "DisPenalizedCE", "DistanceMapBCELoss", "DistanceMapCELoss"),
        check="torch.nn.BCEWithLogitsLoss(weight=1 + Phi) with Phi from brute-force distances (tests)",
        slow_reason="Euclidean distance transform of every target on the CPU when target_dist= is not given "
        "(about 8 ms per 256x256 image); precompute it in the data loader.",
    )
)
class DistanceBCELoss(SegLoss):
    """BCE weighted by ``1 + Phi``, Phi the inverted distance-to-boundary map of the target.

    Extras: ``target_dist`` (B, 1, *spatial) signed distance in mm
    (:func:`napari_segloss.losses.signed_distance`), computed from ``target`` with ``spacing``
    (mm per spatial axis) when not given.
    """

    name = "distance_bce"
    uses = frozenset({"target_dist", "spacing"})

    def compute(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        *,
        target_dist: torch.Tensor | None = None,
        spacing: Sequence[float] | None = None,
    ) -> torch.Tensor:
        phi = boundary_proximity(target_distance(target, target_dist, spacing), target)
        return ((1.0 + phi) * bce_map(logits, target)).mean()
