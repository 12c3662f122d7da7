"""Shared tensor primitives of the loss catalogue (no state, no registry).

Shapes: ``logits``/``prob``/``target`` are ``(B, 1, H, W)`` or ``(B, 1, D, H, W)``; "per image"
results are ``(B,)`` tensors (sums over the channel and spatial axes of each batch element).
Targets are in {0, 1} unless a function says it accepts soft targets. Every log-probability is
computed from logits with ``logsigmoid`` (never ``log`` of a clamped probability).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: smoothing added to numerator and denominator of every overlap index (catalogue convention)
SMOOTH = 1e-5


def reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Axes summed "per image": channel and spatial axes, i.e. all but the batch axis."""
    return tuple(range(1, x.ndim))


def per_image_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` (B, C, *spatial) over everything but the batch axis -> (B,)."""
    return x.sum(dim=reduce_dims(x))


def per_image_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, C, *spatial) over everything but the batch axis -> (B,)."""
    return x.mean(dim=reduce_dims(x))


def soft_counts(prob: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft confusion counts per image.

    Args:
        prob: foreground probabilities in [0, 1], (B, 1, *spatial).
        target: same shape, values in [0, 1] (soft targets allowed).

    Returns:
        ``(tp, fp, fn)``, each (B,): ``Σ p·y``, ``Σ p·(1 − y)``, ``Σ (1 − p)·y``.
    """
    tp = per_image_sum(prob * target)
    fp = per_image_sum(prob) - tp
    fn = per_image_sum(target) - tp
    return tp, fp, fn


def dice_index(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """Soft Dice coefficient ``(2TP + s) / (2TP + FP + FN + s)`` (same shape as the counts)."""
    return (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)


def jaccard_index(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """Soft Jaccard / IoU ``(TP + s) / (TP + FP + FN + s)`` (same shape as the counts)."""
    return (tp + smooth) / (tp + fp + fn + smooth)


def tversky_index(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    w_fp: float,
    w_fn: float,
    smooth: float = SMOOTH,
) -> torch.Tensor:
    """Tversky index ``(TP + s) / (TP + w_fp·FP + w_fn·FN + s)``; ``w_fp = w_fn = 0.5`` is Dice."""
    return (tp + smooth) / (tp + w_fp * fp + w_fn * fn + smooth)


def bce_map(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy from logits (nats), same shape as the inputs.

    ``−[y·log σ(z) + (1 − y)·log σ(−z)]``; accepts soft targets in [0, 1].
    """
    return -(target * F.logsigmoid(logits) + (1.0 - target) * F.logsigmoid(-logits))


def signed_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``z·(2y − 1)``: the logit of the true class, so ``σ`` of it is ``p_t`` (binary targets)."""
    return logits * (2.0 * target - 1.0)


def focal_map(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = 0.25) -> torch.Tensor:
    """Per-pixel focal loss (Lin et al. 2017) from logits, same shape as the inputs.

    ``α_t (1 − p_t)^γ · CE`` with ``p_t = p`` where ``y = 1`` else ``1 − p``, ``α_t = α`` where
    ``y = 1`` else ``1 − α`` (``alpha=None``: no class weight). ``(1 − p_t)^γ`` is computed as
    ``exp(γ·log σ(−z_t))`` so value and gradient stay finite for any logit and any ``γ ≥ 0``.
    Binary targets only.
    """
    z_t = signed_logits(logits, target)
    loss = -F.logsigmoid(z_t)
    if gamma != 0:
        loss = torch.exp(gamma * F.logsigmoid(-z_t)) * loss
    if alpha is not None:
        loss = (alpha * target + (1.0 - alpha) * (1.0 - target)) * loss
    return loss


def two_class(prob: torch.Tensor) -> torch.Tensor:
    """Stack background and foreground: (B, 1, *spatial) -> (B, 2, *spatial) = ``[1 − p, p]``."""
    return torch.cat([1.0 - prob, prob], dim=1)
