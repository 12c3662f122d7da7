"""Shared plumbing of the interpretability tools: build a loss, give it its extras, run it on one image.

Every tool here evaluates a catalogue loss on a single 2-D image ``(1, 1, H, W)`` in float64 (so
gradients of confident pixels do not underflow) and passes it exactly the keyword arguments the
training pipeline would (:mod:`napari_segloss.train.extras`): precomputed target maps, ``spacing``
(mm) and decoder ``features`` for the losses that use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from napari_segloss.losses import build, resolve
from napari_segloss.train.extras import PRECOMPUTED

#: probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] before they become logits (a float32
#: sigmoid already saturates to exactly 1 for logits above about 17)
PROB_EPS = 1e-6
#: channels of the fixed stand-in decoder features (see :func:`fixed_features`)
FEATURE_CHANNELS = 8


def make_loss(name: str, hparams: Mapping[str, Any] | None = None, *, epoch: int | None = None,
              total_epochs: int | None = None) -> tuple[str, torch.nn.Module]:
    """``(canonical name, loss)`` built with ``hparams``, its schedule moved to ``epoch`` (0-based)."""
    canonical = resolve(name)
    loss = build(canonical, **dict(hparams or {}))
    if epoch is not None:
        loss.on_epoch(int(epoch), int(total_epochs if total_epochs is not None else epoch + 1))
    return canonical, loss


def to_logits(values: np.ndarray, kind: str = "auto") -> np.ndarray:
    """float64 logits from logits or foreground probabilities.

    ``kind``: ``"logits"``, ``"probability"`` (clipped to ``[PROB_EPS, 1 - PROB_EPS]``, then
    ``log(p / (1 - p))``) or ``"auto"``: probability when every value lies in [0, 1].
    """
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("the prediction contains NaN or Inf")
    if kind == "auto":
        kind = "probability" if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0 else "logits"
    if kind == "logits":
        return arr
    if kind != "probability":
        raise ValueError(f"kind must be 'auto', 'logits' or 'probability', got {kind!r}")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1]")
    p = np.clip(arr, PROB_EPS, 1.0 - PROB_EPS)
    return np.log(p) - np.log1p(-p)


def fixed_features(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Stand-in decoder features ``(1, FEATURE_CHANNELS, ceil(H/4), ceil(W/4))`` float64.

    Seeded Gaussian noise: the contrastive terms of feature losses then take a fixed value, so
    only their terms acting on the logits respond when the prediction changes.
    """
    h, w = (int(np.ceil(s / 4)) for s in shape)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, FEATURE_CHANNELS, h, w, generator=gen, dtype=torch.float64)


def loss_kwargs(name: str, loss: torch.nn.Module, target: np.ndarray, *, spacing: Sequence[float],
                features: torch.Tensor | None = None) -> dict[str, Any]:
    """Keyword arguments of ``loss(logits, target, **kwargs)`` for one ``(H, W)`` bool ``target``.

    Raises ``ValueError`` when the loss needs decoder features and none are given.
    """
    kwargs: dict[str, Any] = {
        key: torch.from_numpy(np.asarray(make(target, spacing), dtype=np.float64))[None, None]
        for key, make in PRECOMPUTED.items() if key in loss.uses
    }
    kwargs["spacing"] = tuple(float(s) for s in spacing)
    if "features" in loss.uses:
        if features is None:
            raise ValueError(f"{name} needs the network's decoder features: run it from a checkpoint "
                             "(checkpoint_loss_map) or pass features=")
        kwargs["features"] = torch.as_tensor(features).detach().to(torch.float64)
    return kwargs


def value_and_grad(loss: torch.nn.Module, logits: np.ndarray, target: np.ndarray,
                   kwargs: Mapping[str, Any]) -> tuple[float, np.ndarray]:
    """Loss value and ``dL/dz`` (float64 ``(H, W)``) of one image by autograd."""
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float64))[None, None].requires_grad_(True)
    y = torch.from_numpy(np.asarray(target, dtype=np.float64))[None, None]
    value = loss(z, y, **kwargs)
    (grad,) = torch.autograd.grad(value, z, allow_unused=True)
    grad_np = np.zeros_like(logits, dtype=np.float64) if grad is None else grad[0, 0].numpy()
    return float(value.detach()), grad_np
