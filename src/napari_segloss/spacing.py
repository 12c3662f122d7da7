"""Validation of voxel spacing (mm per spatial axis), shared by metrics, writers and losses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_spacing(spacing: Sequence[float] | np.ndarray | None, ndim: int) -> tuple[float, ...]:
    """Spacing in mm, one float per spatial axis; ``None`` means 1 mm on each of ``ndim`` axes.

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
