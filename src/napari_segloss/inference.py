"""The one forward path of the network, :class:`Segmenter`, and the public calls on it:
:func:`predict` (a 2D slice, a 3D volume or a colour image) and :func:`predict_many` (a list of
2D images in shared batches).

Every consumer that runs a network on images -- prediction (CLI, widget, batch), training
validation, test evaluation for the cards, fine-tuning, interpretability -- goes through a
:class:`Segmenter`: input preparation (colour -> grey or the card's channel count, intensity
normalisation from the card over the whole slice or volume), slice batches sized to a memory
budget, reflect padding to a multiple of 32 (at least 64) split around the image and exact
cropping back, devices, AMP, CUDA-OOM fallback, progress and cancel. A different network (another
smp architecture, a 3-D model) touches :mod:`napari_segloss.models` and this class only.

Scale (``resample=True``, the default): the network sees the scan at its training scale. With a
known pixel size each slice is resampled in-plane to the card's training pixel size; with an
unknown one (``spacing=None``: PNG/JPG, a layer of scale 1) it is brought to the card's training
field of view (``card.image_size``); probabilities are resized back to the input grid. The
metadata says which happened. On GPU the model runs under ``torch.inference_mode`` with
channels-last memory and bf16/fp16 autocast; a CUDA out-of-memory error falls back to the CPU
with a warning. On the CPU, :meth:`Segmenter.load` runs the checkpoint's exported ONNX graph with
ONNX Runtime when it is installed (:mod:`napari_segloss.backends`; probabilities within 1e-4 of
torch's; ``NAPARI_SEGLOSS_BACKEND=torch`` opts out). CPU results are deterministic; GPU probabilities agree with CPU ones to within
about 1e-2 (half-precision autocast).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_segloss import __version__
from napari_segloss.checkpoints import CheckpointError, CheckpointInfo, LoadedCheckpoint, ModelCard, load
from napari_segloss.checkpoints.registry import locate
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


def _reflect(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Reflect-pad one axis exactly like ``numpy.pad(mode="reflect")``, pads of any length
    (indices folded with period ``2 (n - 1)``; a single pixel is repeated)."""
    if not before and not after:
        return x
    size = x.shape[dim]
    index = torch.arange(-before, size + after, device=x.device)
    if size == 1:
        index = torch.zeros_like(index)
    else:
        index = index.remainder(2 * (size - 1))
        index = torch.where(index >= size, 2 * (size - 1) - index, index)
    return x.index_select(dim % x.ndim, index)


def _pad_tensor(x: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Reflect-pad ``(B, C, H, W)`` as :func:`padding_for` says; the crop that undoes it."""
    height, width = x.shape[-2:]
    (top, bottom), (left, right) = padding_for(height), padding_for(width)
    x = _reflect(_reflect(x, top, bottom, -2), left, right, -1)
    return x, (slice(top, top + height), slice(left, left + width))


def _forward_batch(model: torch.nn.Module | Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                   device: torch.device) -> np.ndarray:
    """Float32 logits ``(b, H, W)`` for a normalised ``(b, C, H, W)`` batch (pads and crops).

    ``model`` is the torch network or a CPU backend (:mod:`napari_segloss.backends`: numpy
    ``(b, C, H, W)`` in, ``(b, 1, H, W)`` logits out)."""
    x, (rows, cols) = _pad_tensor(torch.from_numpy(np.ascontiguousarray(batch)))
    if not isinstance(model, torch.nn.Module):
        return np.ascontiguousarray(model(x.numpy())[:, 0, rows, cols], dtype=np.float32)
    x = x.to(device)
    amp = _amp_dtype(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        logits = model(x)
    return logits.float()[:, 0, rows, cols].cpu().numpy()


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


def resize_slices(data: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of float32 ``(N, C, H, W)`` (pixel-area aligned)."""
    if tuple(data.shape[-2:]) == tuple(size):
        return data
    x = torch.from_numpy(np.ascontiguousarray(data))
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.numpy()


def field_of_view_size(shape: tuple[int, int], image_size: Sequence[int]) -> tuple[int, int]:
    """In-plane size that brings an image of unknown pixel size to the training field of view.

    The longer side becomes the longer side of ``image_size`` (the card's training slices),
    keeping the aspect ratio, so a 512x512 slice of a 256x256-trained checkpoint runs at 256x256.
    """
    scale = max(int(n) for n in image_size[-2:]) / max(shape)
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


@dataclass(frozen=True)
class Scaling:
    """How :meth:`Segmenter.run` brought an image to the network's training scale.

    Attributes:
        mode: ``"pixel_size"`` (known spacing resampled to the card's pixel size),
            ``"field_of_view"`` (unknown spacing, resized to the card's training image size) or
            ``"none"`` (run on the input grid).
        network_size: in-plane ``(H, W)`` the network saw.
        target_mm: the card's pixel size for ``"pixel_size"``, else None.
    """

    mode: str
    network_size: tuple[int, int]
    target_mm: tuple[float, float] | None = None

    def describe(self) -> str:
        """One line for the user (widget status, CLI, report)."""
        h, w = self.network_size
        if self.mode == "pixel_size":
            return f"resampled to the checkpoint's {self.target_mm[0]:g} x {self.target_mm[1]:g} mm pixels ({h} x {w})"  # type: ignore[index]
        if self.mode == "field_of_view":
            return f"pixel size unknown: resized to the checkpoint's training image size ({h} x {w})"
        return f"run on the input grid ({h} x {w})"


class Segmenter:
    """A network ready to run on images: the model, its device and its card's input convention.

    Args:
        model: maps ``(B, channels, H, W)`` float input (H, W multiples of 32) to
            ``(B, 1, H, W)`` logits.
        device: where ``model`` lives.
        channels: input channels (the card's ``input_channels``).
        normalization: the card's intensity normalisation spec (for :meth:`prepare`).
        pixel_spacing_mm: training pixel size (for ``"pixel_size"`` scaling), or None.
        image_size: training slice size in pixels (for ``"field_of_view"`` scaling), or None.
        reload: rebuilds the model on another device (used by the CUDA-OOM fallback, and to build
            a ``model`` given as None on first use); by default the model is moved.
        budget_bytes: activation memory one batch may take (default :data:`DEFAULT_BUDGET_BYTES`).

    :meth:`load` also sets ``card`` and ``info`` (the checkpoint's card and registry entry) and,
    on the CPU, ``backend``: the ONNX Runtime graph of :mod:`napari_segloss.backends` that
    :meth:`logits` runs instead of the torch model (None: torch).
    """

    def __init__(self, model: torch.nn.Module | None, *, device: str | torch.device = "cpu", channels: int = 1,
                 normalization: dict[str, Any] | None = None, pixel_spacing_mm: Sequence[float] | None = None,
                 image_size: Sequence[int] | None = None,
                 reload: Callable[[torch.device], torch.nn.Module] | None = None,
                 budget_bytes: int | None = None) -> None:
        from napari_segloss.preprocess import DEFAULT_NORMALIZATION

        self.model = model
        self.device = torch.device(device)
        self.channels = int(channels)
        self.normalization = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
        self.pixel_spacing_mm = tuple(float(v) for v in pixel_spacing_mm) if pixel_spacing_mm else None
        self.image_size = tuple(int(v) for v in image_size) if image_size else None
        self.budget_bytes = budget_bytes
        self._reload = reload
        self.loaded: LoadedCheckpoint | None = None
        self.card: ModelCard | None = None
        self.info: CheckpointInfo | None = None
        self.backend: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The torch network (built on first use when :meth:`load` found a cached ONNX graph)."""
        if self._model is None:
            if self._reload is None:
                raise ValueError("Segmenter has no model")
            self._model = self._reload(self.device)
        return self._model

    @model.setter
    def model(self, value: torch.nn.Module | None) -> None:
        self._model = value

    @classmethod
    def load(cls, checkpoint: str | os.PathLike | LoadedCheckpoint, *, device: str | torch.device = "auto",
             budget_bytes: int | None = None, backend: str | None = None) -> Segmenter:
        """A :class:`Segmenter` for a registry name, a card/weights path or a loaded checkpoint.

        ``backend``: ``"auto"`` (ONNX Runtime on the CPU when installed), ``"torch"`` or
        ``"onnx"``; None reads ``NAPARI_SEGLOSS_BACKEND`` (:mod:`napari_segloss.backends`). With
        ONNX Runtime and a cached graph of a name or path, the torch model is built only if
        something asks for :attr:`model` (no smp/timm import). Raises ``ValueError`` for a bad
        ``backend`` or device, :class:`~napari_segloss.checkpoints.CheckpointError` as
        :func:`~napari_segloss.checkpoints.load` does. Under ``"auto"``, a graph that cannot be
        exported or opened (a torch without the exporter, an ONNX Runtime that refuses it) gives a
        ``RuntimeWarning`` and the torch network instead; under ``"onnx"`` it is an error.
        """
        from napari_segloss import backends

        dev = resolve_device(device)
        onnx = backends.uses_onnx(dev, backend)
        loaded = None if onnx and not isinstance(checkpoint, LoadedCheckpoint) else _prepared(checkpoint, dev)
        if loaded is None:
            card_path, weights_path = locate(checkpoint)  # type: ignore[arg-type]
            card = backends.verified_card(card_path, weights_path)
            if card is None:
                loaded = _prepared(checkpoint, dev)  # export first (or let load report the bad weights)
        if loaded is not None:
            card, info = loaded.card, loaded.info
        else:
            info = CheckpointInfo.from_card(card, card_path, weights_path)
        source = loaded if loaded is not None else info.path
        segmenter = cls(loaded.model if loaded is not None else None, device=dev, channels=card.input_channels,
                        normalization=card.normalization, pixel_spacing_mm=card.pixel_spacing_mm,
                        image_size=getattr(card, "image_size", None),
                        reload=lambda target: _prepared(source, target).model, budget_bytes=budget_bytes)
        segmenter.loaded, segmenter.card, segmenter.info = loaded, card, info
        if onnx and card.weights_sha256 and Path(info.weights).suffix.lower() == ".safetensors":  # sha256 checked
            try:
                segmenter.backend = backends.onnx_backend(card, info.weights, lambda: segmenter.model)
            except CheckpointError:
                raise
            except Exception as exc:  # noqa: BLE001 - the exporter or ONNX Runtime failed: torch still works
                if backends.configured_backend(backend) == "onnx":
                    raise
                warnings.warn(f"{info.name}: the ONNX Runtime backend is unavailable ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); running torch instead", RuntimeWarning, stacklevel=2)
        return segmenter

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """Normalised float32 ``(Z, C, H, W)`` model input and the image's spatial ndim (2 or 3)."""
        return _model_input(image, self.channels, self.normalization)

    def pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, slice]]:
        """``(B, C, H, W)`` reflect-padded to the network's size rule, and the crop back (gradient paths)."""
        return _pad_tensor(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, decoder features)`` of a padded ``(B, C, H, W)`` tensor, with autograd
        (see :func:`napari_segloss.models.forward_with_features`)."""
        from napari_segloss.models import forward_with_features

        return forward_with_features(self.model, x)

    def _fall_back_to_cpu(self) -> None:
        warnings.warn(f"out of memory on {self.device}; continuing on the CPU", RuntimeWarning, stacklevel=3)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        cpu = torch.device("cpu")
        self.model = self._reload(cpu) if self._reload is not None else self.model.to(cpu)
        self.device = cpu

    def logits(self, data: np.ndarray, *, progress: ProgressCallback | None = None,
               cancel: CancelCallback | None = None) -> np.ndarray:
        """Float32 logits ``(N, H, W)`` of normalised ``(N, C, H, W)`` (or ``(N, H, W)`` for one
        channel) input, on the input grid.

        Runs in eval mode (the model's mode is restored after), in batches of
        :func:`batch_size_for` slices. ``progress(done, total)`` is called before the first batch
        and after each; ``cancel()`` before each batch (True raises :class:`InferenceCancelled`).
        """
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 3:
            data = data[:, None]
        total = data.shape[0]
        out = np.empty((total, *data.shape[-2:]), dtype=np.float32)
        plan = batches(total, batch_size_for(*data.shape[-2:], budget_bytes=self.budget_bytes or DEFAULT_BUDGET_BYTES)) if total else []
        backend = self.backend if self.device.type == "cpu" else None
        model = self.model if backend is None else None
        was_training = model is not None and model.training
        if model is not None:
            model.eval()
        try:
            if progress is not None:
                progress(0, total)
            for part in plan:
                if cancel is not None and cancel():
                    raise InferenceCancelled(f"cancelled after {part.start} of {total} slices")
                try:
                    out[part] = _forward_batch(backend or model, data[part], self.device)
                except torch.cuda.OutOfMemoryError:
                    if self.device.type == "cpu":
                        raise
                    self._fall_back_to_cpu()
                    out[part] = _forward_batch(self.model, data[part], self.device)
                if progress is not None:
                    progress(part.stop, total)
        finally:
            if model is not None:
                model.train(was_training)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return out

    def probabilities(self, data: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Float32 foreground probabilities ``(N, H, W)``: sigmoid of :meth:`logits` (same arguments)."""
        return torch.sigmoid(torch.from_numpy(self.logits(data, **kwargs))).numpy()

    def scaling(self, shape: tuple[int, int], spacing: tuple[float, ...] | None, resample: bool) -> Scaling:
        """How an image of in-plane ``shape`` and ``spacing`` (mm, or None = unknown) will be scaled."""
        if resample and spacing is not None and self.pixel_spacing_mm:
            target = self.pixel_spacing_mm[-2:]
            return Scaling("pixel_size", resampled_size(shape, spacing[-2:], target), target)  # type: ignore[arg-type]
        if resample and spacing is None and self.image_size:
            return Scaling("field_of_view", field_of_view_size(shape, self.image_size))
        return Scaling("none", shape)

    def run(self, image: np.ndarray, *, spacing: tuple[float, ...] | None = None, resample: bool = True,
            progress: ProgressCallback | None = None, cancel: CancelCallback | None = None) -> tuple[np.ndarray, Scaling]:
        """Probabilities of one image on its own grid, and how it was scaled for the network.

        ``image`` as :func:`predict` takes it; returns float32 ``(H, W)`` or ``(Z, H, W)``.
        """
        data, spatial_ndim = self.prepare(image)
        out, scaling = self.scaled_probabilities(data, spacing, resample, progress=progress, cancel=cancel)
        return (out[0] if spatial_ndim == 2 else out), scaling

    def scaled_probabilities(self, data: np.ndarray, spacing: tuple[float, ...] | None, resample: bool = True, *,
                             progress: ProgressCallback | None = None,
                             cancel: CancelCallback | None = None) -> tuple[np.ndarray, Scaling]:
        """Float32 probabilities ``(N, H, W)`` of normalised ``(N, C, H, W)`` input on its own grid,
        the network run at the scale :meth:`scaling` chooses for ``spacing`` (mm, or None = unknown)."""
        in_plane = tuple(data.shape[-2:])
        scaling = self.scaling(in_plane, spacing, resample)  # type: ignore[arg-type]
        out = self.probabilities(resize_slices(data, scaling.network_size), progress=progress, cancel=cancel)
        if out.shape[-2:] != in_plane:
            out = np.clip(resize_slices(out[:, None], in_plane)[:, 0], 0.0, 1.0)
        return out, scaling


def _prepared(checkpoint: str | os.PathLike | LoadedCheckpoint, device: torch.device) -> LoadedCheckpoint:
    if isinstance(checkpoint, LoadedCheckpoint) and checkpoint.device == device:
        loaded = checkpoint
    else:
        source = checkpoint.info.path if isinstance(checkpoint, LoadedCheckpoint) else checkpoint
        loaded = load(source, device=device)
    if device.type == "cuda":
        loaded.model.to(memory_format=torch.channels_last)
    return loaded


def _checked_spacing(spacing: tuple[float, ...] | None, spatial_ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != spatial_ndim or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be {spatial_ndim} positive numbers (mm), got {spacing}")
    return spacing


def predict(
    image: np.ndarray,
    checkpoint: str | os.PathLike | LoadedCheckpoint | Segmenter,
    *,
    device: str | torch.device = "auto",
    spacing: tuple[float, ...] | None = None,
    resample: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> Prediction:
    """Foreground probability of ``image`` under ``checkpoint``.

    Args:
        image: ``(H, W)`` or ``(Z, H, W)`` grey, or the same with a trailing colour axis of 3/4
            (RGB/RGBA, converted as the card's ``input_channels`` says). Any numeric dtype.
        checkpoint: registry name, card/weights path, a :class:`LoadedCheckpoint` or a
            :class:`Segmenter`.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda[:i]"``, ``"mps"``.
        spacing: mm per spatial axis, or None when the pixel size is unknown (PNG/JPG).
        resample: run the network at the checkpoint's training scale (default): with ``spacing``,
            each slice is resampled in-plane (bilinear, antialiased) to the card's training pixel
            size; without, it is resized to the card's training image size (same field of view as
            the training slices). Probabilities are resized back to the input grid. False runs on
            the input grid. The metadata's ``scaling`` says what happened.
        progress: ``progress(done_slices, total_slices)``, called before the first batch and
            after each one.
        cancel: called before each batch; returning True raises :class:`InferenceCancelled`.
    Returns:
        :class:`Prediction` with float32 ``probability`` of the input's spatial shape.
    """
    start = time.perf_counter()
    segmenter = checkpoint if isinstance(checkpoint, Segmenter) else Segmenter.load(checkpoint, device=device)
    card = segmenter.card
    arr, colour = _split_layout(image)
    spacing = _checked_spacing(spacing, arr.ndim - int(colour))
    probability, scaling = segmenter.run(image, spacing=spacing, resample=resample, progress=progress, cancel=cancel)
    metadata = {
        "checkpoint": card.name if card else None,
        "loss": card.loss if card else None,
        "weights_sha256": card.weights_sha256 if card else None,
        "device": str(segmenter.device),
        "seconds": round(time.perf_counter() - start, 4),
        "napari_segloss_version": __version__,
        "scaling": scaling.mode,
        "scaling_note": scaling.describe(),
        "network_size": list(scaling.network_size),
        "resampled_to_mm": list(scaling.target_mm) if scaling.target_mm else None,
    }
    return Prediction(probability, spacing, card.name if card else "", metadata)


def predict_many(
    images: Sequence[np.ndarray],
    checkpoint: str | os.PathLike | LoadedCheckpoint | Segmenter,
    *,
    device: str | torch.device = "auto",
    resample: bool = True,
    cancel: CancelCallback | None = None,
) -> list[np.ndarray]:
    """Float32 foreground probabilities of several images of unknown pixel size under one checkpoint.

    2D images of one shape and layout run as shared batches, each image normalised on its own
    exactly as :func:`predict` does (so the results equal ``predict``'s with ``spacing=None``);
    volumes and mixed shapes go image by image through :func:`predict`.

    Args:
        images: each as :func:`predict` accepts it.
        checkpoint: registry name, card/weights path, a :class:`LoadedCheckpoint` or a :class:`Segmenter`.
        device: as for :func:`predict`.
        resample: as for :func:`predict` with ``spacing=None`` (the training field of view).
        cancel: called before each batch; returning True raises :class:`InferenceCancelled`.
    Returns:
        one probability array per image, with that image's spatial shape.
    """
    segmenter = checkpoint if isinstance(checkpoint, Segmenter) else Segmenter.load(checkpoint, device=device)
    if len(images) > 1 and len({np.shape(image) for image in images}) == 1:
        parts = [segmenter.prepare(image) for image in images]
        if all(ndim == 2 for _, ndim in parts):
            data = np.concatenate([part for part, _ in parts])
            return list(segmenter.scaled_probabilities(data, None, resample, cancel=cancel)[0])
    return [predict(image, segmenter, resample=resample, cancel=cancel).probability for image in images]
