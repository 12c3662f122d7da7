"""Base class shared by every loss: input validation, float32 computation, hooks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


class SegLoss(torch.nn.Module):
    """A binary segmentation loss on one foreground logit per pixel.

    Call: ``loss(logits, target, **extras) -> scalar tensor`` with ``logits`` float
    ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` and ``target`` of the same shape, values in {0, 1}.
    Subclasses implement :meth:`compute` and receive float32 logits and float32 targets.

    Hooks (no-ops unless a loss needs them), called by the training pipeline:
      * ``on_epoch(epoch, total_epochs)`` for scheduled losses (boundary-loss weight, ...);
      * ``fit_dataset(masks)`` for losses with dataset statistics (CALF, class weights);
      * ``state()`` returns JSON-serialisable state to record in the model card.
    """

    #: canonical name, set by the registry decorator's class
    name: str = ""
    #: extra keyword arguments this loss requires (beyond optional precomputed maps)
    required_extras: tuple[str, ...] = ()
    #: spatial dims supported
    supported_dims: tuple[int, ...] = (2, 3)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **extras: Any) -> torch.Tensor:
        logits, target = self.validate(logits, target)
        missing = [k for k in self.required_extras if extras.get(k) is None]
        if missing:
            raise ValueError(f"{self.name or type(self).__name__}: missing required input(s) {missing}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits, target, **extras)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, **extras: Any) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Check shapes and values; return float32 (or float64) logits and target."""
        label = self.name or type(self).__name__
        if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise ValueError(f"{label}: logits and target must be torch tensors")
        if logits.ndim not in (4, 5) or logits.shape[1] != 1:
            raise ValueError(
                f"{label}: logits must have shape (B, 1, H, W) or (B, 1, D, H, W), got {tuple(logits.shape)}"
            )
        spatial = logits.ndim - 2
        if spatial not in self.supported_dims:
            raise ValueError(f"{label}: supports {self.supported_dims}-D inputs only, got {spatial}-D")
        if target.shape != logits.shape:
            raise ValueError(f"{label}: target shape {tuple(target.shape)} != logits shape {tuple(logits.shape)}")
        if not torch.is_floating_point(logits):
            raise ValueError(f"{label}: logits must be floating point, got {logits.dtype}")
        if not torch.isfinite(logits).all():
            raise ValueError(f"{label}: logits contain NaN or Inf")
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        target = target.to(dtype)
        if not bool(((target == 0) | (target == 1)).all()):
            raise ValueError(f"{label}: target values must be 0 or 1")
        return logits.to(dtype), target

    def on_epoch(self, epoch: int, total_epochs: int) -> None:  # noqa: D102 - documented above
        return None

    def fit_dataset(self, masks: Iterable[np.ndarray]) -> None:  # noqa: D102
        return None

    def state(self) -> dict[str, Any]:  # noqa: D102
        return {}
