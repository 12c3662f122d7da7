"""The bundled anatomy: MNI ICBM152 2009 T1 template, cropped, with intracranial and head distances.

``template/mni152_t1.npz`` is written once by ``scripts/extract_template.py`` (from nilearn's
copy of the template; see ``template/NOTICE.txt`` for the template's copyright). All coordinates
here are template millimetres (MNI, RAS+: +x subject's right, +y anterior, +z superior).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

TEMPLATE_FILE = Path(__file__).resolve().parent / "template" / "mni152_t1.npz"

#: template grey level of white matter (median of the 2009 T1 over white matter)
WM_LEVEL = 220.0


@dataclass(frozen=True)
class Template:
    """Template volumes on one 1 mm grid (axes x, y, z) and the places tumours grow from.

    ``t1`` uint8 T1 (0 outside the intracranial volume); ``icv_sdf`` / ``head_sdf`` int8 signed
    distances (positive inside) to the intracranial-volume and head surfaces in ``sdf_step``
    mm units. ``origin`` is the mm coordinate of voxel (0, 0, 0).
    """

    t1: np.ndarray
    icv_sdf: np.ndarray
    head_sdf: np.ndarray
    origin: np.ndarray
    sdf_step: float
    sella: np.ndarray
    centre: np.ndarray = field(init=False)
    white_matter: np.ndarray = field(init=False)
    dura: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        inside = self.icv_sdf > 0
        idx = np.nonzero(inside)
        lo = np.array([i.min() for i in idx], float)
        hi = np.array([i.max() for i in idx], float)
        object.__setattr__(self, "centre", self.origin + (lo + hi) / 2.0)
        rng = np.random.default_rng(0)
        # glioma seeds: supratentorial white matter at least 12 mm deep
        deep = (self.t1 > 0.88 * WM_LEVEL) & (self.icv_sdf > 12.0 / self.sdf_step)
        deep[..., : int(-22 - self.origin[2])] = False
        object.__setattr__(self, "white_matter", self._points(deep, rng, 4000))
        # meningioma seeds: the inner dural surface above the skull base
        surface = (self.icv_sdf > 0) & (self.icv_sdf <= 1.0 / self.sdf_step)
        surface[..., : int(-30 - self.origin[2])] = False
        object.__setattr__(self, "dura", self._points(surface, rng, 4000))

    def _points(self, mask: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        pts = np.argwhere(mask)
        pts = pts[rng.choice(len(pts), size=min(n, len(pts)), replace=False)]
        return (pts + self.origin).astype(np.float64)

    def _index(self, points_mm: np.ndarray) -> np.ndarray:
        """(3, ...) mm → (3, N) voxel coordinates for ``map_coordinates``."""
        return points_mm.reshape(3, -1) - self.origin.astype(points_mm.dtype)[:, None]

    def _sample(self, volume: np.ndarray, idx: np.ndarray, cval: float) -> np.ndarray:
        return ndi.map_coordinates(volume, idx, output=np.float32, order=1, prefilter=False, cval=cval)

    def sample_t1(self, points_mm: np.ndarray) -> np.ndarray:
        """T1 at ``points_mm`` (3, ...), linear interpolation, in white-matter units (WM ≈ 1) → (...)."""
        out = self._sample(self.t1, self._index(points_mm), 0.0)
        out *= 1.0 / WM_LEVEL
        return out.reshape(points_mm.shape[1:])

    def sample_icv(self, points_mm: np.ndarray) -> np.ndarray:
        """Signed distance (mm, positive inside) to the intracranial surface at ``points_mm`` (3, ...)."""
        out = self._sample(self.icv_sdf, self._index(points_mm), -127.0)
        out *= self.sdf_step
        return out.reshape(points_mm.shape[1:])

    def sample_head(self, points_mm: np.ndarray) -> np.ndarray:
        """Signed distance (mm, positive inside) to the head surface; the neck continues below the grid."""
        idx = self._index(points_mm)
        np.maximum(idx[2], 0.0, out=idx[2])  # below the crop the head is a column (neck)
        out = self._sample(self.head_sdf, idx, -127.0)
        out *= self.sdf_step
        return out.reshape(points_mm.shape[1:])

    def icv_normal(self, point_mm: np.ndarray) -> np.ndarray:
        """Unit outward normal of the intracranial surface near ``point_mm`` (3,)."""
        offsets = np.concatenate([np.eye(3), -np.eye(3)]) * 2.0
        d = self.sample_icv((point_mm[None, :] + offsets).T)
        grad = d[3:] - d[:3]  # outward = decreasing distance
        norm = np.linalg.norm(grad)
        return grad / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The bundled template, loaded once per process (about 25 MB in memory)."""
    with np.load(TEMPLATE_FILE) as z:
        return Template(
            t1=np.ascontiguousarray(z["t1"]),
            icv_sdf=np.ascontiguousarray(z["icv_sdf"]),
            head_sdf=np.ascontiguousarray(z["head_sdf"]),
            origin=z["origin_mm"].astype(np.float64),
            sdf_step=float(z["sdf_step_mm"]),
            sella=z["sella_mm"].astype(np.float64),
        )
