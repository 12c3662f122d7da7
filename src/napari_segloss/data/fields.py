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
        *rest, last = (self._basis(axis, coords) for axis, coords in enumerate(axes_mm))
        out = self.weights @ last.T  # one GEMM for the last axis: (channels, N0, ..., n_last)
        done = last.shape[0]  # size of the already evaluated trailing grid axes
        for axis in reversed(range(len(rest))):
            lead = out.shape[: axis + 2]  # (channels, N0, ..., N_axis)
            out = np.matmul(rest[axis], out.reshape(int(np.prod(lead[:-1])), lead[-1], done))
            done *= rest[axis].shape[0]
            out = out.reshape(*lead[:-1], done)
        return out.reshape(self.weights.shape[0], *(len(a) for a in axes_mm))
