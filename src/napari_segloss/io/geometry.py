"""Voxel-to-patient geometry of a scan: the one affine the readers record and the writers use.

Convention: ``metadata["affine_lps"]`` of a :class:`~napari_segloss.io.Scan` (and so of its
napari layer) is a 4x4 matrix mapping the numpy voxel index ``(z, y, x, 1)`` (a 2D scan: index
``(0, y, x, 1)``) to patient coordinates in mm, DICOM's LPS axes (x towards the patient's left,
y posterior, z superior). DICOM series and NIfTI files have one; PNG/TIFF scans do not.

NIfTI stores the same geometry with voxel axes ``(i, j, k) = (x, y, z)`` and RAS world axes;
:func:`lps_nifti_affine` converts either way (the conversion is its own inverse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: LPS <-> RAS (negate x and y) and numpy (z, y, x) <-> NIfTI (i, j, k) = (x, y, z)
_FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])
_REVERSE_AXES = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def dicom_affine(
    position: Sequence[float], orientation: Sequence[float], spacing: Sequence[float]
) -> np.ndarray:
    """The LPS affine of a DICOM stack.

    Args:
        position: ImagePositionPatient (mm) of the first voxel of the first slice.
        orientation: ImageOrientationPatient: row direction (increasing x index), then column
            direction (increasing y index) cosines.
        spacing: ``(dz, dy, dx)`` mm: step between slices along ``cross(row, col)``, row
            spacing, column spacing.
    Returns:
        ``(4, 4)`` float array, numpy index ``(z, y, x, 1)`` -> LPS mm.
    """
    iop = np.asarray(orientation, dtype=float)
    row, col = iop[:3], iop[3:]
    dz, dy, dx = (float(s) for s in spacing)
    affine = np.eye(4)
    affine[:3, 0] = np.cross(row, col) * dz
    affine[:3, 1] = col * dy
    affine[:3, 2] = row * dx
    affine[:3, 3] = np.asarray(position, dtype=float)
    return affine


def lps_nifti_affine(affine: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """An LPS affine over numpy ``(z, y, x)`` as a NIfTI affine (RAS over ``(i, j, k)``), or back."""
    return _FLIP_XY @ np.asarray(affine, dtype=float) @ _REVERSE_AXES


#: the metadata keys that place a scan's voxels in the patient; a mask derived from the scan
#: (same shape) carries them, so that it is written back with the scan's geometry
PLACEMENT_KEYS = ("affine_lps", "axcodes_on_disk")


def placement(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`PLACEMENT_KEYS` that ``metadata`` holds (the others left out)."""
    return {key: metadata[key] for key in PLACEMENT_KEYS if metadata.get(key) is not None}


def scan_affine(metadata: Mapping[str, Any]) -> np.ndarray | None:
    """``metadata["affine_lps"]`` as a ``(4, 4)`` array, or None when the scan has no geometry."""
    value = metadata.get("affine_lps")
    if value is None:
        return None
    affine = np.asarray(value, dtype=float)
    return affine if affine.shape == (4, 4) and np.all(np.isfinite(affine)) else None
