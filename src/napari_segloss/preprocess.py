"""Intensity normalisation and channel handling shared by training and inference.

The model card's ``normalization`` entry names the method; training and inference both call
:func:`normalize` with it, so a checkpoint always sees the intensities it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: the normalisation every bundled checkpoint is trained with
DEFAULT_NORMALIZATION: dict[str, Any] = {"method": "percentile", "low": 0.5, "high": 99.5}

_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma, as PIL "L"


def to_grayscale(image: np.ndarray, *, rgb: bool | None = None) -> np.ndarray:
    """Collapse a trailing colour axis (3 = RGB, 4 = RGBA) to luminance; grey input unchanged.

    Args:
        image: ``(..., H, W)`` grey or ``(..., H, W, C)`` colour.
        rgb: whether the last axis is colour; ``None`` guesses (last axis of length 3 or 4 on an
            array of 3+ dims).
    Returns:
        float32 array without the colour axis.
    """
    arr = np.asarray(image)
    if rgb is None:
        rgb = arr.ndim >= 3 and arr.shape[-1] in (3, 4)
    if rgb:
        arr = arr[..., :3].astype(np.float32) @ _RGB_WEIGHTS
    return arr.astype(np.float32, copy=False)


def normalize(image: np.ndarray, spec: Mapping[str, Any] | None = None) -> np.ndarray:
    """Map raw intensities (uint8/uint16 MR, signed CT, float) to float32 in about [0, 1].

    ``spec["method"]``:
      * ``"percentile"``: clip to the ``low``/``high`` percentiles (robust to 16-bit outliers and
        hot pixels), then scale to [0, 1]. Computed over the whole array (slice or volume).
      * ``"minmax"``: scale min..max to [0, 1].
      * ``"none"``: cast only.
    A constant image maps to zeros. Shape is preserved.
    """
    spec = dict(DEFAULT_NORMALIZATION if spec is None else spec)
    method = spec.get("method", "percentile")
    arr = np.asarray(image, dtype=np.float32)
    if method == "none":
        return arr
    if method == "percentile":
        sample = arr if arr.size <= 4_000_000 else arr.ravel()[:: arr.size // 4_000_000 + 1]
        low, high = (float(v) for v in np.percentile(sample, [float(spec.get("low", 0.5)), float(spec.get("high", 99.5))]))
    elif method == "minmax":
        low, high = float(arr.min()), float(arr.max())
    else:
        raise ValueError(f"unknown normalization method {method!r}; valid: percentile, minmax, none")
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros_like(arr)
    out = np.clip(arr, np.float32(low), np.float32(high))
    out -= low
    out *= 1.0 / (high - low)
    return out
