"""Fine-tune a checkpoint on the user's own images and masks, and save it as a new checkpoint.

:func:`fine_tune` continues training a released checkpoint (any loss of the catalogue, its
paper hyper-parameters unless overridden) on user slices, optionally mixed with synthetic
training slices, and returns the model with a :class:`~napari_segloss.checkpoints.ModelCard`
that records the parent checkpoint (name, sha256, loss) and the fine-tune recipe.
:func:`save_fine_tuned` writes it with :func:`~napari_segloss.checkpoints.save_checkpoint`.

Reused from :mod:`napari_segloss.train`: the augmentation and random crop (:class:`Augment`),
the loss's extra inputs (:class:`Extras`: dataset statistics, precomputed target maps,
decoder features), and the quick validation score (:class:`~napari_segloss.inference.Segmenter` + ``overlap``).
Differences from the full recipe, for a few user images: a fixed number of optimiser steps at a
constant learning rate (AdamW), BatchNorm running statistics frozen at the parent's (a batch of
a few crops of one scan would overwrite them), and at least half of every batch drawn from the
user slices when synthetic slices are mixed in.

Preparation matches inference: each image (``(H, W)`` or ``(Z, H, W)``, grey) is normalised as
the parent's card says over the whole image or volume, split into slices, and reflect-padded to
a multiple of 32 pixels (at least 64); the Dice reported is that of the unpadded slices.

Where checkpoints go: ``~/.napari-segloss/checkpoints`` (:func:`user_checkpoint_dir`) unless a
folder is given. The registry always searches the user folder, so
:func:`napari_segloss.checkpoints.list_checkpoints` (and the widget's picker) list a checkpoint
saved there at once; for another folder pass it (``list_checkpoints([folder])``), predict by path,
or add it to ``NAPARI_SEGLOSS_CHECKPOINTS``. Nothing here changes the process environment.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloss.checkpoints import LoadedCheckpoint, ModelCard, list_checkpoints, load, save_checkpoint
from napari_segloss.losses import build, info, resolve
from napari_segloss.models import SIZE_MULTIPLE, forward_with_features, resolve_device
from napari_segloss.paths import user_checkpoint_dir
from napari_segloss.preprocess import normalize
from napari_segloss.train.data import Augment
from napari_segloss.train.evaluate import THRESHOLD, overlap, probabilities
from napari_segloss.train.extras import Extras

#: synthetic training slices mixed in with ``include_synthetic`` (rendered once, then cached)
N_SYNTHETIC = 32
WEIGHT_DECAY = 1e-4
GRAD_CLIP = 1.0


class FineTuneCancelled(Exception):
    """Raised by :func:`fine_tune` when its ``cancel()`` callable returned True before a step."""


@dataclass(frozen=True)
class FineTuneStep:
    """Progress after one optimiser step.

    Attributes:
        step: steps done (1-based). steps: steps planned.
        loss: this step's training loss.
        dice: mean Dice on the user slices with tumour, when evaluated at this step, else None.
    """

    step: int
    steps: int
    loss: float
    dice: float | None = None


@dataclass
class _Pool:
    """Training slices of different sizes: float32 images and bool masks padded to a multiple of
    32, their spacing (mm) and the crop back to the unpadded slice (user slices only)."""

    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    spacing: list[tuple[float, float]] = field(default_factory=list)
    crops: list[tuple[slice, slice]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _as_list(arrays: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(arrays)] if isinstance(arrays, np.ndarray) else [np.asarray(a) for a in arrays]


def _padding(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    from napari_segloss.inference import padding_for

    return [padding_for(n) for n in shape]


def _user_pool(images: list[np.ndarray], masks: list[np.ndarray], normalization: Mapping[str, Any],
               spacing: tuple[float, float]) -> _Pool:
    if len(images) != len(masks) or not images:
        raise ValueError(f"need one mask per image (got {len(images)} images, {len(masks)} masks)")
    pool = _Pool()
    for k, (image, mask) in enumerate(zip(images, masks)):
        if image.ndim not in (2, 3):
            raise ValueError(f"image {k}: expected a grey (H, W) or (Z, H, W) array, got shape {image.shape}")
        if mask.shape != image.shape:
            raise ValueError(f"mask {k} shape {mask.shape} != image shape {image.shape}")
        norm = normalize(image, normalization)
        planes = zip(norm, mask) if image.ndim == 3 else [(norm, mask)]
        for plane, truth in planes:
            pads = _padding(plane.shape)
            pool.images.append(np.pad(plane, pads, mode="reflect").astype(np.float32))
            pool.masks.append(np.pad(truth != 0, pads, mode="reflect"))
            pool.spacing.append(spacing)
            pool.crops.append(tuple(slice(b, b + n) for (b, _), n in zip(pads, plane.shape)))
    return pool


def _synthetic_pool(card: ModelCard, n: int) -> tuple[_Pool, dict[str, Any]]:
    """``n`` synthetic training slices rendered like the parent's training data."""
    from napari_segloss.train.data import synthetic_splits

    size = int(card.recipe.get("render_size", 256))
    factor = int(card.recipe.get("downsample", 1))
    splits = synthetic_splits(n, 1, 1, size=size, factor=factor, n_volumes=0,
                              normalization=card.normalization)
    train = splits.train
    pool = _Pool(list(train.images), list(train.masks), [tuple(map(float, s)) for s in train.spacing],
                 [(slice(None), slice(None))] * len(train))
    return pool, {"n": len(train), "size": size, "downsample": factor, "cache": splits.description.get("cache")}


def _freeze_batchnorm(model: torch.nn.Module) -> None:
    """Training mode, except BatchNorm layers, which keep the parent's running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def fit_dice(model: torch.nn.Module, pool: _Pool, n_user: int, device: torch.device) -> float:
    """Mean Dice (threshold 0.5) over the first ``n_user`` slices of ``pool`` that have tumour.

    NaN when none has tumour. Leaves the model in eval mode.
    """
    preds, truths = [], []
    for shape in dict.fromkeys(pool.images[i].shape for i in range(n_user)):
        idx = [i for i in range(n_user) if pool.images[i].shape == shape]
        prob = probabilities(model, np.stack([pool.images[i] for i in idx]), device=device)
        for p, i in zip(prob, idx):
            preds.append((p[pool.crops[i]] >= THRESHOLD).ravel())
            truths.append(pool.masks[i][pool.crops[i]].ravel())
    scores = [overlap(p[None], t[None])["dice"] for p, t in zip(preds, truths) if t.any()]
    return float(np.mean(scores)) if scores else float("nan")


def _draw(rng: np.random.Generator, n_user: int, n_synthetic: int, batch: int) -> np.ndarray:
    """Indices of one batch: all user slices, or at least half when synthetic slices are mixed in."""
    n_from_user = batch if n_synthetic == 0 else max(1, (batch + 1) // 2)
    user = rng.integers(0, n_user, n_from_user)
    synthetic = n_user + rng.integers(0, n_synthetic, batch - n_from_user) if n_synthetic else np.empty(0, int)
    return np.concatenate([user, synthetic])


def _default_name(parent: str, loss: str) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{parent}+ft-{loss}-{stamp}"[:128]


def fine_tune(
    checkpoint: str | os.PathLike | LoadedCheckpoint,
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    loss: str,
    steps: int = 50,
    lr: float = 5e-4,
    include_synthetic: bool = False,
    progress: Callable[[FineTuneStep], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    loss_args: Mapping[str, Any] | None = None,
    batch: int = 4,
    patch: int = 128,
    spacing: Sequence[float] | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    device: str = "auto",
    name: str | None = None,
) -> tuple[torch.nn.Module, ModelCard]:
    """Fine-tune ``checkpoint`` with ``loss`` on user images and masks.

    Args:
        checkpoint: registry name, card path or ``LoadedCheckpoint`` (never modified: a copy is trained).
        images: one grey image or a list of them, each ``(H, W)`` or ``(Z, H, W)`` raw intensities.
        masks: the matching ground truths (non-zero = tumour), same shapes.
        loss: catalogue name or alias of the loss to train with.
        steps: optimiser steps. lr: AdamW learning rate (constant).
        include_synthetic: also draw up to half of every batch from the synthetic training slices.
        progress: called with a :class:`FineTuneStep` after every step.
        cancel: polled before every step; True raises :class:`FineTuneCancelled`.
        loss_args: the loss's hyper-parameters (default: paper values).
        batch: slices per step. patch: training crop side in pixels (a multiple of 32; reduced
            to the smallest padded slice).
        spacing: in-plane pixel size of the user images in mm (default: the parent card's).
        eval_every: steps between Dice evaluations on the user slices (default: steps / 10);
            the last step is always evaluated.
        seed: seed of batch order and augmentation.
        device: ``auto | cpu | cuda[:i] | mps``.
        name: name of the new checkpoint (default ``<parent>+ft-<loss>-<UTC time>``).
    Returns:
        ``(model, card)``: the fine-tuned model (eval mode, weights rounded to float16 precision,
        as :func:`save_fine_tuned` stores them) and its card (not yet saved).
    """
    if steps < 1 or batch < 1 or lr <= 0:
        raise ValueError(f"steps and batch must be >= 1 and lr > 0 (got steps={steps}, batch={batch}, lr={lr})")
    if patch % SIZE_MULTIPLE:
        raise ValueError(f"patch must be a multiple of {SIZE_MULTIPLE}, got {patch}")
    dev = resolve_device(device)
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint, device="cpu")
    parent = loaded.card
    default_spacing = parent.pixel_spacing_mm[-2:] if parent.pixel_spacing_mm else (1.0, 1.0)
    pixel = tuple(float(s) for s in (spacing if spacing is not None else default_spacing))
    pool = _user_pool(_as_list(images), _as_list(masks), parent.normalization, pixel)
    n_user = len(pool)
    synthetic_info: dict[str, Any] = {}
    if include_synthetic:
        extra, synthetic_info = _synthetic_pool(parent, N_SYNTHETIC)
        for key in ("images", "masks", "spacing", "crops"):
            getattr(pool, key).extend(getattr(extra, key))
    patch = min(patch, min(min(im.shape) for im in pool.images)) // SIZE_MULTIPLE * SIZE_MULTIPLE

    loss_name = resolve(loss)
    criterion = build(loss_name, **dict(loss_args or {})).to(dev)
    extras = Extras(criterion, info(loss_name).needs)
    extras.fit([m[c] for m, c in zip(pool.masks, pool.crops)])
    extras.start_epoch(0, 1)
    model = copy.deepcopy(loaded.model).float().to(dev)
    groups = [{"params": list(model.parameters()), "lr": lr, "weight_decay": WEIGHT_DECAY}]
    loss_params = [p for p in criterion.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    augment = Augment()
    eval_every = max(1, steps // 10) if eval_every is None else max(1, int(eval_every))

    tic = time.perf_counter()
    dice_before = fit_dice(model, pool, n_user, dev)
    history: list[dict[str, Any]] = []
    running: list[float] = []
    for step in range(1, steps + 1):
        if cancel is not None and cancel():
            raise FineTuneCancelled(f"fine-tuning cancelled after {step - 1} of {steps} steps")
        _freeze_batchnorm(model)
        rng = np.random.default_rng([seed, step])
        idx = _draw(rng, n_user, len(pool) - n_user, batch)
        crops = [augment(pool.images[i], pool.masks[i], rng, patch) for i in idx]
        x = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None].to(dev)
        y = torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.float32))[:, None].to(dev)
        maps = [extras.sample_maps(c[1], pool.spacing[i]) for c, i in zip(crops, idx)]
        batched = {k: torch.from_numpy(np.stack([m[k] for m in maps]))[:, None].to(dev) for k in extras.maps}
        logits, features = forward_with_features(model, x)
        kwargs = extras.call_kwargs(maps=batched, features=features,
                                    spacing=np.median([pool.spacing[i] for i in idx], axis=0))
        value = criterion(logits, y, **kwargs)
        if not torch.isfinite(value):
            raise FloatingPointError(f"{loss_name}: loss became {value.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        step_loss = float(value.detach())
        running.append(step_loss)
        dice = None
        if step % eval_every == 0 or step == steps:
            if step == steps:
                _round_to_half(model)
            dice = fit_dice(model, pool, n_user, dev)
            history.append({"epoch": len(history), "step": step, "train_loss": float(np.mean(running)),
                            "val_dice": None, "fit_dice": dice, "seconds": time.perf_counter() - tic})
            running = []
        if progress is not None:
            progress(FineTuneStep(step, steps, step_loss, dice))
    model.eval()
    card = _card(parent, name or _default_name(parent.name, loss_name), loss_name, dict(loss_args or {}), criterion,
                 extras, history, pool, n_user, patch, pixel,
                 dict(steps=steps, lr=lr, batch=batch, seed=seed, include_synthetic=include_synthetic,
                      device=str(dev), fit_dice_before=dice_before, fit_dice_after=history[-1]["fit_dice"],
                      seconds=time.perf_counter() - tic),
                 synthetic_info)
    return model, card


@torch.no_grad()
def _round_to_half(model: torch.nn.Module) -> None:
    """Round floating-point weights to float16 precision in place (the saved precision)."""
    for value in model.state_dict().values():
        if torch.is_floating_point(value):
            value.copy_(value.half().float())


def _card(parent: ModelCard, name: str, loss_name: str, loss_args: dict[str, Any], criterion: torch.nn.Module,
          extras: Extras, history: list[dict[str, Any]], pool: _Pool, n_user: int, patch: int,
          pixel: tuple[float, ...], run: dict[str, Any], synthetic: dict[str, Any]) -> ModelCard:
    meta = info(loss_name)
    before, after = run["fit_dice_before"], run["fit_dice_after"]
    n_tumour = sum(bool(pool.masks[i][pool.crops[i]].any()) for i in range(n_user))
    recipe = {
        "fine_tune": {
            "parent": parent.name, "parent_sha256": parent.weights_sha256, "parent_loss": parent.loss,
            "loss": loss_name, "loss_args": loss_args, **run, "patch": patch, "optimizer": "AdamW (constant lr)",
            "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP, "batchnorm": "frozen at the parent's statistics",
            "augment": Augment().to_dict(), "extras": extras.describe(),
        },
        "parent_recipe": dict(parent.recipe),
    }
    data = {"source": "user images", "n_slices": n_user, "n_tumour_slices": n_tumour,
            "slice_shapes": sorted({tuple(pool.masks[i][pool.crops[i]].shape) for i in range(n_user)}),
            "synthetic": synthetic or None, "normalization": dict(parent.normalization)}
    notes = (f"Fine-tuned from {parent.name} ({parent.loss}) with {meta.title} for {run['steps']} steps on "
             f"{n_user} user slice(s){' plus synthetic slices' if synthetic else ''}. Dice on those slices "
             f"{before:.3f} -> {after:.3f}: training data, not a held-out test.")
    return ModelCard(
        name=name, loss=loss_name, family=meta.family, loss_hparams={**meta.defaults, **loss_args},
        loss_state=criterion.state(), architecture=dict(parent.architecture), input_channels=parent.input_channels,
        normalization=dict(parent.normalization), patch_size=(patch, patch), pixel_spacing_mm=pixel,
        recipe=recipe, data=data, history=history, test_metrics={}, notes=notes,
    )


def save_fine_tuned(model: torch.nn.Module, card: ModelCard, directory: str | os.PathLike | None = None, *,
                    overwrite: bool = False) -> Path:
    """Save a fine-tuned checkpoint (``list_checkpoints()`` lists it when saved to the user folder).

    Args:
        directory: target folder (default :func:`user_checkpoint_dir`, which the registry always
            searches; another folder is listed by ``list_checkpoints([directory])``).
        overwrite: replace a checkpoint of the same name in ``directory``. A name already used
            by another checkpoint listed with ``directory`` (which would shadow or be shadowed) is
            always refused.
    Returns:
        the ``.safetensors`` path.
    """
    folder = Path(directory).expanduser() if directory is not None else user_checkpoint_dir()
    own = folder / f"{card.name}.json"
    if own.exists() and not overwrite:
        raise FileExistsError(f"{own} exists; choose another name or pass overwrite=True")
    listed = list_checkpoints([folder])
    clash = next((i for i in listed if i.name == card.name and i.path.resolve() != own.resolve()), None)
    if clash is not None:
        raise FileExistsError(f"checkpoint name {card.name!r} is already used by {clash.path}")
    return save_checkpoint(model, card, folder)
