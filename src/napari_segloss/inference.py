"""Run a checkpoint on a 2D slice, a 3D volume or a colour image: :func:`predict`
(:func:`predict_many` for a list of 2D images in shared batches).

Steps: colour -> grey (or the card's channel count), intensity normalisation from the card
(over the whole slice or volume), slice batches sized to a memory budget, reflect padding to a
multiple of 32 and exact cropping back, sigmoid probabilities; optionally (``resample=True``)
in-plane resampling to the checkpoint's training pixel size and back. On GPU the model runs under
``torch.inference_mode`` with channels-last memory and bf16/fp16 autocast; a CUDA out-of-memory
error falls back to the CPU with a warning. CPU results are deterministic; GPU probabilities
agree with CPU ones to within about 1e-2 (half-precision autocast).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_segloss import __version__
from napari_segloss.checkpoints import LoadedCheckpoint, load
from napari_segloss.models import SIZE_MULTIPLE, resolve_device
from napari_segloss.preprocess import normalize, to_grayscale

#: activation memory per padded input pixel of the default FPN (measured peak ~200 B, rounded up)
ACTIVATION_BYTES_PER_PIXEL = 256
#: memory the activations of one batch may take (CPU and GPU)
DEFAULT_BUDGET_BYTES = 512 * 2**20
#: smallest padded side: at 32 px the FPN's coarsest level is 1x1 and its GroupNorm cannot run
MIN_SIZE = 2 * SIZE_MULTIPLE
#: largest batch (bigger ones stop paying off on the CPU and make progress reports coarse)
MAX_BATCH = 16

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]


class InferenceCancelled(Exception):
    """Raised by :func:`predict` when its ``cancel()`` callable returned True between batches."""


@dataclass(frozen=True)
class Prediction:
    """The output of :func:`predict`.

    Attributes:
        probability: float32 foreground probability in [0, 1], the input's spatial shape
            ``(H, W)`` or ``(Z, H, W)``.
        spacing: mm per spatial axis (as given to :func:`predict`), or None.
        checkpoint: the checkpoint's name.
        metadata: what was run: checkpoint name, loss, weights sha256, device, seconds,
            napari-segloss version (save it with any result).
    """

    probability: np.ndarray
    spacing: tuple[float, ...] | None
    checkpoint: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def mask(self, threshold: float = 0.5) -> np.ndarray:
        """Boolean mask ``probability >= threshold`` (no re-run of the model), same shape."""
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        return self.probability >= np.float32(threshold)


def padding_for(size: int, multiple: int = SIZE_MULTIPLE, minimum: int = MIN_SIZE) -> tuple[int, int]:
    """``(before, after)`` padding that brings ``size`` to the next multiple, and to at least ``minimum``."""
    target = max(minimum, math.ceil(size / multiple) * multiple)
    total = target - size
    return total // 2, total - total // 2


def batch_size_for(height: int, width: int, *, budget_bytes: int = DEFAULT_BUDGET_BYTES, max_batch: int = MAX_BATCH) -> int:
    """Slices per batch so that a batch's activations of padded ``height x width`` slices fit ``budget_bytes``.

    Always at least 1 (a single slice larger than the budget still runs).
    """
    pad_h, pad_w = (height + sum(padding_for(height))), (width + sum(padding_for(width)))
    per_slice = pad_h * pad_w * ACTIVATION_BYTES_PER_PIXEL
    return int(max(1, min(max_batch, budget_bytes // per_slice)))


def batches(n_slices: int, batch_size: int) -> list[slice]:
    """Consecutive slices ``[0:b], [b:2b], ...`` covering ``n_slices`` slices."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(start, min(start + batch_size, n_slices)) for start in range(0, n_slices, batch_size)]


def _split_layout(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(array, has_colour_axis)``; accepts (H, W), (H, W, 3|4), (Z, H, W), (Z, H, W, 3|4)."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise ValueError(f"image is empty: shape {arr.shape}")
    if arr.ndim == 2:
        return arr, False
    if arr.ndim in (3, 4) and arr.shape[-1] in (3, 4):
        return arr, True
    if arr.ndim == 3:
        return arr, False
    raise ValueError(
        f"image must be (H, W), (H, W, 3|4), (Z, H, W) or (Z, H, W, 3|4), got shape {arr.shape}"
    )


def _model_input(image: np.ndarray, channels: int, normalization: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Normalised float32 ``(Z, C, H, W)`` (C = ``channels``) and the spatial ndim (2 or 3)."""
    arr, colour = _split_layout(image)
    spatial_ndim = arr.ndim - int(colour)
    if channels == 1:
        grey = to_grayscale(arr, rgb=colour)
        data = normalize(grey, normalization)[..., None, :, :]
    elif colour and arr.shape[-1] >= channels:
        data = normalize(arr[..., :channels], normalization)
        data = np.moveaxis(data, -1, -3)
    elif not colour:
        data = np.repeat(normalize(arr, normalization)[..., None, :, :], channels, axis=-3)
    else:
        raise ValueError(f"the checkpoint needs {channels} channels, the image has {arr.shape[-1]}")
    if spatial_ndim == 2:
        data = data[None]
    return np.ascontiguousarray(data, dtype=np.float32), spatial_ndim


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def _forward_batch(model: torch.nn.Module, batch: np.ndarray, device: torch.device) -> np.ndarray:
    """Probabilities ``(b, H, W)`` for a normalised ``(b, C, H, W)`` batch (pads and crops)."""
    height, width = batch.shape[-2:]
    (top, bottom), (left, right) = padding_for(height), padding_for(width)
    padded = np.pad(batch, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="reflect")
    x = torch.from_numpy(padded).to(device)
    amp = _amp_dtype(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        logits = model(x)
    prob = torch.sigmoid(logits.float())[:, 0, top : top + height, left : left + width]
    return prob.cpu().numpy()


def resampled_size(shape: tuple[int, int], spacing: tuple[float, float], target: tuple[float, float]) -> tuple[int, int]:
    """In-plane ``(H, W)`` that covers the same field of view at the ``target`` pixel size (mm)."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def pixel_size_ratio(spacing: tuple[float, ...] | None, card_spacing: tuple[float, ...] | None) -> float | None:
    """How much coarser the image's in-plane pixels are than the checkpoint's training pixels.

    The geometric mean of ``spacing[-2:] / card_spacing[-2:]`` (1 = same pixel size, 0.5 =
    pixels half as wide as in training), or None when either is unknown.
    """
    if not spacing or not card_spacing or len(spacing) < 2 or len(card_spacing) < 2:
        return None
    ratios = [s / t for s, t in zip(spacing[-2:], card_spacing[-2:])]
    return float(math.sqrt(ratios[0] * ratios[1]))


def _resize(data: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of float32 ``(N, C, H, W)`` (pixel-area aligned)."""
    if tuple(data.shape[-2:]) == tuple(size):
        return data
    x = torch.from_numpy(np.ascontiguousarray(data))
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.numpy()


def _prepared(checkpoint: str | os.PathLike | LoadedCheckpoint, device: torch.device) -> LoadedCheckpoint:
    if isinstance(checkpoint, LoadedCheckpoint) and checkpoint.device == device:
        loaded = checkpoint
    else:
        source = checkpoint.info.path if isinstance(checkpoint, LoadedCheckpoint) else checkpoint
        loaded = load(source, device=device)
    if device.type == "cuda":
        loaded.model.to(memory_format=torch.channels_last)
    return loaded


def predict(
    image: np.ndarray,
    checkpoint: str | os.PathLike | LoadedCheckpoint,
    *,
    device: str | torch.device = "auto",
    spacing: tuple[float, ...] | None = None,
    resample: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> Prediction:
    """Foreground probability of ``image`` under ``checkpoint``.

    Args:
        image: ``(H, W)`` or ``(Z, H, W)`` grey, or the same with a trailing colour axis of 3/4
            (RGB/RGBA, converted as the card's ``input_channels`` says). Any numeric dtype.
        checkpoint: registry name, card/weights path, or a :class:`LoadedCheckpoint`.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda[:i]"``, ``"mps"``.
        spacing: mm per spatial axis, carried to the result (one value per spatial axis).
        resample: run the network at the checkpoint's training pixel size
            (``card.pixel_spacing_mm``): each slice is resized in-plane (bilinear, antialiased)
            from ``spacing`` to it and the probabilities are resized back to the input grid.
            Needs ``spacing``; ignored for checkpoints whose card has no pixel spacing (the
            metadata says whether it happened). Off by default: a PNG's spacing is unknown.
        progress: ``progress(done_slices, total_slices)``, called before the first batch and
            after each one.
        cancel: called before each batch; returning True raises :class:`InferenceCancelled`.
    Returns:
        :class:`Prediction` with float32 ``probability`` of the input's spatial shape.
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    loaded = _prepared(checkpoint, dev)
    card = loaded.card
    data, spatial_ndim = _model_input(image, card.input_channels, card.normalization)
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != spatial_ndim or not all(s > 0 and math.isfinite(s) for s in spacing):
            raise ValueError(f"spacing must be {spatial_ndim} positive numbers (mm), got {spacing}")
    if resample and spacing is None:
        raise ValueError("resample=True needs the image's spacing (mm per axis)")
    in_plane = tuple(data.shape[-2:])
    resampled_to = None
    if resample and card.pixel_spacing_mm:
        resampled_to = tuple(card.pixel_spacing_mm[-2:])
        data = _resize(data, resampled_size(in_plane, spacing[-2:], resampled_to))  # type: ignore[index,arg-type]
    total = data.shape[0]
    out = np.empty((total, *data.shape[-2:]), dtype=np.float32)
    plan = batches(total, batch_size_for(*data.shape[-2:], budget_bytes=DEFAULT_BUDGET_BYTES))
    if progress is not None:
        progress(0, total)
    for part in plan:
        if cancel is not None and cancel():
            raise InferenceCancelled(f"cancelled after {part.start} of {total} slices")
        try:
            out[part] = _forward_batch(loaded.model, data[part], dev)
        except torch.cuda.OutOfMemoryError:
            if dev.type == "cpu":
                raise
            warnings.warn(f"out of memory on {dev}; continuing on the CPU", RuntimeWarning, stacklevel=2)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            dev = torch.device("cpu")
            loaded = _prepared(loaded, dev)
            out[part] = _forward_batch(loaded.model, data[part], dev)
        if progress is not None:
            progress(part.stop, total)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if out.shape[-2:] != in_plane:
        out = np.clip(_resize(out[:, None], in_plane)[:, 0], 0.0, 1.0)
    probability = out[0] if spatial_ndim == 2 else out
    metadata = {
        "checkpoint": card.name,
        "loss": card.loss,
        "weights_sha256": card.weights_sha256,
        "device": str(dev),
        "seconds": round(time.perf_counter() - start, 4),
        "napari_segloss_version": __version__,
        "resampled_to_mm": list(resampled_to) if resampled_to else None,
    }
    return Prediction(probability, spacing, card.name, metadata)


def predict_many(
    images: Sequence[np.ndarray],
    checkpoint: str | os.PathLike | LoadedCheckpoint,
    *,
    device: str | torch.device = "auto",
    cancel: CancelCallback | None = None,
) -> list[np.ndarray]:
    """Float32 foreground probabilities of several images under one checkpoint.

    2D images of one shape and layout run as batches of :func:`batch_size_for` slices, each image
    normalised on its own exactly as :func:`predict` does (so the results equal ``predict``'s);
    volumes and mixed shapes go image by image through :func:`predict`.

    Args:
        images: each as :func:`predict` accepts it.
        checkpoint: registry name, card/weights path, or a :class:`LoadedCheckpoint`.
        device: as for :func:`predict` (no CPU fallback here: the caller decides what to retry).
        cancel: called before each batch; returning True raises :class:`InferenceCancelled`.
    Returns:
        one probability array per image, with that image's spatial shape.
    """
    dev = resolve_device(device)
    loaded = _prepared(checkpoint, dev)
    card = loaded.card
    if len(images) > 1 and len({np.shape(image) for image in images}) == 1:
        parts = [_model_input(image, card.input_channels, card.normalization) for image in images]
        if all(ndim == 2 for _, ndim in parts):
            data = np.concatenate([part for part, _ in parts])
            out = np.empty((data.shape[0], *data.shape[-2:]), dtype=np.float32)
            for part in batches(data.shape[0], batch_size_for(*data.shape[-2:])):
                if cancel is not None and cancel():
                    raise InferenceCancelled(f"cancelled after {part.start} of {data.shape[0]} images")
                out[part] = _forward_batch(loaded.model, data[part], dev)
            return list(out)
    return [predict(image, loaded, device=dev, cancel=cancel).probability for image in images]
