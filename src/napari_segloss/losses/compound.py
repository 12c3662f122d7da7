"""Compound losses: weighted sums of a region term and a pixel term, CALF's selector and the
Dice + contrastive losses (FESS and its SimCLR / InfoNCE baselines).

Every class takes ``logits`` ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` and a binary ``target`` of
the same shape (see :class:`~napari_segloss.losses.base.SegLoss`). Region terms follow the
catalogue conventions: per image, averaged over the batch, smoothing ``1e-5``. The contrastive
losses also take ``features=`` (B, C, *spatial), the decoder output before the segmentation head
(spatial = H/4, W/4 for the project's FPN), and optionally ``features2=`` (same shape): the
features of a second, independently augmented forward pass of the same images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_segloss.losses import _functional as fn
from napari_segloss.losses._registry import LossInfo, build, register
from napari_segloss.losses.base import SegLoss

#: clamp floor: CALF probabilities in [EPS, 1 − EPS], Unified Focal's Tversky miss term >= EPS
EPS = 1e-7
_UNIT = (0.0, 1.0)
_POSITIVE = (0.0, None)


def _dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss per image, (B,): ``1 − (2TP + s)/(2TP + FP + FN + s)``."""
    return 1.0 - fn.dice_index(*fn.soft_counts(prob, target))


# --------------------------------------------------------------------------------------------
# Region + pixel sums
# --------------------------------------------------------------------------------------------


@register(
    LossInfo(
        name="combo",
        title="Combo",
        family="compound",
        summary="Weighted cross-entropy (beta > 0.5 punishes missed tumour more) minus the Dice overlap.",
        reference=(
            "Taghanaki, Zheng, Zhou, Georgescu, Sharma, Xu, Comaniciu, Hamarneh. Combo loss: handling input "
            "and output imbalance in multi-organ segmentation. Comput. Med. Imaging Graph. 75 (2019). arXiv:1805.02798"
        ),
        defaults={"alpha": 0.5, "beta": 0.5},
        bounds={"alpha": _UNIT, "beta": _UNIT},
        notes=(
            "L = alpha*WCE - (1 - alpha)*DSC with WCE = -mean[beta*y*ln p + (1 - beta)*(1 - y)*ln(1 - p)] (the "
            "paper's formula; the official Keras code nests beta into the negative term, giving negatives "
            "beta*(1 - beta)). Negative by design: a perfect prediction scores -(1 - alpha); adding (1 - alpha) gives "
            "the non-negative form with identical gradients. DSC per image, smoothing 1e-5 (paper code: batch, 1)."
        ),
        aliases=("ComboLoss",),
        check="torch binary_cross_entropy_with_logits(weight) + MONAI DiceLoss(sigmoid=True)",
    )
)
class ComboLoss(SegLoss):
    """Combo loss: ``alpha·WCE_beta − (1 − alpha)·DSC`` (scalar, can be negative)."""

    name = "combo"

    def __init__(self, alpha: float = 0.5, beta: float = 0.5) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        wce = -(self.beta * target * F.logsigmoid(logits) + (1.0 - self.beta) * (1.0 - target) * F.logsigmoid(-logits))
        dsc = fn.dice_index(*fn.soft_counts(torch.sigmoid(logits), target))
        return self.alpha * wce.mean() - (1.0 - self.alpha) * dsc.mean()


def _foreground_fraction(masks: Iterable[np.ndarray]) -> tuple[float, int]:
    """Fraction of foreground pixels over all ``masks`` and the number of masks."""
    fg = total = n = 0
    for mask in masks:
        arr = np.asarray(mask)
        fg += int(np.count_nonzero(arr))
        total += arr.size
        n += 1
    if total == 0:
        raise ValueError("fit_dataset: no masks given")
    return fg / total, n


@register(
    LossInfo(
        name="exp_log",
        title="Exponential Logarithmic",
        family="compound",
        summary="Log-Dice and log-cross-entropy raised to a small power: extra push on small, poorly segmented tumours.",
        reference=(
            "Wong, Moradi, Tang, Syeda-Mahmood. 3D segmentation with exponential logarithmic loss for highly "
            "unbalanced object sizes. MICCAI 2018. arXiv:1809.00076"
        ),
        defaults={"w_dice": 0.8, "w_ce": 0.2, "gamma_dice": 0.3, "gamma_ce": 0.3},
        bounds={"w_dice": _POSITIVE, "w_ce": _POSITIVE, "gamma_dice": (0.0, 1.0), "gamma_ce": (0.0, 1.0)},
        needs=frozenset({"dataset_stats"}),
        notes=(
            "L = w_dice*mean_c[(-ln Dice_c)^gamma_dice] + w_ce*mean_i[w_l(i)*(-ln p_l(i))^gamma_ce] over both classes "
            "(background and tumour, as in the paper), Dice per image with smoothing 1e-5 (paper: 1). Dice_c is "
            "clamped to [1e-6, 1 - 1e-6] and the cross-entropy to >= 1e-6, where the power has an infinite slope. "
            "Class weights w_l = f_l^-0.5 from the training-set label frequencies f_l via fit_dataset(masks); "
            "unfitted, both weights are 1. SegLoss' ExpLog_loss omits the CE exponent; this follows the paper."
        ),
        aliases=("ExponentialLogarithmicLoss", "ExpLogLoss"),
        check="reductions: gamma 1 gives -ln of MONAI DiceLoss per class, and torch BCEWithLogitsLoss(weight=w_l)",
    )
)
class ExpLogLoss(SegLoss):
    """Exponential logarithmic loss over the background and tumour classes (scalar)."""

    name = "exp_log"

    def __init__(self, w_dice: float = 0.8, w_ce: float = 0.2, gamma_dice: float = 0.3, gamma_ce: float = 0.3) -> None:
        super().__init__()
        self.w_dice = float(w_dice)
        self.w_ce = float(w_ce)
        self.gamma_dice = float(gamma_dice)
        self.gamma_ce = float(gamma_ce)
        self.foreground_frequency: float | None = None
        self.class_weights: tuple[float, float] = (1.0, 1.0)

    def fit_dataset(self, masks: Iterable[np.ndarray]) -> None:
        """Set the class weights ``f_l^-0.5`` from binary training ``masks`` (any shapes)."""
        frequency, _ = _foreground_fraction(masks)
        if not 0.0 < frequency < 1.0:
            raise ValueError(f"exp_log: the training masks must contain both classes, foreground fraction {frequency}")
        self.foreground_frequency = frequency
        self.class_weights = ((1.0 - frequency) ** -0.5, frequency**-0.5)

    def state(self) -> dict[str, Any]:
        """Fitted foreground frequency (``None`` before :meth:`fit_dataset`) and class weights."""
        return {"foreground_frequency": self.foreground_frequency, "class_weights": list(self.class_weights)}

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(logits)
        tp, fp, fn_ = fn.soft_counts(prob, target)
        tp_bg = fn.per_image_sum((1.0 - prob) * (1.0 - target))
        dice = torch.stack([fn.dice_index(tp_bg, fn_, fp), fn.dice_index(tp, fp, fn_)], dim=1)
        dice_term = (-torch.log(dice.clamp(1e-6, 1.0 - 1e-6))) ** self.gamma_dice
        w_bg, w_fg = self.class_weights
        weight = w_fg * target + w_bg * (1.0 - target)
        ce_term = weight * fn.bce_map(logits, target).clamp_min(1e-6) ** self.gamma_ce
        return self.w_dice * dice_term.mean() + self.w_ce * ce_term.mean()


@register(
    LossInfo(
        name="unified_focal",
        title="Unified Focal (asymmetric)",
        family="compound",
        summary="Focal Tversky plus focal cross-entropy that only quiets easy background: favours finding all tumour.",
        reference=(
            "Yeung, Sala, Schonlieb, Rundo. Unified Focal loss: generalising Dice and cross entropy-based losses "
            "to handle class imbalanced medical image segmentation. Comput. Med. Imaging Graph. 95 (2022) 102026. "
            "arXiv:2102.04525"
        ),
        defaults={"weight": 0.5, "delta": 0.6, "gamma": 0.5},
        bounds={"weight": _UNIT, "delta": _UNIT, "gamma": (0.0, 1.0)},
        notes=(
            "Asymmetric variant (official code defaults delta 0.6, gamma 0.5, weight 0.5). L = weight*L_maFT + "
            "(1 - weight)*L_maF; L_maF = mean_i[-delta*y*ln p - (1 - delta)*(1 - y)*p^gamma*ln(1 - p)] (classes "
            "summed, from logits); L_maFT = mean over images of [(1 - mTI_bg) + (1 - mTI_fg)^(1 - gamma)]/2, "
            "mTI = (TP + s)/(TP + delta*FN + (1 - delta)*FP + s), s = 1e-5 (official: 1e-7, with p clamped). "
            "MONAI's AsymmetricUnifiedFocalLoss expects probabilities (not logits), averages its focal part over "
            "the 2 channels (half the official value) and puts `weight` on the focal part; weight 0.5 hides the last."
        ),
        aliases=("UnifiedFocalLoss", "AsymmetricUnifiedFocalLoss"),
        check="MONAI AsymmetricUnifiedFocalLoss on probabilities, focal part x2, Tversky epsilon 1e-5",
    )
)
class UnifiedFocalLoss(SegLoss):
    """Asymmetric Unified Focal loss (scalar)."""

    name = "unified_focal"

    def __init__(self, weight: float = 0.5, delta: float = 0.6, gamma: float = 0.5) -> None:
        super().__init__()
        self.weight = float(weight)
        self.delta = float(delta)
        self.gamma = float(gamma)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d, g = self.delta, self.gamma
        log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
        focal = -d * target * log_p - (1.0 - d) * (1.0 - target) * torch.exp(g * log_p) * log_q
        prob = torch.sigmoid(logits)
        tp, fp, fn_ = fn.soft_counts(prob, target)
        tp_bg = fn.per_image_sum((1.0 - prob) * (1.0 - target))
        # 1 − mTI written without the cancellation of 1 − ratio; background FN/FP are foreground FP/FN
        miss_fg = (d * fn_ + (1.0 - d) * fp) / (tp + d * fn_ + (1.0 - d) * fp + fn.SMOOTH)
        miss_bg = (d * fp + (1.0 - d) * fn_) / (tp_bg + d * fp + (1.0 - d) * fn_ + fn.SMOOTH)
        tversky = 0.5 * (miss_bg + miss_fg.clamp_min(EPS) ** (1.0 - g))
        return self.weight * tversky.mean() + (1.0 - self.weight) * focal.mean()


@register(
    LossInfo(
        name="dice_focal",
        title="Dice + Focal",
        family="compound",
        summary="Dice overlap plus focal cross-entropy: whole-tumour overlap and hard pixels at the same time.",
        reference=(
            "Zhu, Huang, Tang, Qian, Du, Fan, Xie. AnatomyNet: deep learning for fast and fully automated "
            "whole-volume segmentation of head and neck anatomy. Medical Physics 46(2) (2019). arXiv:1808.05238"
        ),
        defaults={"lambda_dice": 1.0, "lambda_focal": 1.0, "gamma": 2.0, "alpha": None},
        bounds={"lambda_dice": _POSITIVE, "lambda_focal": _POSITIVE, "gamma": (0.0, 5.0)},
        notes=(
            "L = lambda_dice*Dice + lambda_focal*Focal, MONAI DiceFocalLoss defaults (gamma 2, no class weight "
            "alpha; alpha in [0, 1] weights the tumour class if set). Dice per image, smoothing 1e-5; focal mean "
            "over pixels. AnatomyNet's own weighting of the focal term may differ from 1 (not verified)."
        ),
        aliases=("DiceFocalLoss",),
        check="MONAI DiceFocalLoss(sigmoid=True)",
    )
)
class DiceFocalLoss(SegLoss):
    """Dice + Focal (scalar)."""

    name = "dice_focal"

    def __init__(
        self, lambda_dice: float = 1.0, lambda_focal: float = 1.0, gamma: float = 2.0, alpha: float | None = None
    ) -> None:
        super().__init__()
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"dice_focal: alpha must be None or a number in [0, 1], got {alpha!r}")
        self.lambda_dice = float(lambda_dice)
        self.lambda_focal = float(lambda_focal)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = _dice_loss(torch.sigmoid(logits), target).mean()
        focal = fn.focal_map(logits, target, gamma=self.gamma, alpha=self.alpha).mean()
        return self.lambda_dice * dice + self.lambda_focal * focal


@register(
    LossInfo(
        name="dice_topk",
        title="Dice + TopK",
        family="compound",
        summary="Dice overlap plus cross-entropy on only the worst 10% of pixels: focuses on the hardest errors.",
        reference=(
            "Ma, Chen, Ng, Huang, Li, Li, Yang, Martel. Loss odyssey in medical image segmentation. Medical Image "
            "Analysis 71 (2021) 102035. arXiv:2005.13449 (nnU-Net's DC_and_topk_loss)"
        ),
        defaults={"k": 10.0},
        bounds={"k": (0.01, 100.0)},
        notes=(
            "L = Dice + TopK-BCE, 1:1: the catalogue's dice and topk losses. TopK is the mean BCE over the "
            "max(1, int(N*k/100)) pixels with the largest BCE of each image, averaged over the batch (nnU-Net takes "
            "the top k% over the whole batch). Dice per image, smoothing 1e-5."
        ),
        aliases=("DiceTopKLoss", "DC_and_topk_loss"),
        check="MONAI DiceLoss(sigmoid=True) + sorted torch BCEWithLogitsLoss(reduction='none')",
    )
)
class DiceTopKLoss(SegLoss):
    """Dice + TopK cross-entropy (scalar): the catalogue's ``dice`` and ``topk`` losses, summed."""

    name = "dice_topk"

    def __init__(self, k: float = 10.0) -> None:
        super().__init__()
        self.k = float(k)
        self.dice = build("dice")
        self.topk = build("topk", k=k)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice.compute(logits, target) + self.topk.compute(logits, target)


# --------------------------------------------------------------------------------------------
# CALF: a pixel loss chosen by the skewness / kurtosis of the training-set tumour areas
# --------------------------------------------------------------------------------------------

CALF_BRANCHES: tuple[str, ...] = ("fisher", "logit", "arcsine", "log10_ce", "ln_ce", "bce_dice")


def calf_branch(skewness: float, kurtosis: float) -> str:
    """CALF's rule: the branch for dataset skewness ``S`` and excess kurtosis ``K`` of tumour areas."""
    s, k = skewness, kurtosis
    if math.isnan(s):
        return "bce_dice"
    if s <= -1.0:
        return "fisher"
    if s <= -0.5:
        return "logit"
    if s < 0.0:
        return "arcsine"
    if s >= 1.0:
        return "log10_ce"
    if s >= 0.5:
        return "ln_ce"
    if s > 0.0 and not math.isnan(k) and k < 0.0:
        return "log10_ce"
    return "bce_dice"


@register(
    LossInfo(
        name="calf",
        title="CALF (conditionally adaptive)",
        family="compound",
        summary="Picks one of seven pixel losses from the spread of tumour sizes in the training set.",
        reference=(
            "Alam, Cirkovic, Akcay, Shahrier, Lafond, Rexha, Benke, Azimi, Arslan. CALF: a conditionally adaptive "
            "loss function to mitigate class-imbalanced segmentation. arXiv:2504.04458 (2025)"
        ),
        defaults={"branch": "auto"},
        bounds={"branch": ("auto", *CALF_BRANCHES)},
        needs=frozenset({"dataset_stats"}),
        notes=(
            "fit_dataset(masks) computes, once, the population skewness S and excess kurtosis K (scipy skew, "
            "kurtosis) of the per-image foreground pixel counts of the non-empty training masks (the found code "
            "uses cv2 contour areas; tumour-free images have no object and are left out), then: S <= -1 Fisher, "
            "<= -0.5 logit, < 0 arcsine, >= 1 log10-CE (= BCE/ln 10), >= 0.5 BCE, 0 < S <= 0.5 with K < 0 "
            "log10-CE, otherwise (also unfitted or < 3 non-empty masks: S undefined) BCE + Dice loss. Fisher, logit "
            "and arcsine use p clamped to [1e-7, 1 - 1e-7]; the CE branches use logits. branch= forces a branch. "
            "Tumour areas are right-skewed in brain MRI, so CALF is usually BCE/ln 10 (as in the seed study)."
        ),
        aliases=("CALF", "CALFLoss", "AdaptiveDistributionLoss"),
        check="identity: BCE/ln 10 (torch BCEWithLogitsLoss) on right-skewed areas; scipy skew/kurtosis",
    )
)
class CALFLoss(SegLoss):
    """CALF: the branch fixed by :meth:`fit_dataset` (or ``branch=``) applied per pixel (scalar)."""

    name = "calf"

    def __init__(self, branch: str = "auto") -> None:
        super().__init__()
        if branch != "auto" and branch not in CALF_BRANCHES:
            raise ValueError(f"calf: branch must be 'auto' or one of {CALF_BRANCHES}, got {branch!r}")
        self.forced = None if branch == "auto" else branch
        self.skewness = float("nan")
        self.kurtosis = float("nan")
        self.n_images = 0

    @property
    def branch(self) -> str:
        """The branch in use: forced, else chosen from the fitted statistics."""
        return self.forced or calf_branch(self.skewness, self.kurtosis)

    def fit_dataset(self, masks: Iterable[np.ndarray]) -> None:
        """Compute S and K of the foreground pixel counts of the non-empty binary ``masks``."""
        areas = np.array([np.count_nonzero(np.asarray(m)) for m in masks], dtype=np.float64)
        areas = areas[areas > 0]
        self.n_images = int(areas.size)
        if areas.size < 3 or np.ptp(areas) == 0:
            self.skewness = self.kurtosis = float("nan")
        else:
            from scipy import stats  # lazily: scipy.stats takes ~0.3 s to import, on every CLI start

            self.skewness = float(stats.skew(areas))
            self.kurtosis = float(stats.kurtosis(areas))

    def state(self) -> dict[str, Any]:
        """S, K (``None`` when undefined), the number of non-empty masks and the branch in use."""
        defined = not math.isnan(self.skewness)
        return {
            "skewness": self.skewness if defined else None,
            "kurtosis": self.kurtosis if defined else None,
            "n_images": self.n_images,
            "branch": self.branch,
        }

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        branch = self.branch
        if branch == "log10_ce":
            return fn.bce_map(logits, target).mean() / math.log(10.0)
        if branch == "ln_ce":
            return fn.bce_map(logits, target).mean()
        if branch == "bce_dice":
            return fn.bce_map(logits, target).mean() + _dice_loss(torch.sigmoid(logits), target).mean()
        prob = torch.sigmoid(logits).clamp(EPS, 1.0 - EPS)
        if branch == "fisher":
            value = target * torch.atanh(prob) + (1.0 - target) * torch.atanh(1.0 - prob)
        elif branch == "logit":
            value = target * torch.logit(prob) + (1.0 - target) * torch.logit(1.0 - prob)
        else:  # arcsine
            value = target * torch.asin(prob.sqrt()) + (1.0 - target) * torch.asin((1.0 - prob).sqrt())
        return -value.mean()


# --------------------------------------------------------------------------------------------
# Dice + contrastive: FESS, SimCLR (NT-Xent), InfoNCE
# --------------------------------------------------------------------------------------------


def _check_features(name: str, logits: torch.Tensor, features: Any, key: str) -> torch.Tensor:
    """Validate a ``(B, C, *spatial)`` feature tensor against ``logits``; return it in logits' dtype."""
    if not isinstance(features, torch.Tensor) or not torch.is_floating_point(features):
        raise ValueError(f"{name}: {key} must be a floating-point tensor (B, C, *spatial)")
    if features.ndim != logits.ndim or features.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{name}: {key} must have shape (B, C, *spatial) with B = {logits.shape[0]} and "
            f"{logits.ndim - 2} spatial axes, got {tuple(features.shape)}"
        )
    if not torch.isfinite(features).all():
        raise ValueError(f"{name}: {key} contains NaN or Inf")
    return features.to(logits.dtype)


def _crop_views(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping crops of (B, C, *spatial): each axis keeps 3/4, the second offset by 1/4."""
    first, second = features, features
    for axis in range(2, features.ndim):
        size = features.shape[axis]
        shift = size // 4
        first = first.narrow(axis, 0, size - shift)
        second = second.narrow(axis, shift, size - shift)
    return first, second


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) of paired embeddings ``a``, ``b`` (B, F): mean over the 2B anchors.

    Cosine similarity / temperature; each anchor's positive is its pair, its negatives the other
    2B − 2 embeddings. With B = 1 there is no negative and the loss is 0.
    """
    batch = a.shape[0]
    z = F.normalize(torch.cat([a, b], dim=0), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
    pairs = torch.arange(2 * batch, device=z.device).roll(batch)
    return F.cross_entropy(sim, pairs)


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE (CPC) of queries and keys (B, F): cross-entropy of each query over all B keys.

    Cosine similarity / temperature; the positive is the key of the same image, included in the
    denominator; one direction only (queries -> keys). Mean over the B queries.
    """
    logits = F.normalize(query, dim=1) @ F.normalize(key, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(query.shape[0], device=query.device))


_CONTRASTIVE_DEFAULTS = {"dice_weight": 0.5, "temperature": 0.5}
_CONTRASTIVE_BOUNDS = {"dice_weight": _UNIT, "temperature": (1e-3, 10.0)}


class _DiceContrastive(SegLoss):
    """``dice_weight·Dice + (1 − dice_weight)·contrastive(features)``; subclasses define the views."""

    uses = frozenset({"features", "features2"})
    required_extras = ("features",)

    def __init__(self, dice_weight: float = 0.5, temperature: float = 0.5) -> None:
        super().__init__()
        self.dice_weight = float(dice_weight)
        self.temperature = float(temperature)

    def contrastive(self, features: torch.Tensor, features2: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def compute(
        self, logits: torch.Tensor, target: torch.Tensor, *, features: torch.Tensor,
        features2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        features = _check_features(self.name, logits, features, "features")
        if features2 is not None:
            features2 = _check_features(self.name, logits, features2, "features2")
            if features2.shape != features.shape:
                raise ValueError(f"{self.name}: features2 {tuple(features2.shape)} != features {tuple(features.shape)}")
        dice = _dice_loss(torch.sigmoid(logits), target).mean()
        return self.dice_weight * dice + (1.0 - self.dice_weight) * self.contrastive(features, features2)


_FEATURES_NOTE = (
    "Needs features= (B, C, *spatial), the FPN decoder output before the segmentation head; optional "
    "features2= the same images' features from a second, independently augmented pass. Dice per image, "
    "smoothing 1e-5 (the same Dice as the dice loss, so the comparison isolates the contrastive term). "
)


@register(
    LossInfo(
        name="fess",
        title="FESS (Dice + spatial contrastive)",
        family="compound",
        summary="Dice overlap plus a term that keeps each scan's feature map distinct from the other scans'.",
        reference=(
            "Chodvadiya, Mahla, Singh, Jadhav. FESS loss: feature-enhanced spatial segmentation loss for "
            "optimizing medical image analysis. arXiv:2402.08582 (2024)"
        ),
        defaults=dict(_CONTRASTIVE_DEFAULTS),
        bounds=dict(_CONTRASTIVE_BOUNDS),
        needs=frozenset({"features"}),
        notes=_FEATURES_NOTE
        + (
            "L = 0.5*Dice + 0.5*NT-Xent(tau 0.5) of the flattened, L2-normalised spatial feature maps (the official "
            "code's embedding). As in the official code, the 'previous' view is detached: features2.detach(), or, "
            "without features2, features.detach() (the official two passes coincide in inference mode). The official "
            "code scales the contrastive term by 1e-4 and sums only positive pairs in its denominator, which makes "
            "it inert; this uses the paper's NT-Xent with negatives and no 1e-4 factor. Dice: official code global."
        ),
        aliases=("FESSLoss", "FeSSLoss"),
        check="MONAI ContrastiveLoss for the NT-Xent term (values; gradient through one view only)",
    )
)
class FESSLoss(_DiceContrastive):
    """FESS: Dice + NT-Xent of spatial feature maps, previous view detached (scalar)."""

    name = "fess"

    def contrastive(self, features: torch.Tensor, features2: torch.Tensor | None) -> torch.Tensor:
        previous = (features if features2 is None else features2).detach()
        return nt_xent(features.flatten(1), previous.flatten(1), self.temperature)


@register(
    LossInfo(
        name="dice_simclr",
        title="Dice + SimCLR (NT-Xent)",
        family="compound",
        summary="Dice overlap plus a SimCLR term: two views of a scan agree, different scans stay apart.",
        reference=(
            "Chen, Kornblith, Norouzi, Hinton. A simple framework for contrastive learning of visual "
            "representations (SimCLR). ICML 2020. arXiv:2002.05709; FESS baseline, arXiv:2402.08582"
        ),
        defaults=dict(_CONTRASTIVE_DEFAULTS),
        bounds=dict(_CONTRASTIVE_BOUNDS),
        needs=frozenset({"features"}),
        notes=_FEATURES_NOTE
        + (
            "L = 0.5*Dice + 0.5*NT-Xent(tau 0.5) of globally average-pooled features of two views: features and "
            "features2, or, without features2, two overlapping crops of features (3/4 of each axis, offset by 1/4: "
            "SimCLR's crop augmentation in feature space). No projection head (the FPN has none). Batch size 1 "
            "has no negatives: the contrastive term is 0."
        ),
        aliases=("DiceSimCLRLoss", "SimCLRLoss"),
        check="MONAI ContrastiveLoss(temperature=0.5) on the pooled views + MONAI DiceLoss(sigmoid=True)",
    )
)
class DiceSimCLRLoss(_DiceContrastive):
    """Dice + NT-Xent of pooled feature views (scalar)."""

    name = "dice_simclr"

    def contrastive(self, features: torch.Tensor, features2: torch.Tensor | None) -> torch.Tensor:
        first, second = _crop_views(features) if features2 is None else (features, features2)
        return nt_xent(first.flatten(2).mean(2), second.flatten(2).mean(2), self.temperature)


@register(
    LossInfo(
        name="dice_infonce",
        title="Dice + InfoNCE",
        family="compound",
        summary="Dice overlap plus an InfoNCE term: each scan's view must pick out its own partner view.",
        reference=(
            "van den Oord, Li, Vinyals. Representation learning with contrastive predictive coding (InfoNCE). "
            "arXiv:1807.03748 (2018); FESS baseline, arXiv:2402.08582"
        ),
        defaults=dict(_CONTRASTIVE_DEFAULTS),
        bounds=dict(_CONTRASTIVE_BOUNDS),
        needs=frozenset({"features"}),
        notes=_FEATURES_NOTE
        + (
            "L = 0.5*Dice + 0.5*InfoNCE: cross-entropy of each query (pooled first view) over the B keys (pooled "
            "second view), cosine similarity / tau, tau 0.5 as in the FESS protocol (CPC's bilinear critic and the "
            "FESS baselines' tau are not specified), one direction. Views as dice_simclr. Batch size 1: term 0."
        ),
        aliases=("DiceInfoNCELoss", "InfoNCELoss"),
        check="hand-written per-query formula in the tests (no kept library implements InfoNCE)",
    )
)
class DiceInfoNCELoss(_DiceContrastive):
    """Dice + InfoNCE of pooled feature views (scalar)."""

    name = "dice_infonce"

    def contrastive(self, features: torch.Tensor, features2: torch.Tensor | None) -> torch.Tensor:
        first, second = _crop_views(features) if features2 is None else (features, features2)
        return info_nce(first.flatten(2).mean(2), second.flatten(2).mean(2), self.temperature)
