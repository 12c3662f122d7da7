"""npe2 writer: save a Labels layer (prediction, difference map) as PNG, TIFF or NIfTI.

napari's built-in labels writer has no PNG and drops the spacing; this one goes through
:func:`napari_segloss.io.writers.write_array` (atomic, TIFF/NIfTI keep the layer's scale in mm).
A layer that carries its scan's placement (``metadata["affine_lps"]``: a mask read from a NIfTI
or DICOM file, or one the widget predicted on such a scan) is saved to NIfTI with the scan's
orientation and origin, so that it overlays the scan in any other viewer.
napari's save dialog asks before replacing a file, so the writer replaces an existing file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_segloss.io.geometry import placement
from napari_segloss.io.writers import write_array


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer; returns the written path.

    Args:
        path: ``.png`` (2D), ``.tif``/``.tiff`` or ``.nii``/``.nii.gz`` (2D or 3D).
        data: the layer's labels, ``(H, W)`` or ``(Z, H, W)``. A 0/1 mask is saved as a mask
            (0/255 in PNG, 0/1 in TIFF/NIfTI); other label values are kept.
        meta: the layer attributes napari passes; ``scale`` (mm per axis) becomes the spacing,
            ``metadata["affine_lps"]`` / ``["axcodes_on_disk"]`` the NIfTI's affine and voxel order.
    """
    arr = np.asarray(data)
    if arr.size and arr.dtype != bool and arr.min() >= 0 and arr.max() <= 1:
        arr = arr.astype(bool)
    scale = meta.get("scale")
    spacing = None if scale is None or len(scale) != arr.ndim else tuple(float(s) for s in scale)
    where = placement(meta.get("metadata") or {})
    return [str(write_array(path, arr, spacing=spacing, affine=where.get("affine_lps"),
                            axcodes=where.get("axcodes_on_disk"), overwrite=True))]
