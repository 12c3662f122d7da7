"""MR acquisition effects: partial-volume blur, Rician noise, 16-bit quantisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi


def acquire(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    blur_mm: Sequence[float],
    spacing: Sequence[float],
    wm_level: float,
    snr: float,
) -> np.ndarray:
    """Turn a noiseless image in white-matter units into a uint16 magnitude image.

    Args:
        image: (H, W) or (D, H, W) float32 ideal intensities (WM ≈ 1, bias field applied).
        blur_mm: partial-volume blur, Gaussian sigma in mm per axis.
        spacing: mm per pixel per axis.
        wm_level: stored value of white matter (e.g. 600–2000).
        snr: white-matter signal over the noise sigma of each complex channel.
    Returns:
        uint16 array, ``sqrt((s + n1)² + n2²)`` with n1, n2 ~ N(0, (wm_level / snr)²): Rician in
        tissue, Rayleigh in air, as in a magnitude reconstruction.
    """
    sigma_px = [b / s for b, s in zip(blur_mm, spacing)]
    image = ndi.gaussian_filter(image, sigma_px, mode="nearest", truncate=3.0)
    image *= wm_level
    noise = rng.standard_normal((2, *image.shape), dtype=np.float32)
    noise *= wm_level / snr
    image += noise[0]
    np.square(image, out=image)
    image += np.square(noise[1])
    np.sqrt(image, out=image)
    return np.clip(np.rint(image), 0, 65535).astype(np.uint16)
