"""How a loss responds to the prediction: per-pixel response curves and over-/under-segmentation.

Response curves (:func:`response_curves`): the loss value and its derivative ``dL/dp`` as the
predicted foreground probability ``p`` of one *probe* pixel sweeps (0, 1), for a tumour pixel
and for a background pixel. The probe sits in a fixed context, so region and boundary losses are
defined:

* ``context="image"`` (default): a 32 x 32 image (1 mm pixels) with a disc of tumour of radius
  5 px centred at (16, 16); every other pixel is predicted at 0.9 on its true class (p = 0.9 in
  the tumour, 0.1 outside). The tumour probe is the disc centre, the background probe is
  (16, 27); both lie 6 px from the other class. Losses that need decoder features get fixed
  seeded features (:func:`napari_segloss.interpret._evaluate.fixed_features`).
* ``context="pixel"``: the probe alone, a 1 x 1 image (the textbook curves: BCE ``-log p``, ...).

BCE, Focal and Dice have closed forms in either context and are computed analytically (context
pixels enter as constants); every other loss is evaluated through its implementation, with
``dL/dp = dL/dz / (p (1 - p))`` by autograd. ``method="autograd"`` forces the latter for all.

Size response (:func:`size_response`): the loss of a confident soft prediction (``confidence``
on the predicted mask, ``1 - confidence`` elsewhere) whose mask is the ground truth eroded
(negative radii: under-segmentation) or dilated (positive radii: over-segmentation) by a disc
of ``|radius|`` pixels (``skimage.morphology``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage import morphology

from napari_segloss.interpret._evaluate import (
    fixed_features,
    loss_kwargs,
    make_loss,
    to_logits,
    value_and_grad,
)
from napari_segloss.losses import info, resolve
from napari_segloss.threads import torch_threads

#: default probabilities of the probe pixel
DEFAULT_PROBABILITIES = np.linspace(0.01, 0.99, 99)
#: side of the "image" context (pixels), tumour disc radius, context confidence
CONTEXT_SIZE, CONTEXT_RADIUS, CONTEXT_CONFIDENCE = 32, 5, 0.9
#: probe positions (row, column) in the "image" context
FOREGROUND_PROBE, BACKGROUND_PROBE = (16, 16), (16, 27)


@dataclass(frozen=True)
class ResponseCurve:
    """One loss's response to the probability ``p`` of a single probe pixel.

    Attributes:
        loss: canonical loss name.
        probabilities: ``(P,)`` probe probabilities.
        fg_value, fg_grad: loss value and ``dL/dp`` ``(P,)`` when the probe is a tumour pixel.
        bg_value, bg_grad: the same for a background probe.
        method: ``"analytic"`` or ``"autograd"``.
        note: why the curves are NaN (a loss that cannot run in this context), else ``""``.
    """

    loss: str
    probabilities: np.ndarray
    fg_value: np.ndarray
    fg_grad: np.ndarray
    bg_value: np.ndarray
    bg_grad: np.ndarray
    method: str
    note: str = ""


@dataclass(frozen=True)
class SizeResponse:
    """Losses of predictions grown or shrunk around the ground truth.

    Attributes:
        radii: ``(R,)`` int disc radii in pixels: < 0 erosion (under-), > 0 dilation (over-segmentation).
        values: per canonical loss name, ``(R,)`` loss values (NaN where the loss failed).
        false_positives, false_negatives: ``(R,)`` pixel counts of each predicted mask.
        confidence: probability given to the predicted mask (``1 - confidence`` elsewhere).
        notes: per loss, why its values are NaN.
    """

    radii: np.ndarray
    values: dict[str, np.ndarray]
    false_positives: np.ndarray
    false_negatives: np.ndarray
    confidence: float
    notes: dict[str, str]


def context_image(context: str, foreground: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``(target bool, context probabilities float64, probe position)`` of a response context."""
    if context == "pixel":
        return np.full((1, 1), foreground), np.full((1, 1), 0.5), (0, 0)
    if context != "image":
        raise ValueError(f"context must be 'image' or 'pixel', got {context!r}")
    rows, cols = np.mgrid[:CONTEXT_SIZE, :CONTEXT_SIZE]
    centre = CONTEXT_SIZE // 2
    target = (rows - centre) ** 2 + (cols - centre) ** 2 <= CONTEXT_RADIUS**2
    prob = np.where(target, CONTEXT_CONFIDENCE, 1.0 - CONTEXT_CONFIDENCE)
    return target, prob, FOREGROUND_PROBE if foreground else BACKGROUND_PROBE


# ------------------------------------------------------------------ closed forms (context = constants)


def _bce_terms(p: np.ndarray, y: np.ndarray, _: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel BCE and its derivative in p."""
    return np.where(y, -np.log(p), -np.log1p(-p)), np.where(y, -1.0 / p, 1.0 / (1.0 - p))


def _focal_terms(p: np.ndarray, y: np.ndarray, hp: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel focal loss ``-a_t (1 - p_t)^g log p_t`` and its derivative in p."""
    alpha, gamma = hp["alpha"], float(hp["gamma"])
    pt = np.where(y, p, 1.0 - p)
    weight = 1.0 if alpha is None else np.where(y, alpha, 1.0 - alpha)
    modulator = (1.0 - pt) ** gamma
    value = -weight * modulator * np.log(pt)
    d_pt = weight * (gamma * (1.0 - pt) ** (gamma - 1.0) * np.log(pt) - modulator / pt)
    return value, np.where(y, d_pt, -d_pt)


def _pixel_mean(terms: Callable[..., tuple[np.ndarray, np.ndarray]]):
    """Closed form of a pixel-mean loss: ``(C + f(p)) / N`` with C the context's terms."""

    def curve(p: np.ndarray, target: np.ndarray, prob: np.ndarray, probe: tuple[int, int],
              hp: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        others = np.ones(target.shape, bool)
        others[probe] = False
        constant = terms(prob[others], target[others], hp)[0].sum()
        value, grad = terms(p, np.full(p.shape, target[probe]), hp)
        return (constant + value) / target.size, grad / target.size

    return curve


def _dice_curve(p: np.ndarray, target: np.ndarray, prob: np.ndarray, probe: tuple[int, int],
                hp: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Soft Dice loss ``1 - (2TP + s) / (2TP + FP + FN + s)`` with the probe's share of TP, FP, FN."""
    s = hp["smooth"]
    others = np.ones(target.shape, bool)
    others[probe] = False
    y, q = target[others], prob[others]
    tp0, fp0, fn0 = (q * y).sum(), (q * ~y).sum(), ((1 - q) * y).sum()
    if target[probe]:
        num, den, d_num, d_den = 2 * (tp0 + p) + s, 2 * (tp0 + p) + fp0 + fn0 + 1 - p + s, 2.0, 1.0
    else:
        num, den, d_num, d_den = np.full_like(p, 2 * tp0 + s), 2 * tp0 + fp0 + p + fn0 + s, 0.0, 1.0
    return 1.0 - num / den, -(d_num * den - num * d_den) / den**2


_CLOSED_FORMS = {"bce": _pixel_mean(_bce_terms), "focal": _pixel_mean(_focal_terms), "dice": _dice_curve}


# ------------------------------------------------------------------ through the implementation


def _autograd_curve(name: str, hp: Mapping[str, Any], p: np.ndarray, target: np.ndarray, prob: np.ndarray,
                    probe: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    _, loss = make_loss(name, hp)
    features = fixed_features(target.shape) if "features" in info(name).needs else None
    kwargs = loss_kwargs(name, loss, target, spacing=(1.0, 1.0), features=features)
    logits = to_logits(prob, "probability")
    values, grads = np.empty_like(p), np.empty_like(p)
    for k, pk in enumerate(p):
        logits[probe] = np.log(pk) - np.log1p(-pk)
        values[k], grad = value_and_grad(loss, logits, target, kwargs)
        grads[k] = grad[probe] / (pk * (1.0 - pk))
    return values, grads


def response_curves(
    loss_names: Sequence[str],
    probabilities: Sequence[float] | np.ndarray = DEFAULT_PROBABILITIES,
    *,
    context: str = "image",
    method: str = "auto",
    hparams: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ResponseCurve]:
    """Loss value and ``dL/dp`` against the probability of one tumour and one background pixel.

    Args:
        loss_names: catalogue names or aliases.
        probabilities: probe probabilities, strictly inside (0, 1).
        context: ``"image"`` or ``"pixel"`` (see the module docstring).
        method: ``"auto"`` (closed forms for BCE, Focal, Dice) or ``"autograd"`` (all through
            the implementation).
        hparams: per loss name, hyper-parameters overriding the paper defaults.
    Returns:
        ``{canonical name: ResponseCurve}`` in the order given. A loss that cannot run in the
        context (e.g. missing auxiliary weights) gets NaN curves and a ``note``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not ((p > 0) & (p < 1)).all():
        raise ValueError("probabilities must be a non-empty 1-D sequence strictly inside (0, 1)")
    if method not in ("auto", "autograd"):
        raise ValueError(f"method must be 'auto' or 'autograd', got {method!r}")
    hparams = hparams or {}
    out: dict[str, ResponseCurve] = {}
    for given in loss_names:
        name = resolve(given)
        hp = dict(hparams.get(given, hparams.get(name, {})))
        closed = _CLOSED_FORMS.get(name) if method == "auto" else None
        curves, note = [], ""
        for foreground in (True, False):
            target, prob, probe = context_image(context, foreground)
            try:
                if closed is not None:
                    full = {**info(name).defaults, **hp}
                    make_loss(name, hp)  # validates the hyper-parameters
                    curves += list(closed(p, target, prob, probe, full))
                else:
                    with torch_threads(1):  # tiny images: intra-op threads only add overhead
                        curves += list(_autograd_curve(name, hp, p, target, prob, probe))
            except (ValueError, RuntimeError, OSError, IndexError) as exc:
                note = f"{type(exc).__name__}: {exc}"
                curves += [np.full_like(p, np.nan), np.full_like(p, np.nan)]
        out[name] = ResponseCurve(name, p.copy(), *curves, method="analytic" if closed else "autograd", note=note)
    return out


def grown_mask(truth: np.ndarray, radius: int) -> np.ndarray:
    """``truth`` dilated (radius > 0) or eroded (radius < 0) by a disc of ``|radius|`` pixels."""
    if radius == 0:
        return truth.copy()
    footprint = morphology.disk(abs(int(radius)))
    op = morphology.dilation if radius > 0 else morphology.erosion
    return op(truth, footprint)


def size_response(
    loss_names: Sequence[str],
    truth_mask: np.ndarray,
    radii: Sequence[int] = tuple(range(-5, 6)),
    *,
    confidence: float = 0.99,
    spacing: Sequence[float] | None = None,
    hparams: Mapping[str, Mapping[str, Any]] | None = None,
) -> SizeResponse:
    """Each loss of a confident soft prediction eroded/dilated around the 2-D ground truth.

    Args:
        loss_names: catalogue names or aliases.
        truth_mask: ``(H, W)`` ground truth (non-zero = tumour).
        radii: disc radii in pixels (negative: erosion, positive: dilation).
        confidence: probability of the predicted mask, in (0.5, 1); background gets ``1 - confidence``.
        spacing: pixel size in mm (row, column), default 1 mm.
        hparams: per loss name, hyper-parameters overriding the paper defaults.
    Returns:
        :class:`SizeResponse`.
    """
    truth = np.asarray(truth_mask) != 0
    if truth.ndim != 2:
        raise ValueError(f"truth_mask must be 2-D (H, W), got shape {truth.shape}")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0.5, 1), got {confidence}")
    radii_arr = np.asarray(list(radii), dtype=np.int64)
    spacing = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    masks = [grown_mask(truth, int(r)) for r in radii_arr]
    hparams = hparams or {}
    values: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    for given in loss_names:
        name = resolve(given)
        row = np.full(len(masks), np.nan)
        try:
            _, loss = make_loss(name, hparams.get(given, hparams.get(name, {})))
            features = fixed_features(truth.shape) if "features" in info(name).needs else None
            kwargs = loss_kwargs(name, loss, truth, spacing=spacing, features=features)
            with torch_threads(1):  # tiny images: intra-op threads only add overhead
                for k, mask in enumerate(masks):
                    logits = to_logits(np.where(mask, confidence, 1.0 - confidence), "probability")
                    row[k] = value_and_grad(loss, logits, truth, kwargs)[0]
        except (ValueError, RuntimeError, OSError, IndexError) as exc:
            notes[name] = f"{type(exc).__name__}: {exc}"
        values[name] = row
    fp = np.array([int((m & ~truth).sum()) for m in masks])
    fn = np.array([int((~m & truth).sum()) for m in masks])
    return SizeResponse(radii_arr, values, fp, fn, float(confidence), notes)
