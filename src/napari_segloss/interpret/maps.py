"""Per-pixel loss maps: how much each pixel of an image drives a loss, for any loss of the catalogue.

Two maps of one 2-D image (or one slice of a volume), given a prediction and the ground truth:

* ``gradient``: ``|dL/dz_i|``, the magnitude of the loss's gradient with respect to pixel ``i``'s
  logit, by autograd through the catalogue's own implementation. This is what training feeds
  back to the network: Focal fades easy background out, boundary losses weigh the rim, Tversky
  pushes harder on missed tumour than on false alarms. Units: loss per logit unit; for losses that
  average over pixels it scales as 1/N.
* ``per_pixel``: the pixel's own term, for losses that are a pixel mean of per-pixel terms,
  scaled so that ``per_pixel.mean() == value``. Cross-entropy-type losses weighted per pixel
  (:data:`WEIGHTED_BCE`), Focal, HD-DT and the region-wise loss decompose so; region and compound
  losses do not (``None``).

For the weighted cross-entropies the weight ``w_i`` (class weight, boundary band, top-k selection,
contour distance) is read back from the gradient, ``w_i = N dL/dz_i / (sigma(z_i) - y_i)``, because
``d BCE_i / dz_i = sigma(z_i) - y_i``; the loss's own weighting is thus used, never re-implemented.
Every decomposition is checked against the loss value (relative 1e-6) before it is returned.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_segloss.interpret._evaluate import loss_kwargs, make_loss, to_logits, value_and_grad
from napari_segloss.losses.boundary import rrw_maps
from napari_segloss.train.extras import PRECOMPUTED

#: losses that equal the pixel mean of ``w_i * BCE_i`` with weights that do not depend on the logits
WEIGHTED_BCE = frozenset({"bce", "weighted_bce", "balanced_bce", "topk", "distance_bce", "boundary_aware",
                          "shape_aware"})
#: losses that equal the pixel mean of ``w_i * (p_i - y_i)^2`` with logit-independent weights
WEIGHTED_SQUARED_ERROR = frozenset({"hausdorff_dt"})


@dataclass(frozen=True)
class LossMap:
    """What each pixel contributes to one loss on one 2-D image.

    Attributes:
        loss: canonical loss name.
        value: the loss of the image (float).
        gradient: float32 ``(H, W)``, ``|dL/dz|`` per pixel (z the foreground logit).
        per_pixel: float32 ``(H, W)`` whose mean is ``value``, or None when the loss does not
            decompose per pixel.
        index: the slice of a 3-D input (axis 0), or None for a 2-D input.
    """

    loss: str
    value: float
    gradient: np.ndarray
    per_pixel: np.ndarray | None
    index: int | None = None


def _plane(array: np.ndarray, index: int | None, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim == 3:
        if index is None:
            raise ValueError(f"{what} is 3-D {arr.shape}: pass index= (the slice along axis 0)")
        if not -arr.shape[0] <= index < arr.shape[0]:
            raise ValueError(f"index {index} is outside the {arr.shape[0]} slices of {what}")
        return arr[index]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be (H, W) or (Z, H, W), got shape {arr.shape}")
    return arr


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den`` is 0 (pixels the loss cannot move: their term is 0 too)."""
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _weighted_bce_terms(logits: np.ndarray, target: np.ndarray, grad: np.ndarray, **_: Any) -> np.ndarray:
    z = torch.from_numpy(logits)
    y = torch.from_numpy(target.astype(np.float64))
    slope = torch.where(y > 0.5, -torch.sigmoid(-z), torch.sigmoid(z)).numpy()  # dBCE/dz = sigma(z) - y
    bce = (-(y * torch.nn.functional.logsigmoid(z) + (1 - y) * torch.nn.functional.logsigmoid(-z))).numpy()
    return logits.size * _safe_ratio(grad, slope) * bce


def _weighted_squared_error_terms(logits: np.ndarray, target: np.ndarray, grad: np.ndarray, **_: Any) -> np.ndarray:
    z = torch.from_numpy(logits)
    p, q = torch.sigmoid(z).numpy(), torch.sigmoid(-z).numpy()
    error = np.where(target, -q, p)  # p - y without cancellation
    return logits.size * _safe_ratio(grad * error, 2.0 * p * q)  # d(p - y)^2/dz = 2 (p - y) p (1 - p)


def _focal_terms(logits: np.ndarray, target: np.ndarray, loss: torch.nn.Module, **_: Any) -> np.ndarray:
    from napari_segloss.losses._functional import focal_map

    z = torch.from_numpy(logits)
    y = torch.from_numpy(target.astype(np.float64))
    return focal_map(z, y, gamma=loss.gamma, alpha=loss.alpha).numpy()


def _region_wise_terms(logits: np.ndarray, target: np.ndarray, spacing: Sequence[float], **_: Any) -> np.ndarray:
    y = torch.from_numpy(target.astype(np.float64))[None, None]
    sdf = torch.from_numpy(np.asarray(PRECOMPUTED["target_dist"](target, spacing), dtype=np.float64))[None, None]
    z_bg, z_fg = rrw_maps(y, sdf)[0].numpy()
    p = torch.sigmoid(torch.from_numpy(logits)).numpy()
    return 0.5 * ((1.0 - p) * z_bg + p * z_fg)


def _decomposition(name: str) -> Callable[..., np.ndarray] | None:
    if name in WEIGHTED_BCE:
        return _weighted_bce_terms
    if name in WEIGHTED_SQUARED_ERROR:
        return _weighted_squared_error_terms
    return {"focal": _focal_terms, "region_wise": _region_wise_terms}.get(name)


def decomposes(loss_name: str) -> bool:
    """Whether :func:`loss_map` gives a per-pixel term for ``loss_name`` (canonical name)."""
    return _decomposition(loss_name) is not None


def loss_map(
    logits_or_probability: np.ndarray,
    target: np.ndarray,
    loss_name: str,
    *,
    index: int | None = None,
    kind: str = "auto",
    spacing: Sequence[float] | None = None,
    features: torch.Tensor | None = None,
    epoch: int | None = None,
    total_epochs: int | None = None,
    **hparams: Any,
) -> LossMap:
    """Per-pixel gradient magnitude and, where defined, per-pixel term of a loss on one image.

    Args:
        logits_or_probability: the prediction, ``(H, W)`` or ``(Z, H, W)``: foreground logits or
            probabilities (see ``kind``).
        target: ground truth of the same shape (non-zero = tumour).
        loss_name: a catalogue name or alias.
        index: slice along axis 0 of a 3-D input (required then); the maps are that slice's.
        kind: ``"logits"``, ``"probability"`` (clipped to [1e-6, 1 - 1e-6]) or ``"auto"``
            (probability when every value lies in [0, 1]).
        spacing: in-plane pixel size in mm (row, column); default 1 mm.
        features: decoder features ``(1, C, H/4, W/4)`` for losses that need them (see
            :func:`checkpoint_loss_map`); held constant.
        epoch, total_epochs: move a scheduled loss (Kervadec's boundary loss) to this epoch.
        **hparams: the loss's hyper-parameters (default: its paper values).
    Returns:
        :class:`LossMap` with ``(H, W)`` maps.
    """
    pred = _plane(logits_or_probability, index, "the prediction")
    truth = _plane(target, index, "the target") != 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {truth.shape}")
    spacing = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    logits = to_logits(pred, kind)
    name, loss = make_loss(loss_name, hparams, epoch=epoch, total_epochs=total_epochs)
    kwargs = loss_kwargs(name, loss, truth, spacing=spacing, features=features)
    value, grad = value_and_grad(loss, logits, truth, kwargs)
    per_pixel = None
    decompose = _decomposition(name)
    if decompose is not None:
        terms = decompose(logits=logits, target=truth, grad=grad, loss=loss, spacing=spacing)
        if np.isclose(terms.mean(), value, rtol=1e-6, atol=1e-9):
            per_pixel = terms.astype(np.float32)
        else:
            warnings.warn(f"{name}: per-pixel terms (mean {terms.mean():.6g}) do not add up to the loss "
                          f"({value:.6g}); per_pixel left out", stacklevel=2)
    return LossMap(name, value, np.abs(grad).astype(np.float32), per_pixel,
                   index if np.ndim(logits_or_probability) == 3 else None)


def checkpoint_loss_map(
    checkpoint: Any,
    image: np.ndarray,
    target: np.ndarray,
    loss_name: str,
    *,
    index: int | None = None,
    spacing: Sequence[float] | None = None,
    device: str = "cpu",
    epoch: int | None = None,
    total_epochs: int | None = None,
    **hparams: Any,
) -> LossMap:
    """:func:`loss_map` of a checkpoint's own prediction on a grey image, with its decoder features.

    The image (``(H, W)``, or ``(Z, H, W)`` with ``index``) is normalised as the card says and
    reflect-padded to the network's size multiple (32, at least 64), as inference does; the target
    is padded the same way. Losses that need decoder features (FESS, SimCLR, InfoNCE, conditional
    boundary) are evaluated on the padded image with the features of
    :func:`napari_segloss.models.forward_with_features` (held constant) and their maps cropped
    back, so their ``value`` is that of the padded image; every other loss is evaluated on the
    cropped logits, exactly as :func:`loss_map` on the prediction would.

    Args:
        checkpoint: a registry name, a card path or a ``LoadedCheckpoint``.
    """
    from napari_segloss.checkpoints import LoadedCheckpoint, load
    from napari_segloss.inference import Segmenter
    from napari_segloss.losses import info, resolve

    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint, device=device)
    volume = np.asarray(image)
    plane = _plane(volume, index, "the image")
    truth = _plane(target, index, "the target") != 0
    if plane.shape != truth.shape:
        raise ValueError(f"image shape {plane.shape} != target shape {truth.shape}")
    model = loaded.model
    param = next(model.parameters())
    segmenter = Segmenter(model, device=param.device, channels=loaded.card.input_channels,
                          normalization=loaded.card.normalization)
    data, _ = segmenter.prepare(volume if volume.ndim == 3 else plane)
    x = torch.from_numpy(data[index if volume.ndim == 3 else 0][None]).to(param.device, param.dtype)
    batch, crop = segmenter.pad(x)
    pads = [(c.start, n - c.stop) for c, n in zip(crop, batch.shape[-2:])]
    with torch.no_grad():
        logits, features = segmenter.forward_features(batch)
    logits_np = logits[0, 0].double().cpu().numpy()
    name = resolve(loss_name)
    common = dict(kind="logits", spacing=spacing, epoch=epoch, total_epochs=total_epochs, **hparams)
    if "features" not in info(name).needs:
        result = loss_map(logits_np[crop], truth, name, **common)
    else:
        padded = loss_map(logits_np, np.pad(truth, pads, mode="reflect"), name, features=features.cpu(), **common)
        result = LossMap(name, padded.value, padded.gradient[crop],
                         None if padded.per_pixel is None else padded.per_pixel[crop])
    return LossMap(result.loss, result.value, result.gradient, result.per_pixel, index if volume.ndim == 3 else None)
