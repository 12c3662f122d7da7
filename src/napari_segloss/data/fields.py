"""Random smooth fields on regular grids (elastic deformation, bias field, textures).

A field is a sum of Gaussian bumps with independent N(0, 1) weights on a lattice of nodes spaced
``length_mm`` apart. Evaluated on a grid it is separable (one small matrix per axis), so a
256x256 field costs well under a millisecond and a chunk of a volume can be evaluated alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SmoothField:
    """A random smooth field with ``channels`` components and unit variance at every point.

    Args:
        rng: the generator that draws the node weights.
        extent_mm: ``(low, high)`` in mm for each grid axis the field will be evaluated on.
        length_mm: correlation length (node spacing) in mm.
        channels: number of independent components.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        extent_mm: Sequence[tuple[float, float]],
        length_mm: float,
        channels: int = 1,
    ) -> None:
        self.length = float(length_mm)
        self.nodes = [
            np.arange(lo - self.length, hi + 1.5 * self.length, self.length, dtype=np.float32)
            for lo, hi in extent_mm
        ]
        self.weights = rng.standard_normal([channels] + [len(n) for n in self.nodes], dtype=np.float32)

    def _basis(self, axis: int, coords_mm: np.ndarray) -> np.ndarray:
        d = np.asarray(coords_mm, np.float32)[:, None] - self.nodes[axis][None, :]
        b = np.exp(np.float32(-0.5 / (0.7 * self.length) ** 2) * d * d)
        b /= np.sqrt((b * b).sum(1, keepdims=True))  # unit variance at every point
        return b

    def __call__(self, *axes_mm: np.ndarray) -> np.ndarray:
        """Evaluate on the grid spanned by 1D mm coordinates per axis → (channels, n0, n1, ...)."""
        bases = [self._basis(axis, coords) for axis, coords in enumerate(axes_mm)]
        out = self.weights
        # contract the axis that shrinks the array most first (e.g. the few slices of a slab)
        for axis in sorted(range(len(bases)), key=lambda a: bases[a].shape[0] / bases[a].shape[1]):
            out = np.moveaxis(np.tensordot(bases[axis], out, axes=([1], [axis + 1])), 0, axis + 1)
        return np.ascontiguousarray(out)
