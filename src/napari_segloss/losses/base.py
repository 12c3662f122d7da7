"""Base class shared by every loss: input validation, the extras contract, float32 computation, hooks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

#: The optional keyword inputs of ``loss(logits, target, **extras)``, the same for every loss of
#: the catalogue: any caller may pass any of them to any loss, and a loss that does not use one
#: (not in its :attr:`SegLoss.uses`) ignores it, so callers never inspect signatures. Any other
#: keyword raises ``ValueError`` naming these. ``None`` counts as not given.
EXTRAS: Mapping[str, str] = MappingProxyType({
    "target_dist": "signed Euclidean distance map of the target, (B, 1, *spatial): + outside, - inside, "
    "zero for an empty or full mask, in mm when computed with spacing "
    "(napari_segloss.losses.signed_distance); computed from the target when absent",
    "spacing": "pixel size in mm per spatial axis, a sequence of 2 or 3 floats (default: pixel units)",
    "features": "decoder features before the segmentation head, (B, C, *spatial / 4)",
    "features2": "features of a second, independently augmented pass of the same images (features' shape)",
})


class SegLoss(torch.nn.Module):
    """A binary segmentation loss on one foreground logit per pixel.

    Call: ``loss(logits, target, **extras) -> scalar tensor`` with ``logits`` float
    ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` and ``target`` of the same shape, values in {0, 1};
    ``extras`` are keywords of :data:`EXTRAS`. Subclasses implement :meth:`compute`, which
    receives float32 (or float64) logits and targets and, as keyword arguments, only the given
    extras named in :attr:`uses`.

    Hooks (no-ops unless a loss needs them), called by the training pipeline:
      * ``on_epoch(epoch, total_epochs)`` for scheduled losses (boundary-loss weight, ...);
      * ``fit_dataset(masks)`` for losses with dataset statistics (CALF, class weights);
      * ``state()`` returns JSON-serialisable state to record in the model card.
    """

    #: canonical name, set by the registry decorator's class
    name: str = ""
    #: the keywords of :data:`EXTRAS` this loss uses (its ``compute`` names exactly these)
    uses: frozenset[str] = frozenset()
    #: those of :attr:`uses` it cannot do without (missing ones raise ``ValueError``)
    required_extras: tuple[str, ...] = ()
    #: spatial dims supported
    supported_dims: tuple[int, ...] = (2, 3)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **extras: Any) -> torch.Tensor:
        label = self.name or type(self).__name__
        unknown = sorted(set(extras) - set(EXTRAS))
        if unknown:
            raise ValueError(f"{label}: unknown input(s) {unknown}; a loss takes only {sorted(EXTRAS)}")
        logits, target = self.validate(logits, target)
        missing = [k for k in self.required_extras if extras.get(k) is None]
        if missing:
            raise ValueError(f"{label}: missing required input(s) {missing}")
        used = {k: v for k, v in extras.items() if k in self.uses and v is not None}
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits, target, **used)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, **extras: Any) -> torch.Tensor:
        """The loss value (scalar) of validated ``logits`` and ``target``; ``extras`` from :attr:`uses`."""
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
