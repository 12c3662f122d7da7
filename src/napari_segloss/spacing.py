"""Voxel spacing (mm per spatial axis): validation, and the one rule for an *unknown* pixel size.

Shared by metrics, writers and losses. Where the pixel size is unknown (PNG/JPG, a TIFF without a
physical unit: :attr:`napari_segloss.io.Scan.spacing_known` is False; a napari layer whose
in-plane scale is 1, napari's default), the core is given ``spacing=None``: distances, areas and
volumes are then measured in pixels (1 per pixel) and labelled "px", "px²", "voxels"
(:func:`napari_segloss.metrics.format_value`), never "mm".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_spacing(spacing: Sequence[float] | np.ndarray | None, ndim: int) -> tuple[float, ...]:
    """Spacing in mm, one float per spatial axis; ``None`` (unknown) gives 1.0 on each of ``ndim``
    axes, so sizes come out in pixels.

    Raises ``ValueError`` for a wrong number of values or non-positive / non-finite values.
    """
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
    if len(values) != ndim:
        raise ValueError(f"spacing {values} has {len(values)} values; it needs one value (mm) for each of the {ndim} spatial axes")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be positive finite mm values, got {values}")
    return values


def known_spacing(spacing: Sequence[float], known: bool = True) -> tuple[float, ...] | None:
    """``spacing`` as a tuple of floats when the pixel size is ``known``, else None (unknown).

    For a :class:`napari_segloss.io.Scan`: ``known_spacing(scan.spacing, scan.spacing_known)``.
    """
    return tuple(float(s) for s in spacing) if known else None


def layer_spacing(scale: Sequence[float]) -> tuple[float, ...] | None:
    """mm per axis from a napari layer's ``scale``; None (unknown) when the in-plane scale is 1 on
    both axes, which is napari's default and what a PNG/JPG opens with.

    A scan whose pixels really are 1 mm is then reported in pixels too (the same numbers).
    """
    values = tuple(float(s) for s in scale)
    return None if all(abs(s - 1.0) < 1e-9 for s in values[-2:]) else values


def spacing_text(spacing: Sequence[float] | None) -> str:
    """Spacing as CSV text, ``"2x0.8x0.8"`` (mm), or ``"unknown"`` for None."""
    return "unknown" if spacing is None else "x".join(f"{float(s):g}" for s in spacing)
