"""Loss landscapes around a checkpoint (Li et al., "Visualizing the Loss Landscape of Neural
Nets", NeurIPS 2018), headless.

A direction ``d`` is a random Gaussian tensor per parameter, **filter-normalised**
(:func:`random_direction`): for every weight with two or more dimensions (conv kernels ``(out,
in, kh, kw)``, linear ``(out, in)``), each filter ``d[i]`` is rescaled to the norm of the weight's
own filter ``theta[i]``, so a step of 1 changes every filter by its own size whatever its scale;
biases and normalisation parameters (every parameter with one dimension) are zero in ``d`` (the
paper's "ignore biasbn"). Batch-norm layers stay in eval mode with their running statistics.

:func:`loss_landscape` evaluates chosen losses at ``theta + a d1`` (1-D) or ``theta + a d1 + b d2``
(2-D) on a fixed batch of slices, on a ``steps``-point grid ``a, b in [-span, span]``, with a
progress callback and a cooperative cancel; the same seed gives the same directions, hence the
same surface. :func:`checkpoint_landscape` does it for a registry checkpoint: its own loss (its
card's hyper-parameters, the end of its schedule) and any catalogue losses for comparison.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_segloss.inference import Segmenter

#: the name under which :func:`checkpoint_landscape` reports the checkpoint's own loss
OWN = "own"
ProgressCallback = Callable[[int, int], None]


class LandscapeCancelled(Exception):
    """Raised by :func:`loss_landscape` when ``cancel()`` returned True between grid points."""


@dataclass(frozen=True)
class Landscape:
    """Loss values around a checkpoint.

    Attributes:
        alphas: ``(steps,)`` coordinates along the first direction (units of filter norms).
        betas: ``(steps,)`` coordinates along the second direction, or None for a 1-D curve.
        values: loss name -> ``(steps,)`` (1-D) or ``(steps, steps)`` (2-D, ``values[j, i]`` at
            ``(alphas[i], betas[j])``) float64 values.
        origin: loss name -> value at the checkpoint itself.
        seed: seed of the directions.
        n_slices: slices in the fixed batch.
    """

    alphas: np.ndarray
    betas: np.ndarray | None
    values: dict[str, np.ndarray]
    origin: dict[str, float]
    seed: int
    n_slices: int


def random_direction(model: torch.nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """One filter-normalised random direction, a tensor per ``model.parameters()`` (same order and shapes)."""
    out = []
    for param in model.parameters():
        theta = param.detach()
        if theta.dim() <= 1:
            out.append(torch.zeros_like(theta))
            continue
        d = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
        dims = tuple(range(1, theta.dim()))
        norm = torch.linalg.vector_norm
        scale = norm(theta, dim=dims, keepdim=True) / (norm(d, dim=dims, keepdim=True) + 1e-10)
        out.append(d * scale)
    return out


def _grid(steps: int, span: float) -> np.ndarray:
    if isinstance(steps, bool) or int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    if not span > 0:
        raise ValueError(f"span must be > 0, got {span!r}")
    return np.linspace(-span, span, int(steps))


def _batch(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and target ``(B, 1, H, W)`` float32 tensors of a ``(B, H, W)`` or ``(H, W)`` batch."""
    x, y = np.asarray(images, dtype=np.float32), np.asarray(masks)
    if x.ndim == 2:
        x, y = x[None], y[None]
    if x.ndim != 3 or x.shape != y.shape or not x.size:
        raise ValueError(f"the batch needs images and masks of one shape (B, H, W) or (H, W), got "
                         f"{np.shape(images)} and {np.shape(masks)}")
    if not np.isfinite(x).all():
        raise ValueError("the batch images contain NaN or Inf")
    return torch.from_numpy(np.ascontiguousarray(x))[:, None], torch.from_numpy((y != 0).astype(np.float32))[:, None]


def loss_landscape(
    model: torch.nn.Module,
    images: np.ndarray,
    masks: np.ndarray,
    losses: Mapping[str, torch.nn.Module],
    *,
    dims: int = 1,
    steps: int = 21,
    span: float = 1.0,
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0),
    maps: Mapping[str, torch.Tensor] | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Landscape:
    """Values of ``losses`` around ``model``'s weights along filter-normalised random directions.

    Args:
        model: an smp encoder-decoder network (never modified: a float32 CPU copy is moved).
        images: normalised float ``(B, H, W)`` (or one ``(H, W)``) slices: the fixed batch.
        masks: ground truth of the same shape (non-zero = tumour).
        losses: name -> catalogue loss (called as in training: ``loss(logits, target, **extras)``).
        dims: 1 (a curve along one direction) or 2 (a surface over two).
        steps: grid points per direction (odd counts include the checkpoint itself).
        span: the grid runs over ``[-span, span]`` (1 = one filter norm).
        seed: seed of the directions (same seed, same directions, same values).
        spacing: pixel spacing in mm, for the losses that use it.
        maps: precomputed target maps ``(B, 1, H, W)`` by keyword (``train.extras.PRECOMPUTED``).
        progress: called with ``(points done, points in all)`` after every grid point.
        cancel: polled before every grid point; True raises :class:`LandscapeCancelled`.
    Returns:
        :class:`Landscape`.
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims!r}")
    if not losses:
        raise ValueError("choose at least one loss")
    grid = _grid(steps, span)
    x, target = _batch(images, masks)
    net = copy.deepcopy(model).float().cpu().eval()
    segmenter = Segmenter(net)
    padded, (rows, cols) = segmenter.pad(x)
    params = list(net.parameters())
    theta = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(int(seed))
    directions = [random_direction(net, gen) for _ in range(dims)]
    kwargs = {**{k: v.float() for k, v in (maps or {}).items()}, "spacing": tuple(float(s) for s in spacing)}
    uses_features = any("features" in getattr(loss, "uses", ()) for loss in losses.values())

    @torch.no_grad()
    def evaluate(a: float, b: float) -> dict[str, float]:
        for p, t, *ds in zip(params, theta, *directions):
            p.copy_(t + a * ds[0] + (b * ds[1] if dims == 2 else 0.0))
        logits, features = segmenter.forward_features(padded)
        extra = dict(kwargs)
        if uses_features:  # decoder features are at 1/4 of the padded grid
            extra["features"] = features[..., rows.start // 4: -(-rows.stop // 4), cols.start // 4: -(-cols.stop // 4)]
        return {name: float(loss(logits[..., rows, cols], target, **extra)) for name, loss in losses.items()}

    points = [(a, 0.0) for a in grid] if dims == 1 else [(a, b) for b in grid for a in grid]
    found: list[dict[str, float]] = []
    for k, (a, b) in enumerate(points):
        if cancel is not None and cancel():
            raise LandscapeCancelled(f"loss landscape cancelled after {k} of {len(points)} points")
        found.append(evaluate(a, b))
        if progress is not None:
            progress(k + 1, len(points))
    origin = evaluate(0.0, 0.0)
    shape = (len(grid),) if dims == 1 else (len(grid), len(grid))
    values = {name: np.array([f[name] for f in found], dtype=np.float64).reshape(shape) for name in losses}
    return Landscape(grid, grid if dims == 2 else None, values, origin, int(seed), int(x.shape[0]))


def checkpoint_landscape(
    checkpoint: str | os.PathLike | Any,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    compare: Sequence[str] = ("dice", "bce"),
    normalized: bool = False,
    spacing: Sequence[float] | None = None,
    **options: Any,
) -> Landscape:
    """:func:`loss_landscape` of a checkpoint with its own loss (reported as :data:`OWN`) and ``compare``.

    Args:
        checkpoint: registry name, card path or ``LoadedCheckpoint``.
        images: ``(B, H, W)`` or ``(H, W)`` slices; raw intensities, normalised here with the
            card's normalisation per slice, unless ``normalized``.
        masks: ground truth of the same shape.
        compare: catalogue losses evaluated beside the own one (default paper hyper-parameters).
        spacing: pixel spacing in mm (default: the card's training spacing, else 1 mm).
        options: passed to :func:`loss_landscape` (``dims``, ``steps``, ``span``, ``seed``,
            ``progress``, ``cancel``).
    The own loss is built from the card's ``loss_hparams``, fitted on the batch's masks (losses
    with dataset statistics) and moved to the last epoch of the card's recipe (schedules).
    """
    from napari_segloss.checkpoints import LoadedCheckpoint, load
    from napari_segloss.losses import build, info, resolve
    from napari_segloss.preprocess import normalize
    from napari_segloss.train.extras import PRECOMPUTED, Extras

    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint, device="cpu")
    card = loaded.card
    x = np.asarray(images, dtype=np.float32)
    x = x[None] if x.ndim == 2 else x
    y = np.asarray(masks)
    y = y[None] if y.ndim == 2 else y
    if not normalized:
        x = np.stack([normalize(s, card.normalization) for s in x]).astype(np.float32)
    pixel = tuple(spacing) if spacing is not None else (tuple(card.pixel_spacing_mm[-2:]) if card.pixel_spacing_mm
                                                        else (1.0, 1.0))
    chosen: dict[str, torch.nn.Module] = {}
    extras_of = []
    for label, name, hparams in [(OWN, card.loss, card.loss_hparams), *((resolve(c), c, {}) for c in compare)]:
        if label in chosen:
            continue
        loss = build(resolve(name), **dict(hparams))
        extras = Extras(loss, info(resolve(name)).needs)
        extras.fit([m != 0 for m in y])
        epochs = int(card.recipe.get("epochs", 1) or 1)
        extras.start_epoch(epochs - 1, epochs)
        chosen[label] = loss
        extras_of.append(extras)
    maps = {key: torch.from_numpy(np.stack([PRECOMPUTED[key](m != 0, pixel) for m in y]).astype(np.float32))[:, None]
            for key in sorted({k for e in extras_of for k in e.maps})}
    return loss_landscape(loaded.model, x, y, chosen, spacing=pixel, maps=maps, **options)


def landscape_sharpness(landscape: Landscape, name: str) -> float:
    """Mean rise of a 1-D curve over its origin value at the grid's two ends (``>= 0`` for a minimum).

    A flat minimum rises little, a sharp one much (in the loss's own units).
    """
    if landscape.betas is not None:
        raise ValueError("sharpness is defined on 1-D curves")
    curve = landscape.values[name]
    return float((curve[0] + curve[-1]) / 2 - landscape.origin[name])
