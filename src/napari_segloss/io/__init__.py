"""Reading scans (DICOM, PNG/JPG/BMP, TIFF, NIfTI) and writing results, without napari.

``read_scans(path)`` turns a file, a folder or a DICOMDIR into :class:`Scan` objects; the napari
reader (:mod:`napari_segloss.napari._reader`), the CLI and the batch runner all go through it.
Which files are scans, and which reader reads them, is the format registry's
(:mod:`napari_segloss.io.formats`); every reader's failure reaches the caller as one
:class:`ScanReadError`, and headers are checked against the memory budget
(:mod:`napari_segloss.io.budget`) before pixels are decoded. Format modules are imported on
first use, so importing this package stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from napari_segloss.io import formats
from napari_segloss.io.writers import write_array, write_csv, write_dicom_series, write_rgb_png


class ScanReadError(ValueError):
    """A file or folder could not be read; the message names the file and the reason."""


class ScanReadWarning(UserWarning):
    """Part of the input was skipped (a bad file in a series folder, ...); the rest was read."""


@dataclass
class Scan:
    """One image or series as read from disk.

    Attributes:
        data: spatial axes first (``(H, W)`` or ``(Z, H, W)``), plus a trailing colour axis of
            3 (RGB) or 4 (RGBA) for colour images only. DICOM values are modality values
            (rescaled, e.g. HU), MONOCHROME1 already inverted.
        spacing: mm per spatial axis, numpy order (``(dz, dy, dx)``); 1.0 where the format has none
            (then ``spacing_known`` is False).
        origin: position (mm) of the first voxel along each spatial axis, in the scan's own axes
            (for an axial DICOM series: patient z, y, x); zeros where the format has none.
        name: a display name (DICOM: SeriesDescription, else modality and series number).
        metadata: format details without patient-identifying fields (modality, orientation,
            window, ...).
        kind: ``"labels"`` for masks (``*_mask.png`` and alike, DICOM SEG), else ``"image"``.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: Literal["image", "labels"] = "image"
    #: False when the file records no pixel size (PNG/JPG, a TIFF without a physical unit):
    #: ``spacing`` is then 1.0 per axis and distances/areas are in pixels
    #: (:func:`napari_segloss.spacing.known_spacing`)
    spacing_known: bool = True

    @property
    def rgb(self) -> bool:
        """Whether ``data`` has a trailing colour axis."""
        return self.data.ndim == len(self.spacing) + 1


def _unique_names(scans: list[Scan]) -> list[Scan]:
    seen: dict[str, int] = {}
    for scan in scans:
        count = seen.get(scan.name, 0)
        seen[scan.name] = count + 1
        if count:
            scan.name = f"{scan.name} ({count + 1})"
    return scans


def read_scans(path: str | os.PathLike) -> list[Scan]:
    """Read a file, a folder of DICOM files (one or several series) or a DICOMDIR.

    Returns one :class:`Scan` per image or series (names made unique). Raises
    :class:`ScanReadError` naming the file and the reason when nothing usable can be read (a
    missing path, a FIFO or device, a malformed file, a header over the memory budget); issues
    :class:`ScanReadWarning` for skipped parts (bad files in a folder, irregular slice spacing).
    """
    return _unique_names(formats.read(path))


__all__ = [
    "Scan",
    "ScanReadError",
    "ScanReadWarning",
    "read_scans",
    "write_array",
    "write_csv",
    "write_dicom_series",
    "write_rgb_png",
]
