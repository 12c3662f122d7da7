"""npe2 reader: drag and drop DICOM (files, series folders, DICOMDIR), PNG/JPG/BMP, TIFF, NIfTI.

A thin wrapper around :func:`napari_segloss.io.read_scans`: each Scan becomes one layer with
``scale`` = spacing (mm), ``translate`` = origin (mm), contrast limits from the DICOM window and
the scan's metadata. Masks (``*_mask.png``, DICOM SEG, ...) open as Labels layers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_segloss.io import Scan, formats, read_scans

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
LayerData = tuple[Any, dict[str, Any], str]


def _claims(path: Path) -> bool:
    """A folder with DICOM among its first files, or a regular file the registry recognises
    (by name or content). FIFOs, devices and unreadable paths are not claimed."""
    fmt = formats.detect(path)
    if fmt is None:
        return False
    return formats.is_dicom_folder(path) if fmt.folder else True


def _paths(path: PathOrPaths) -> list[Path]:
    return [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return :func:`read_layers` when every path is something this plugin reads, else None.

    Never raises (napari's reader contract): anything unexpected while looking (a permission
    error, an odd path object) means "not ours".
    """
    try:
        paths = _paths(path)
        claimed = bool(paths) and all(_claims(p) for p in paths)
    except Exception:  # noqa: BLE001 - napari's contract: a reader hook returns None when unsure
        return None
    return read_layers if claimed else None


def layer_data(scan: Scan) -> LayerData:
    """A Scan as napari LayerData: ``(data, {name, scale, translate, metadata, ...}, type)``."""
    kwargs: dict[str, Any] = {
        "name": scan.name,
        "scale": tuple(scan.spacing),
        "translate": tuple(scan.origin),
        "metadata": {**scan.metadata, "spacing_mm": tuple(scan.spacing)},
    }
    if scan.kind == "labels":
        return scan.data, kwargs, "labels"
    kwargs["rgb"] = scan.rgb
    window = scan.metadata.get("window")
    if window and not scan.rgb:
        center, width = window
        kwargs["contrast_limits"] = (center - width / 2, center + width / 2)
    return scan.data, kwargs, "image"


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read every path with :func:`read_scans`; one layer per scan.

    A :class:`~napari_segloss.io.ScanReadError` propagates: napari reports its message, which
    names the file and the reason.
    """
    return [layer_data(scan) for p in _paths(path) for scan in read_scans(p)]
