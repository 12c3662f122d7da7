"""The slice of a volume the viewer shows, and a result's metrics on it (the metrics panel's
"slice" column)."""

from __future__ import annotations

import napari
import numpy as np
from napari.layers import Layer

from napari_segloss.derived import slice_metrics
from napari_segloss.napari._results import RunResult


def shown_slice(viewer: napari.Viewer, layer: Layer) -> tuple[int, int] | None:
    """``(axis, index)`` of the 2D slice of a 3D ``layer`` the viewer shows, or None (3D view, the
    layer not 3D, or the viewer's point outside the layer)."""
    dims = viewer.dims
    if layer.ndim != 3 or dims.ndisplay == 3:
        return None
    offset = dims.ndim - layer.ndim
    axes = [axis - offset for axis in dims.not_displayed if axis >= offset]
    if len(axes) != 1:
        return None
    axis = axes[0]
    index = int(np.round(layer.world_to_data(dims.point)[axis]))
    return (axis, index) if 0 <= index < layer.data.shape[axis] else None


def slice_values(viewer: napari.Viewer, source: Layer | None, result: RunResult) -> tuple[str, dict] | None:
    """``("slice <i>", metrics)`` of the slice of a 3D result (with ground truth) the viewer shows
    on its ``source`` layer, or None (areas in mm², by the layer's scale)."""
    if result.ndim != 3 or result.truth is None or source is None:
        return None
    where = shown_slice(viewer, source)
    if where is None:
        return None
    axis, index = where
    label = f"slice {index}" if axis == 0 else f"slice {index} (axis {axis})"
    return label, slice_metrics(result.derived.mask, result.truth, result.spacing, axis, index)
