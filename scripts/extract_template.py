"""One-off: crop and compress the MNI ICBM152 2009 template into the package (needs nilearn).

Run once by a developer, never at run time (the runtime does not import nilearn)::

    .venv/bin/python scripts/extract_template.py

Source: the skull-stripped T1 of the MNI ICBM152 2009a symmetric template that nilearn ships in
its wheel (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, 1 mm,
197x233x189, RAS+). Output: ``src/napari_segloss/data/template/mni152_t1.npz`` on one 1 mm grid,
axes in the template's order (0: x, +x = subject's right; 1: y, + anterior; 2: z, + superior):

* ``t1`` uint8: T1 intensity; intracranial voxels outside the brain (cisterns, sulcal CSF, the
  sella) get a CSF grey level so the brain edge does not fall to black.
* ``icv_sdf`` int8: signed distance to the intracranial-volume surface, positive inside, in
  ``sdf_step_mm`` units (saturates at ±31.75 mm).
* ``head_sdf`` int8: signed distance to a synthetic head surface (the intracranial volume dilated
  12 mm, joined to a column under it that narrows into a neck below the temporal lobes), same units.
* ``origin_mm`` (MNI coordinate of voxel (0, 0, 0)), ``spacing_mm``, ``sella_mm``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.datasets import __file__ as _nilearn_datasets
from scipy import ndimage as ndi

SOURCE = Path(_nilearn_datasets).parent / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
OUT = Path(__file__).resolve().parents[1] / "src" / "napari_segloss" / "data" / "template" / "mni152_t1.npz"
MARGIN = 24  # mm of room around the intracranial volume for the synthetic skull and scalp
CSF_LEVEL = 45  # template grey level given to intracranial voxels outside the brain
SDF_STEP = 0.25  # mm per int8 unit
SELLA_MM = np.array([0.0, -2.0, -31.0])  # centre of the pituitary fossa (MNI, read off the midline)
SELLA_RADII = np.array([7.0, 7.0, 6.0])  # mm; fossa plus the suprasellar cistern above it
SCALP_MM = 12.0  # skull plus scalp around the intracranial volume
NECK_TOP_MM = -40.0  # MNI z below which the head column narrows into the neck
NECK_TAPER = 0.5  # mm of narrowing per mm downwards


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius**2


def _sdf(mask: np.ndarray) -> np.ndarray:
    inside = ndi.distance_transform_edt(mask)
    outside = ndi.distance_transform_edt(~mask)
    return np.clip(np.round((inside - outside) / SDF_STEP), -127, 127).astype(np.int8)


def main() -> None:
    img = nib.load(SOURCE)
    affine = img.affine
    assert np.allclose(np.diag(affine)[:3], 1.0), "expected a 1 mm RAS+ template"
    t1 = np.asarray(img.dataobj).astype(np.uint8)
    brain = ndi.binary_fill_holes(t1 > 0)

    # pad first so that closing/dilation and the skull have room (the brainstem touches z = 0)
    pad = MARGIN
    t1 = np.pad(t1, pad)
    brain = np.pad(brain, pad)
    origin = affine[:3, 3] - pad

    grid = np.stack(np.meshgrid(*[np.arange(n) + o for n, o in zip(t1.shape, origin)], indexing="ij"), -1)
    sella = (((grid - SELLA_MM) / SELLA_RADII) ** 2).sum(-1) <= 1.0
    # a column joining the fossa to the brain above it (pituitary stalk and suprasellar cistern)
    stalk = (((grid[..., :2] - SELLA_MM[:2]) / SELLA_RADII[:2] * 1.6) ** 2).sum(-1) <= 1.0
    stalk &= (grid[..., 2] >= SELLA_MM[2]) & (grid[..., 2] <= SELLA_MM[2] + 22)
    icv = ndi.binary_closing(brain, structure=_ball(5))
    icv = ndi.binary_fill_holes(icv | sella | stalk)
    icv = ndi.distance_transform_edt(~icv) <= 1.5  # subarachnoid space around the cortex
    icv[..., : pad - 6] = False  # stop just below the brainstem cut

    t1 = np.where(icv & (t1 < CSF_LEVEL), np.maximum(t1, CSF_LEVEL), t1).astype(np.uint8)
    t1[~icv] = 0

    # head: the intracranial volume extended downwards as a column (skull base, face), narrowing
    # into a neck below the temporal lobes, all dilated by the skull and scalp
    column = np.flip(np.logical_or.accumulate(np.flip(icv, axis=2), axis=2), axis=2)
    top = int(round(NECK_TOP_MM - origin[2]))
    section = ndi.distance_transform_edt(column[..., top])
    for z in range(top):
        column[..., z] = section > NECK_TAPER * (top - z)
    head = ndi.distance_transform_edt(~(column | icv)) <= SCALP_MM

    # crop to the head's bounding box
    idx = np.nonzero(head)
    lo = [max(int(i.min()) - 2, 0) for i in idx]
    hi = [int(i.max()) + 3 for i in idx]
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    t1, icv, head = t1[crop], icv[crop], head[crop]
    origin = origin + np.array(lo)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        t1=t1,
        icv_sdf=_sdf(icv),
        head_sdf=_sdf(head),
        origin_mm=origin.astype(np.float32),
        spacing_mm=np.ones(3, np.float32),
        sdf_step_mm=np.float32(SDF_STEP),
        sella_mm=SELLA_MM.astype(np.float32),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB), grid {t1.shape}, origin {origin} mm")


if __name__ == "__main__":
    main()
