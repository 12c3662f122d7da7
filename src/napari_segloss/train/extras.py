"""One interface that gives every loss the extra inputs it asks for.

The training loop never names a loss. It asks an :class:`Extras` object, built from the loss
and ``info(name).needs``, for:

* ``fit(masks)`` once before training: ``loss.fit_dataset(masks)`` (dataset statistics, CALF,
  class weights; a no-op for the others);
* ``start_epoch(epoch, total)`` before every epoch: ``loss.on_epoch`` (schedules);
* ``sample_maps(mask, spacing)`` in the data loader, after augmentation: the target-only maps
  (:data:`PRECOMPUTED`) among the loss's ``uses``, so no distance transform of the target runs
  inside the training step;
* ``forward(net, x)``: logits and, when the loss uses ``"features"``, the decoder features from
  :func:`napari_segloss.models.forward_with_features` (the net passed in returns both);
* ``call_kwargs(...)``: the keyword arguments of ``loss(logits, target, **kwargs)`` for one batch.
  They follow the catalogue's one extras contract (:data:`napari_segloss.losses.EXTRAS`): every
  loss takes the same keywords and ignores those it does not use, so nothing here inspects a
  signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from napari_segloss.losses import SegLoss, signed_distance

#: target-only maps the data loader computes, keyed by the loss keyword argument that takes them;
#: each builder maps ``(mask (H, W) bool, spacing (mm per axis))`` to an ``(H, W)`` array
#: (``target_dist``: signed distance in mm, negative inside -- the catalogue's convention).
PRECOMPUTED: dict[str, Callable[[np.ndarray, Sequence[float]], np.ndarray]] = {
    "target_dist": signed_distance,
}


class Extras:
    """The extra inputs of one loss (see the module docstring).

    Args:
        loss: the built loss.
        needs: ``info(name).needs`` (recorded in the card by :meth:`describe`).
    """

    def __init__(self, loss: SegLoss, needs: Iterable[str]) -> None:
        self.loss = loss
        self.needs = frozenset(needs)
        self.maps = tuple(k for k in PRECOMPUTED if k in loss.uses)
        self.features = "features" in loss.uses

    def describe(self) -> dict[str, Any]:
        """What this loss receives, for the model card."""
        return {"needs": sorted(self.needs), "precomputed_maps": list(self.maps), "kwargs": sorted(self.loss.uses)}

    def fit(self, masks: Sequence[np.ndarray]) -> None:
        """Give the loss the training masks (bool ``(H, W)`` each) for dataset statistics."""
        self.loss.fit_dataset(masks)

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        """Advance the loss's schedule to ``epoch`` (0-based) of ``total_epochs``."""
        self.loss.on_epoch(epoch, total_epochs)

    def sample_maps(self, mask: np.ndarray, spacing: Sequence[float]) -> dict[str, np.ndarray]:
        """Target-only float32 ``(H, W)`` maps for one augmented ``(H, W)`` mask (data-loader side)."""
        return {k: PRECOMPUTED[k](mask, spacing).astype(np.float32) for k in self.maps}

    def forward(self, net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run ``net`` (which returns ``(logits, features)``) on ``x`` ``(B, 1, H, W)``.

        Returns logits ``(B, 1, H, W)`` and features ``(B, C, H/4, W/4)`` or ``None`` when the
        loss does not use them.
        """
        logits, features = net(x)
        return logits, (features if self.features else None)

    @staticmethod
    def call_kwargs(
        *, maps: Mapping[str, torch.Tensor], features: torch.Tensor | None, spacing: Sequence[float]
    ) -> dict[str, Any]:
        """Keyword arguments for ``loss(logits, target, **kwargs)`` on one batch.

        Args:
            maps: batched precomputed maps ``(B, 1, H, W)`` from :meth:`sample_maps`.
            features: from :meth:`forward` (``None``: not used).
            spacing: pixel spacing of the batch in mm (one value per spatial axis).
        """
        return {**maps, "features": features, "spacing": tuple(float(s) for s in spacing)}
