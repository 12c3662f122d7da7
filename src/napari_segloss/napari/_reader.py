"""npe2 reader: drag and drop DICOM (files, series folders, DICOMDIR), PNG/JPG/BMP, TIFF, NIfTI.

A thin wrapper around :func:`napari_segloss.io.read_scans`: each Scan becomes one layer with
``scale`` = spacing (mm), ``translate`` = origin (mm), contrast limits from the DICOM window and
the scan's metadata. Masks (``*_mask.png``, DICOM SEG, ...) open as Labels layers.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_segloss.io import NIFTI_SUFFIXES, RASTER_SUFFIXES, Scan, read_scans

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
LayerData = tuple[Any, dict[str, Any], str]

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_SNIFF_FILES = 64  # files of a dropped folder checked for DICOM before claiming it


def _is_dicom_file(path: Path) -> bool:
    """DICOM by extension, name (DICOMDIR) or the 'DICM' marker after the 128-byte preamble."""
    if path.suffix.lower() in _DICOM_SUFFIXES or path.name.upper() == "DICOMDIR":
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _claims(path: Path) -> bool:
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return any(_is_dicom_file(p) for p in itertools.islice(files, _SNIFF_FILES))
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES) or path.suffix.lower() in RASTER_SUFFIXES:
        return True
    return path.is_file() and _is_dicom_file(path)


def _paths(path: PathOrPaths) -> list[Path]:
    return [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return :func:`read_layers` when every path is something this plugin reads, else None."""
    paths = _paths(path)
    if paths and all(_claims(p) for p in paths):
        return read_layers
    return None


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
