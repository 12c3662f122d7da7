"""Region-level losses: overlap, similarity or likelihood of the whole predicted region.

All take ``logits`` ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` and a binary ``target`` of the same
shape. Unless a loss's notes say otherwise, it is computed per image (sums over the spatial
axes) with smoothing ``smooth = 1e-5`` on numerator and denominator and averaged over the batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from napari_segloss.losses._functional import (
    SMOOTH,
    bce_map,
    dice_index,
    jaccard_index,
    per_image_sum,
    soft_counts,
    tversky_index,
    two_class,
)
from napari_segloss.losses._registry import LossInfo, register
from napari_segloss.losses.base import SegLoss

_SMOOTH_BOUNDS = (1e-8, 1.0)
_SMOOTH_NOTE = "smooth = 1e-5 on numerator and denominator (Keras-era code used 1)."


def _counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft (TP, FP, FN) per image, each (B,), from logits."""
    return soft_counts(torch.sigmoid(logits), target)


@register(
    LossInfo(
        name="dice",
        title="Soft Dice",
        family="region",
        summary="Rewards overlap between predicted and true tumour, whatever the tumour size.",
        reference="Milletari, Navab, Ahmadi, 'V-Net: fully convolutional neural networks for volumetric medical "
        "image segmentation', 3DV 2016, arXiv:1606.04797; Drozdzal et al., 'The importance of skip connections in "
        "biomedical image segmentation', DLMIA 2016, arXiv:1608.04117 (no squared terms).",
        defaults={"smooth": SMOOTH, "per_image": True},
        bounds={"smooth": _SMOOTH_BOUNDS, "per_image": (True, False)},
        notes="L = 1 - (2 TP + s) / (2 TP + FP + FN + s) per image, mean over the batch; no squared denominator "
        "(nnU-Net, MONAI squared_pred=False). " + _SMOOTH_NOTE + " A tumour-free image scores "
        "1 - s / (sum p + s): it pushes p to 0 and dominates the value when most slices are empty "
        "(smp instead zeroes empty images); once anything is predicted that value is flat, so a "
        "tumour-free image teaches next to nothing. per_image=False pools TP, FP and FN over the batch "
        "first (nnU-Net's batch Dice, MONAI batch=True): a tumour-free image's false positives then "
        "count against the batch's tumours.",
        aliases=("DiceLoss", "SoftDiceLoss", "DL"),
        check="monai.losses.DiceLoss(sigmoid=True); segmentation_models_pytorch.losses.DiceLoss('binary', "
        "smooth=1e-5) per image on non-empty targets",
    )
)
class DiceLoss(SegLoss):
    """``1 - soft Dice`` per image, mean over the batch (``per_image=False``: of the pooled batch)."""

    name = "dice"

    def __init__(self, smooth: float = SMOOTH, per_image: bool = True) -> None:
        super().__init__()
        self.smooth = float(smooth)
        self.per_image = bool(per_image)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        counts = _counts(logits, target)
        if not self.per_image:
            counts = tuple(c.sum() for c in counts)
        return (1.0 - dice_index(*counts, self.smooth)).mean()


@register(
    LossInfo(
        name="iou",
        title="Soft IoU (Jaccard)",
        family="region",
        summary="Rewards the intersection over union of predicted and true tumour; stricter than Dice on partial overlap.",
        reference="Rahman & Wang, 'Optimizing intersection-over-union in deep neural networks for image "
        "segmentation', ISVC 2016, doi:10.1007/978-3-319-50835-1_22.",
        defaults={"smooth": SMOOTH},
        bounds={"smooth": _SMOOTH_BOUNDS},
        notes="L = 1 - (TP + s) / (TP + FP + FN + s) per image, mean over the batch. " + _SMOOTH_NOTE
        + " MONAI's DiceLoss(jaccard=True) equals this with smooth_nr = smooth_dr = 2 s.",
        aliases=("IoULoss", "JaccardLoss", "SoftJaccardLoss"),
        check="monai.losses.DiceLoss(sigmoid=True, jaccard=True, smooth_nr=smooth_dr=2e-5); "
        "segmentation_models_pytorch.losses.JaccardLoss('binary', smooth=1e-5) per image",
    )
)
class IoULoss(SegLoss):
    """``1 - soft Jaccard`` per image, mean over the batch."""

    name = "iou"

    def __init__(self, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.smooth = float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1.0 - jaccard_index(*_counts(logits, target), self.smooth)).mean()


@register(
    LossInfo(
        name="tversky",
        title="Tversky",
        family="region",
        summary="Overlap score that punishes missed tumour (0.7) more than false alarms (0.3).",
        reference="Salehi, Erdogmus, Gholipour, 'Tversky loss function for image segmentation using 3D fully "
        "convolutional deep networks', MLMI 2017, arXiv:1706.05721.",
        defaults={"alpha": 0.3, "beta": 0.7, "smooth": SMOOTH},
        bounds={"alpha": (0.0, 1.0), "beta": (0.0, 1.0), "smooth": _SMOOTH_BOUNDS},
        notes="L = 1 - (TP + s) / (TP + alpha FP + beta FN + s) per image; alpha weights false positives, beta "
        "false negatives (Salehi, MONAI and smp; SemSegLoss and Abraham name the FN weight alpha). "
        "alpha = beta = 0.5 is Dice.",
        aliases=("TverskyLoss",),
        check="monai.losses.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7); "
        "segmentation_models_pytorch.losses.TverskyLoss('binary', alpha=0.3, beta=0.7, smooth=1e-5) per image",
    )
)
class TverskyLoss(SegLoss):
    """``1 - Tversky index`` per image, mean over the batch."""

    name = "tversky"

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = _counts(logits, target)
        return (1.0 - tversky_index(tp, fp, fn, self.alpha, self.beta, self.smooth)).mean()


@register(
    LossInfo(
        name="focal_tversky",
        title="Focal Tversky",
        family="region",
        summary="Tversky overlap raised to a power below one, so badly segmented (often small) tumours weigh more.",
        reference="Abraham & Khan, 'A novel focal Tversky loss function with improved attention U-Net for lesion "
        "segmentation', ISBI 2019, arXiv:1810.07842.",
        defaults={"alpha": 0.3, "beta": 0.7, "gamma": 0.75, "smooth": SMOOTH},
        bounds={"alpha": (0.0, 1.0), "beta": (0.0, 1.0), "gamma": (0.1, 3.0), "smooth": _SMOOTH_BOUNDS},
        notes="L = (1 - TI)^gamma per image, mean over the batch; gamma is the exponent itself (the paper's 1/gamma "
        "with gamma = 4/3, smp's gamma). alpha = FP weight, beta = FN weight. The authors' Keras code used s = 1; "
        "here s = 1e-5. 1 - TI is clamped at 1e-6 so the gradient of x^0.75 stays finite at a perfect prediction.",
        aliases=("FocalTverskyLoss", "FocalTversky_loss"),
        check="segmentation_models_pytorch.losses.TverskyLoss('binary', alpha=0.3, beta=0.7, gamma=0.75, "
        "smooth=1e-5) per image",
    )
)
class FocalTverskyLoss(SegLoss):
    """``(1 - Tversky index)^gamma`` per image, mean over the batch."""

    name = "focal_tversky"

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.alpha, self.beta, self.gamma, self.smooth = float(alpha), float(beta), float(gamma), float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = _counts(logits, target)
        loss = 1.0 - tversky_index(tp, fp, fn, self.alpha, self.beta, self.smooth)
        return loss.clamp_min(1e-6).pow(self.gamma).mean()


@register(
    LossInfo(
        name="log_cosh_dice",
        title="Log-Cosh Dice",
        family="region",
        summary="A smoothed Dice loss: same goal as Dice, gentler push once the overlap is already good.",
        reference="Jadon, 'A survey of loss functions for semantic segmentation', IEEE CIBCB 2020, arXiv:2006.14822.",
        defaults={"smooth": SMOOTH},
        bounds={"smooth": _SMOOTH_BOUNDS},
        notes="L = ln cosh(L_Dice) with L_Dice the per-image soft Dice loss, mean over the batch (SemSegLoss applies "
        "it to a batch-global Dice with s = 1). ln cosh x ~ x^2 / 2 on [0, 1]: a squared Dice loss.",
        aliases=("LogCoshDiceLoss", "LogCoshDice"),
        check="monai.losses.DiceLoss(sigmoid=True, reduction='none') composed with ln cosh",
    )
)
class LogCoshDiceLoss(SegLoss):
    """``ln cosh(1 - soft Dice)`` per image, mean over the batch."""

    name = "log_cosh_dice"

    def __init__(self, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.smooth = float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cosh(1.0 - dice_index(*_counts(logits, target), self.smooth))).mean()


@register(
    LossInfo(
        name="sensitivity_specificity",
        title="Sensitivity-Specificity",
        family="region",
        summary="Squared error averaged separately inside and outside the tumour, then mixed with a fixed ratio.",
        reference="Brosch, Yoo, Tang, Li, Traboulsee, Tam, 'Deep convolutional encoder networks for multiple "
        "sclerosis lesion segmentation', MICCAI 2015, doi:10.1007/978-3-319-24574-4_1.",
        defaults={"r": 0.05, "smooth": SMOOTH},
        bounds={"r": (0.0, 1.0), "smooth": _SMOOTH_BOUNDS},
        notes="L = r sum[(y - p)^2 y] / (sum y + s) + (1 - r) sum[(y - p)^2 (1 - y)] / (sum (1 - y) + s) per image: r "
        "weights the error on tumour pixels (sensitivity), 1 - r the error on background (specificity); r = 0.05 "
        "as NiftyNet (SegLoss uses 0.1). Foreground channel only: averaging over [bg, fg] channels makes r cancel.",
        aliases=("SensitivitySpecificityLoss", "SSLoss", "SensitivitySpecifityLoss"),
        check="none: invariants only",
    )
)
class SensitivitySpecificityLoss(SegLoss):
    """Brosch's weighted sum of the mean squared error on tumour and on background pixels."""

    name = "sensitivity_specificity"

    def __init__(self, r: float = 0.05, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.r, self.smooth = float(r), float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        squared = (target - torch.sigmoid(logits)) ** 2
        sensitivity = per_image_sum(squared * target) / (per_image_sum(target) + self.smooth)
        specificity = per_image_sum(squared * (1.0 - target)) / (per_image_sum(1.0 - target) + self.smooth)
        return (self.r * sensitivity + (1.0 - self.r) * specificity).mean()


def generalized_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, weight_type: str = "square", smooth: float = SMOOTH
) -> torch.Tensor:
    """Per-image generalised Dice loss over the two classes ``[1 - p, p]`` -> (B,).

    Class weights ``w_c = 1 / (sum_i Y_ic)^2`` ("square"), ``1 / sum_i Y_ic`` ("simple") or 1
    ("uniform"); a class absent from the image gets the largest weight of the present classes
    (MONAI's rule).
    """
    prob, labels = two_class(torch.sigmoid(logits)), two_class(target)
    spatial = tuple(range(2, prob.ndim))
    intersection = (prob * labels).sum(spatial)
    denominator = (prob + labels).sum(spatial)
    volume = labels.sum(spatial)
    present = volume > 0
    if weight_type == "uniform":
        weight = torch.ones_like(volume)
    else:
        power = 2.0 if weight_type == "square" else 1.0
        weight = torch.where(present, volume.clamp_min(1.0) ** -power, torch.zeros_like(volume))
        weight = torch.where(present, weight, weight.max(dim=1, keepdim=True).values)
    score = (2.0 * (weight * intersection).sum(1) + smooth) / ((weight * denominator).sum(1) + smooth)
    return 1.0 - score


@register(
    LossInfo(
        name="generalized_dice",
        title="Generalised Dice",
        family="region",
        summary="Dice over tumour and background together, each weighted by the inverse of its squared size.",
        reference="Sudre, Li, Vercauteren, Ourselin, Cardoso, 'Generalised Dice overlap as a deep learning loss "
        "function for highly unbalanced segmentations', DLMIA 2017, arXiv:1707.03237.",
        defaults={"weight_type": "square", "smooth": SMOOTH},
        bounds={"weight_type": ("square", "simple", "uniform"), "smooth": _SMOOTH_BOUNDS},
        notes="Two classes [1 - p, p] / [1 - y, y] (on the foreground channel alone the weight cancels and the loss "
        "is Dice); w_c = 1 / (sum Y_c)^2 per image. A class absent from the image (tumour-free slice) takes the "
        "largest weight of the present classes, as MONAI does; Sudre's 1 / (sum Y + eps)^2 would give it a weight "
        "of about 1 / eps^2.",
        aliases=("GeneralizedDiceLoss", "GeneralisedDiceLoss", "GDiceLoss", "GDL"),
        check="monai.losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True) on logits [0, z]",
    )
)
class GeneralizedDiceLoss(SegLoss):
    """Generalised Dice loss on ``[1 - p, p]`` per image, mean over the batch."""

    name = "generalized_dice"

    def __init__(self, weight_type: str = "square", smooth: float = SMOOTH) -> None:
        super().__init__()
        self.weight_type, self.smooth = weight_type, float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return generalized_dice_loss(logits, target, self.weight_type, self.smooth).mean()


@register(
    LossInfo(
        name="gw_dice",
        title="Generalised Wasserstein Dice",
        family="region",
        summary="Dice where mistakes cost by how far apart the confused classes are; with two classes it is plain Dice.",
        reference="Fidon, Li, Garcia-Peraza-Herrera, Ekanayake, Kitchen, Ourselin, Vercauteren, 'Generalised "
        "Wasserstein Dice score for imbalanced multi-class segmentation using holistic convolutional networks', "
        "BrainLes (MICCAI) 2017, arXiv:1707.00478.",
        defaults={"smooth": SMOOTH},
        bounds={"smooth": _SMOOTH_BOUNDS},
        notes="Distance matrix M = [[0, 1], [1, 0]] on [background, tumour], alpha = (0, 1) (paper's default "
        "weighting). For one foreground class the pixel error is |y - p|, the generalised TP is the soft TP and "
        "the loss is identical to Dice: expect a Dice duplicate checkpoint (kept for parity with the seed).",
        aliases=("GeneralizedWassersteinDiceLoss", "GWDL", "GWDiceLoss"),
        check="monai.losses.GeneralizedWassersteinDiceLoss(dist_matrix=[[0, 1], [1, 0]]) on logits [0, z]; "
        "identity with dice",
    )
)
class GeneralizedWassersteinDiceLoss(SegLoss):
    """Generalised Wasserstein Dice loss with the two-class distance matrix."""

    name = "gw_dice"

    def __init__(self, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.smooth = float(smooth)
        self.register_buffer("distance", torch.tensor([[0.0, 1.0], [1.0, 0.0]]), persistent=False)
        self.register_buffer("class_alpha", torch.tensor([0.0, 1.0]), persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob = two_class(torch.sigmoid(logits)).flatten(2)  # (B, 2, N)
        labels = target.flatten(1).long()  # (B, N)
        distance = self.distance.to(prob)
        rows = distance[labels].transpose(1, 2)  # (B, 2, N): M[g_i, l]
        error = (rows * prob).sum(1)  # Wasserstein distance per pixel, (B, N)
        true_pos = (self.class_alpha.to(prob)[labels] * (1.0 - error)).sum(1)
        score = (2.0 * true_pos + self.smooth) / (2.0 * true_pos + error.sum(1) + self.smooth)
        return (1.0 - score).mean()


@register(
    LossInfo(
        name="asymmetric_similarity",
        title="Asymmetric similarity (F-beta)",
        family="region",
        summary="F-beta overlap that counts missed tumour beta^2 times as much as false alarms (beta = 1.5).",
        reference="Hashemi, Salehi, Erdogmus, Prabhu, Warfield, Gholipour, 'Asymmetric loss functions and deep "
        "densely-connected networks for highly-imbalanced medical image segmentation: application to multiple "
        "sclerosis lesion detection', IEEE Access 7 (2018), arXiv:1803.11078.",
        defaults={"beta": 1.5, "smooth": SMOOTH},
        bounds={"beta": (0.1, 10.0), "smooth": _SMOOTH_BOUNDS},
        notes="L = 1 - F_beta = 1 - ((1 + b^2) TP + s') / ((1 + b^2) TP + b^2 FN + FP + s') per image; written as "
        "the Tversky index with FP weight 1 / (1 + b^2) and FN weight b^2 / (1 + b^2) (SegLoss AsymLoss), so it "
        "equals tversky(alpha = 1 / (1 + b^2), beta = b^2 / (1 + b^2)) exactly (0.308 / 0.692 for b = 1.5).",
        aliases=("AsymmetricSimilarityLoss", "AsymLoss", "FBetaLoss"),
        check="identity with tversky; monai.losses.TverskyLoss(sigmoid=True) with those weights",
    )
)
class AsymmetricSimilarityLoss(SegLoss):
    """``1 - F_beta`` per image, mean over the batch."""

    name = "asymmetric_similarity"

    def __init__(self, beta: float = 1.5, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.beta, self.smooth = float(beta), float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b2 = self.beta**2
        tp, fp, fn = _counts(logits, target)
        return (1.0 - tversky_index(tp, fp, fn, 1.0 / (1.0 + b2), b2 / (1.0 + b2), self.smooth)).mean()


@register(
    LossInfo(
        name="penalty_gdice",
        title="Penalty generalised Dice",
        family="region",
        summary="Generalised Dice with an extra penalty on false positives and false negatives (k = 2.5).",
        reference="Yang, Kweon, Kim et al., 'Major vessel segmentation on X-ray coronary angiography using deep "
        "networks with a novel penalty loss function', MIDL 2019 (abstract track, openreview H1lTh8unKN).",
        defaults={"k": 2.5, "weight_type": "square", "smooth": SMOOTH},
        bounds={"k": (0.0, 100.0), "weight_type": ("square", "simple", "uniform"), "smooth": _SMOOTH_BOUNDS},
        notes="L = L_GD / (1 + k (1 - L_GD)) per image with L_GD the two-class generalised Dice loss "
        "(see generalized_dice); k = 0 is generalised Dice. Follows SegLossOdyssey's test/nnUNetV1 version (its "
        "losses_pytorch/ version feeds -GDC into the formula). Loss Odyssey found it unstable.",
        aliases=("PenaltyLoss", "PenaltyGDiceLoss", "PenaltyGeneralizedDiceLoss", "pGDice"),
        check="monai.losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, reduction='none') on logits [0, z], "
        "then the penalty formula",
    )
)
class PenaltyGeneralizedDiceLoss(SegLoss):
    """Penalised generalised Dice ``L_GD / (1 + k (1 - L_GD))`` per image, mean over the batch."""

    name = "penalty_gdice"

    def __init__(self, k: float = 2.5, weight_type: str = "square", smooth: float = SMOOTH) -> None:
        super().__init__()
        self.k, self.weight_type, self.smooth = float(k), weight_type, float(smooth)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        gd = generalized_dice_loss(logits, target, self.weight_type, self.smooth)
        return (gd / (1.0 + self.k * (1.0 - gd))).mean()


def lovasz_hinge_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary Lovasz hinge of each row: ``logits``, ``target`` (R, N) -> (R,).

    Margins ``1 - z s`` (``s = 2y - 1``) sorted in decreasing order are weighted by the discrete
    derivative of the Jaccard loss along that order (Berman et al., Alg. 1).
    """
    margins = 1.0 - logits * (2.0 * target - 1.0)
    sorted_margins, order = margins.sort(dim=1, descending=True)
    labels = target.gather(1, order)
    total = labels.sum(1, keepdim=True)
    intersection = total - labels.cumsum(1)
    union = total + (1.0 - labels).cumsum(1)
    jaccard = 1.0 - intersection / union
    slope = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (F.relu(sorted_margins) * slope).sum(1)


@register(
    LossInfo(
        name="lovasz_hinge",
        title="Lovasz hinge",
        family="region",
        summary="A direct, convex stand-in for optimising the intersection over union of each image.",
        reference="Berman, Rannen Triki, Blaschko, 'The Lovasz-Softmax loss: a tractable surrogate for the "
        "optimization of the intersection-over-union measure in neural networks', CVPR 2018, arXiv:1705.08790.",
        defaults={"per_image": True},
        bounds={"per_image": (True, False)},
        notes="Berman's binary lovasz_hinge on logits, per_image=True as in Berman's code (smp defaults to "
        "per_image=False, a different value). One sort per image (O(N log N)). On a tumour-free image only the "
        "largest margin gets a gradient. The multi-class Lovasz-Softmax of the Azad survey is not this loss.",
        aliases=("LovaszHingeLoss", "LovaszLoss", "LovaszHinge"),
        check="segmentation_models_pytorch.losses.LovaszLoss('binary', per_image=True)",
    )
)
class LovaszHingeLoss(SegLoss):
    """Lovasz hinge, mean over images (or over the flattened batch with ``per_image=False``)."""

    name = "lovasz_hinge"

    def __init__(self, per_image: bool = True) -> None:
        super().__init__()
        self.per_image = bool(per_image)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rows = logits.shape[0] if self.per_image else 1
        return lovasz_hinge_rows(logits.reshape(rows, -1), target.reshape(rows, -1)).mean()


def rmi_lower_bound(prob: torch.Tensor, target: torch.Tensor, radius: int = 3, pool_size: int = 4) -> torch.Tensor:
    """RMI term of each 2-D image: ``prob``, ``target`` (N, 1, H, W) -> (N,), computed in float64.

    Both maps are average-pooled (kernel = stride = ``pool_size``, padding ``pool_size // 2``),
    every pixel becomes the ``radius^2`` vector of its neighbourhood, and the result is
    ``0.5 log det(Sigma_Y|P + 5e-4 I) / radius^2`` with the (unnormalised) posterior covariance
    ``Sigma_Y - Sigma_YP (Sigma_P + 5e-4 I)^-1 Sigma_YP^T`` (Zhao et al. 2019, official code).
    """
    prob, target = prob.double(), target.double()
    if pool_size > 1:
        prob = F.avg_pool2d(prob, pool_size, pool_size, padding=pool_size // 2)
        target = F.avg_pool2d(target, pool_size, pool_size, padding=pool_size // 2)
    height, width = prob.shape[-2] - radius + 1, prob.shape[-1] - radius + 1
    if height < 1 or width < 1:
        raise ValueError(f"rmi: image too small for radius {radius} after pooling by {pool_size}")

    def neighbourhoods(x: torch.Tensor) -> torch.Tensor:
        shifted = [x[:, 0, dy : dy + height, dx : dx + width] for dy in range(radius) for dx in range(radius)]
        vectors = torch.stack(shifted, dim=1).flatten(2)  # (N, radius^2, positions)
        return vectors - vectors.mean(dim=2, keepdim=True)

    y_vec, p_vec = neighbourhoods(target), neighbourhoods(prob)
    ridge = 5e-4 * torch.eye(radius * radius, dtype=prob.dtype, device=prob.device)
    cov_y = y_vec @ y_vec.transpose(1, 2)
    cov_p = p_vec @ p_vec.transpose(1, 2)
    cov_yp = y_vec @ p_vec.transpose(1, 2)
    posterior = cov_y - cov_yp @ torch.linalg.solve(cov_p + ridge, cov_yp.transpose(1, 2))
    chol = torch.linalg.cholesky(posterior + ridge)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * log_det / (radius * radius)


@register(
    LossInfo(
        name="rmi",
        title="Region mutual information",
        family="region",
        summary="Cross-entropy plus a term that makes each 3x3 patch of the prediction carry the shape of the true patch.",
        reference="Zhao, Wang, Yang, Cai, 'Region mutual information loss for semantic segmentation', NeurIPS 2019, "
        "arXiv:1910.11356.",
        defaults={"radius": 3, "pool_size": 4, "bce_weight": 0.5},
        bounds={"radius": tuple(range(1, 11)), "pool_size": tuple(range(1, 9)), "bce_weight": (0.0, 1.0)},
        notes="L = w BCE + (1 - w) L_RMI, w = 0.5 (official lambda_way = 1); L_RMI as the official sigmoid path: "
        "p = sigmoid + 1e-6, average pooling 4 / stride 4 / padding 2 (train.sh), radius 3, 5e-4 ridge, float64 "
        "Cholesky, mean over images. The foreground map is the single class (the official one-hot labels fail for "
        "one class). BCE is the plain pixel mean (official: sum / (N + 1)); (Sigma_P + ridge)^-1 is applied with "
        "a linear solve instead of an explicit inverse. 3-D volumes: 2-D RMI on every axial slice, averaged per "
        "volume. L_RMI is a log-determinant and can be negative.",
        aliases=("RMILoss", "RegionMutualInformationLoss"),
        check="none: invariants only (tests compare L_RMI with a NumPy float64 slogdet re-derivation)",
    )
)
class RMILoss(SegLoss):
    """BCE plus the region-mutual-information lower bound."""

    name = "rmi"

    def __init__(self, radius: int = 3, pool_size: int = 4, bce_weight: float = 0.5) -> None:
        super().__init__()
        self.radius, self.pool_size, self.bce_weight = int(radius), int(pool_size), float(bce_weight)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(logits) + 1e-6
        batch = logits.shape[0]
        if logits.ndim == 5:  # (B, 1, D, H, W) -> (B * D, 1, H, W)
            prob = prob.transpose(1, 2).flatten(0, 1)
            target_2d = target.transpose(1, 2).flatten(0, 1)
        else:
            target_2d = target
        rmi = rmi_lower_bound(prob, target_2d, self.radius, self.pool_size).view(batch, -1).mean(1)
        bce = bce_map(logits, target).mean()
        return self.bce_weight * bce + (1.0 - self.bce_weight) * rmi.mean().to(logits.dtype)


@register(
    LossInfo(
        name="robust_t",
        title="Robust T-loss",
        family="region",
        summary="Treats the whole error map as Student-t noise, so a few mislabelled pixels cannot dominate training.",
        reference="Gonzalez-Jimenez, Lionetti, Gottfrois, Groger, Pouly, Navarini, 'Robust T-loss for medical image "
        "segmentation', MICCAI 2023, arXiv:2306.00753.",
        defaults={"nu": 1.0, "epsilon": 1e-8, "per_pixel": True},
        bounds={"nu": (-5.0, 10.0), "epsilon": (0.0, 1e-2), "per_pixel": (True, False)},
        notes="Negative log-likelihood of a D-variate Student-t on delta = sigmoid(z) - y of each image (D = pixels "
        "per image, from the tensor, so 3-D works), degrees of freedom nu_eff = exp(nu) + epsilon with nu a "
        "learnable nn.Parameter initialised to 1.0 (official code; optimise it in its own parameter group, "
        "official lr 1e-3). Log-precisions lambda_j fixed to 1 as in the official code (precision e per pixel). "
        "The (D/2) ln nu_eff term uses ln(exp(nu) + eps) where the official code writes nu + eps. "
        "per_pixel=True divides by D (values about 1 instead of O(D), same minimiser, Adam-invariant); "
        "per_pixel=False is the paper's raw NLL. Can be negative. state() = {'nu': current nu}.",
        aliases=("RobustTLoss", "TLoss", "RobustT"),
        check="scipy.stats.multivariate_t logpdf (tests)",
    )
)
class RobustTLoss(SegLoss):
    """Student-t negative log-likelihood of the residual map with learnable degrees of freedom."""

    name = "robust_t"

    def __init__(self, nu: float = 1.0, epsilon: float = 1e-8, per_pixel: bool = True) -> None:
        super().__init__()
        self.nu = torch.nn.Parameter(torch.tensor(float(nu)))
        self.epsilon, self.per_pixel = float(epsilon), bool(per_pixel)

    def state(self) -> dict[str, Any]:
        return {"nu": float(self.nu.detach())}

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixels = float(target[0].numel())
        log_precision = 1.0
        nu = torch.exp(self.nu.to(device=logits.device, dtype=logits.dtype)) + self.epsilon
        quadratic = math.exp(log_precision) * per_image_sum((torch.sigmoid(logits) - target) ** 2)
        nll = (
            torch.lgamma(nu / 2.0)
            - torch.lgamma((nu + pixels) / 2.0)
            - 0.5 * pixels * log_precision
            + 0.5 * pixels * math.log(math.pi)
            + 0.5 * pixels * torch.log(nu)
            + 0.5 * (nu + pixels) * torch.log1p(quadratic / nu)
        )
        if self.per_pixel:
            nll = nll / pixels
        return nll.mean()


@register(
    LossInfo(
        name="cmss",
        title="Correlation-maximised structural similarity",
        family="region",
        summary="Cross-entropy plus extra weight on pixels whose neighbourhood pattern differs from the true one.",
        reference="Zhao, Wu, Chu, Hu, Cai, 'Correlation maximized structural similarity loss for semantic "
        "segmentation', arXiv:1910.08711 (2019).",
        defaults={"beta": 0.1, "c4": 0.01, "window": 3, "ssl_weight": 1.0},
        bounds={"beta": (0.0, 1.0), "c4": (1e-6, 1.0), "window": (3, 5, 7), "ssl_weight": (0.0, 100.0)},
        notes="Reconstructed (no reference code; window, weight and detaching are not pinned down by the sources "
        "available): classes [1 - p, p] / [1 - y, y]; local mean and standard deviation over a window x window "
        "(x window) neighbourhood (count_include_pad=False); e = |(y - mu_y + C4) / (sigma_y + C4) - (p - mu_p + C4) "
        "/ (sigma_p + C4)| and the hard-pixel mask f = [e > beta max e] (max per image) are detached; "
        "L = BCE + ssl_weight * L_SSL, L_SSL = -(1 / M) sum e f y log p per image, M = sum f.",
        aliases=("CMSSLoss", "StructuralSimilarityLoss", "SSLLoss"),
        check="none: invariants only",
    )
)
class CMSSLoss(SegLoss):
    """BCE plus the structural-similarity loss on hard pixels (reconstructed)."""

    name = "cmss"

    def __init__(self, beta: float = 0.1, c4: float = 0.01, window: int = 3, ssl_weight: float = 1.0) -> None:
        super().__init__()
        self.beta, self.c4, self.window, self.ssl_weight = float(beta), float(c4), int(window), float(ssl_weight)

    def _standardised(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
        mean = pool(x, self.window, stride=1, padding=self.window // 2, count_include_pad=False)
        var = pool(x * x, self.window, stride=1, padding=self.window // 2, count_include_pad=False) - mean**2
        return (x - mean + self.c4) / (var.clamp_min(0.0).sqrt() + self.c4)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = two_class(target)
        with torch.no_grad():
            error = (self._standardised(labels) - self._standardised(two_class(torch.sigmoid(logits)))).abs()
            top = error.flatten(1).max(1).values.view(-1, *([1] * (error.ndim - 1)))
            hard = (error > self.beta * top).to(error.dtype)
        log_prob = torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
        ssl = -per_image_sum(error * hard * labels * log_prob) / per_image_sum(hard).clamp_min(1.0)
        return bce_map(logits, target).mean() + self.ssl_weight * ssl.mean()
