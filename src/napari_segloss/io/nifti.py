"""NIfTI (``.nii``, ``.nii.gz``) reading through nibabel, an optional dependency.

The volume is reoriented to LPS voxel axes, the DICOM convention (columns towards the patient's
left, rows towards posterior, slices towards superior), then returned in numpy order
``(S, P, L)`` = ``(Z, Y, X)``: an axial slice looks as it does in a DICOM viewer and a NIfTI
written from a DICOM series (ITK/SimpleITK, or :func:`napari_segloss.io.writers.write_array`)
reads back in the series' own array order. Spacing comes from the affine's voxel sizes.
The header's shape is checked against the memory budget before the voxels are read; other
failures reach callers as ScanReadError through the format registry (:mod:`napari_segloss.io.formats`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_segloss.io import Scan, ScanReadError
from napari_segloss.io.budget import check_voxel_budget
from napari_segloss.io.formats import stem_of
from napari_segloss.io.geometry import lps_nifti_affine
from napari_segloss.io.raster import as_labels, is_mask_name


def read_nifti(path: str | Path) -> list[Scan]:
    """Read a 2D or 3D NIfTI image (a 4D one with a single volume too) as one Scan.

    ``kind="labels"`` for mask file names (``x_mask.nii.gz``, ``x_seg.nii.gz``). Raises
    ScanReadError naming the file for unreadable files, 4D series and a missing nibabel.
    """
    path = Path(path)
    try:
        import nibabel as nib
        from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
    except ImportError:
        raise ScanReadError(f"{path}: reading NIfTI needs the 'nibabel' package (pip install nibabel)") from None
    img = nib.load(path)
    check_voxel_budget(img.shape, path)
    data = np.asanyarray(img.dataobj)
    two_d = data.ndim == 2
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if two_d:
        data = data[..., None]
    if data.ndim != 3:
        raise ScanReadError(f"{path}: only 2D/3D NIfTI images are supported, this one has shape {data.shape}")
    transform = ornt_transform(io_orientation(img.affine), axcodes2ornt(("L", "P", "S")))
    affine = img.affine @ inv_ornt_aff(transform, data.shape)  # the shape before reorienting
    data = apply_orientation(data, transform)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # mm per (L, P, S) voxel axis
    corner_lps = affine[:3, 3] * np.array([-1.0, -1.0, 1.0])  # RAS world -> LPS
    data = np.ascontiguousarray(data.transpose(2, 1, 0))
    spacing = tuple(float(v) for v in voxel[::-1])
    origin = tuple(float(v) + 0.0 for v in corner_lps[::-1])  # + 0.0: no negative zeros
    if two_d:
        data, spacing, origin = data[0], spacing[1:], origin[1:]
    mask = is_mask_name(path)
    if mask:
        data = as_labels(data)
    metadata = {
        "format": "nifti",
        "axcodes_on_disk": "".join(nib.aff2axcodes(img.affine)),
        "affine": [[float(v) for v in row] for row in img.affine],
        "affine_lps": lps_nifti_affine(affine).tolist(),  # io.geometry's convention: numpy index -> LPS
    }
    return [Scan(data, spacing, origin, stem_of(path.name), metadata, "labels" if mask else "image")]
