"""One interface that gives every loss the extra inputs it asks for.

The training loop never names a loss. It asks an :class:`Extras` object, built from the loss
and ``info(name).needs``, for:

* ``fit(masks)`` once before training: ``loss.fit_dataset(masks)`` (dataset statistics, CALF,
  class weights; a no-op for the others);
* ``start_epoch(epoch, total)`` before every epoch: ``loss.on_epoch`` (schedules);
* ``sample_maps(mask, spacing)`` in the data loader, after augmentation: the target-only maps
  the loss accepts as keyword arguments (:data:`PRECOMPUTED`), so no distance transform of the
  target runs inside the training step;
* ``forward(net, x)``: logits and, when ``"features"`` is needed, the decoder features from
  :func:`napari_segloss.models.forward_with_features` (the net passed in returns both);
* ``call_kwargs(...)``: the keyword arguments of ``loss(logits, target, **kwargs)`` for one batch:
  precomputed maps, ``features``, ``head_weight``, ``spacing``, ``epoch`` -- each only if the
  loss accepts it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from napari_segloss.losses.pixel import signed_distance_map


#: target-only maps the data loader computes, keyed by the loss keyword argument that takes them;
#: each builder maps ``(mask (H, W) bool, spacing (mm per axis))`` to a float32 ``(H, W)`` array
#: (``target_dist``: signed distance in mm, negative inside -- the catalogue's convention).
PRECOMPUTED: dict[str, Callable[[np.ndarray, Sequence[float]], np.ndarray]] = {
    "target_dist": signed_distance_map,
}

_RESERVED = {"self", "logits", "target"}


def accepted_kwargs(loss: torch.nn.Module) -> frozenset[str]:
    """Keyword arguments ``loss.compute`` (or ``forward``) names explicitly, beyond logits/target."""
    fn = getattr(loss, "compute", None) or loss.forward
    params = inspect.signature(fn).parameters.values()
    return frozenset(p.name for p in params
                     if p.name not in _RESERVED and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def head_weight(model: torch.nn.Module) -> torch.Tensor:
    """The weight of the model's 1x1 segmentation-head convolution, ``(1, C, 1, 1)``."""
    head = model.segmentation_head
    conv = next(m for m in head.modules() if isinstance(m, torch.nn.Conv2d))
    return conv.weight


class Extras:
    """The extra inputs of one loss (see the module docstring).

    Args:
        loss: the built loss (a :class:`napari_segloss.losses.SegLoss`).
        needs: ``info(name).needs``.
    """

    def __init__(self, loss: torch.nn.Module, needs: Iterable[str]) -> None:
        self.loss = loss
        self.needs = frozenset(needs)
        self.accepts = accepted_kwargs(loss)
        self.maps = tuple(k for k in PRECOMPUTED if k in self.accepts)
        self.features = "features" in self.needs or "features" in self.accepts

    def describe(self) -> dict[str, Any]:
        """What this loss receives, for the model card."""
        return {"needs": sorted(self.needs), "precomputed_maps": list(self.maps),
                "kwargs": sorted(self.accepts)}

    def fit(self, masks: Sequence[np.ndarray]) -> None:
        """Give the loss the training masks (bool ``(H, W)`` each) for dataset statistics."""
        self.loss.fit_dataset(masks)

    def start_epoch(self, epoch: int, total_epochs: int) -> None:
        """Advance the loss's schedule to ``epoch`` (0-based) of ``total_epochs``."""
        self.loss.on_epoch(epoch, total_epochs)

    def sample_maps(self, mask: np.ndarray, spacing: Sequence[float]) -> dict[str, np.ndarray]:
        """Target-only maps for one augmented ``(H, W)`` mask (data-loader side)."""
        return {k: PRECOMPUTED[k](mask, spacing) for k in self.maps}

    def forward(self, net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run ``net`` (which returns ``(logits, features)``) on ``x`` ``(B, 1, H, W)``.

        Returns logits ``(B, 1, H, W)`` and features ``(B, C, H/4, W/4)`` or ``None`` when the
        loss does not use them.
        """
        logits, features = net(x)
        return logits, (features if self.features else None)

    def call_kwargs(
        self,
        *,
        maps: Mapping[str, torch.Tensor],
        features: torch.Tensor | None,
        model: torch.nn.Module,
        spacing: Sequence[float],
        epoch: int,
    ) -> dict[str, Any]:
        """Keyword arguments for ``loss(logits, target, **kwargs)`` on one batch.

        Args:
            maps: batched precomputed maps ``(B, 1, H, W)`` from :meth:`sample_maps`.
            features: from :meth:`forward`.
            model: the bare segmentation model (its head weight is read when accepted).
            spacing: pixel spacing of the batch in mm.
            epoch: current epoch (0-based).
        """
        kwargs: dict[str, Any] = dict(maps)
        if features is not None:
            kwargs["features"] = features
        optional = {"head_weight": lambda: head_weight(model), "spacing": lambda: tuple(spacing),
                    "epoch": lambda: epoch}
        for key, make in optional.items():
            if key in self.accepts:
                kwargs[key] = make()
        return kwargs
