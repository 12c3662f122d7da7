"""Saving checkpoint results in a format that goes back where the scan came from.

One place decides the result formats for the widget's *Save results…*, ``napari-segloss
predict --format`` and the batch archive:

* ``dicom-seg``: a DICOM SEG referencing the source series (:mod:`napari_segloss.io.seg`);
  DICOM inputs with patient geometry only;
* ``nifti``: ``.nii.gz`` carrying the input's affine (orientation, origin, spacing) for DICOM and
  NIfTI inputs, else the spacing (:func:`napari_segloss.io.writers.write_array`);
* ``png``: PNG for 2D (0/255 mask), TIFF with the voxel spacing for 3D.

:func:`default_format` picks by the input: DICOM SEG for DICOM, NIfTI for NIfTI, else PNG/TIFF.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloss.io.seg import SegmentResult, SegWriteError, check_seg_source, write_seg

#: the result formats, in the order the CLI lists them
RESULT_FORMATS = ("dicom-seg", "nifti", "png")
#: the file name of a comparison saved as one SEG (one segment per checkpoint)
COMPARISON_SEG = "comparison.seg.dcm"


def default_format(metadata: Mapping[str, Any]) -> str:
    """The format a result of this scan is saved in unless asked otherwise (see module doc)."""
    fmt = metadata.get("format")
    if fmt == "dicom":
        return "dicom-seg" if metadata.get("affine_lps") is not None else "nifti"
    return "nifti" if fmt == "nifti" else "png"


def check_format(fmt: str, metadata: Mapping[str, Any], where: str = "scan") -> None:
    """Raise ValueError (SegWriteError for DICOM SEG) when results of this scan cannot be
    saved as ``fmt``: an unknown format, DICOM SEG for a PNG input or a series without geometry."""
    if fmt not in RESULT_FORMATS:
        raise ValueError(f"unknown result format {fmt!r}; choose one of {', '.join(RESULT_FORMATS)}")
    if fmt == "dicom-seg":
        check_seg_source(metadata, where)


def mask_path(stem: Path, fmt: str, ndim: int) -> Path:
    """The file a mask is saved to: ``stem`` + ``.seg.dcm`` | ``.nii.gz`` | ``.png`` (2D) / ``.tif`` (3D)."""
    suffix = {"dicom-seg": ".seg.dcm", "nifti": ".nii.gz"}.get(fmt, ".png" if ndim == 2 else ".tif")
    return stem.with_name(stem.name + suffix)


def write_mask(
    stem: Path,
    fmt: str,
    metadata: Mapping[str, Any],
    spacing: Sequence[float],
    result: SegmentResult,
    *,
    overwrite: bool = False,
    where: str = "scan",
) -> Path:
    """Write one checkpoint's mask to :func:`mask_path` in ``fmt``; returns the path.

    ``metadata`` and ``spacing`` are the scan's (or its layer's): the SEG's source series and the
    NIfTI's affine come from them. FileExistsError for an existing file unless ``overwrite``.
    """
    check_format(fmt, metadata, where)
    mask = np.asarray(result.mask, dtype=bool)
    path = mask_path(stem, fmt, mask.ndim)
    if fmt == "dicom-seg":
        return write_seg(path, metadata, [result], overwrite=overwrite, where=where)
    from napari_segloss.io.writers import write_array

    if fmt == "nifti":
        affine = metadata.get("affine_lps")
        axcodes = metadata.get("axcodes_on_disk") if metadata.get("format") == "nifti" else None
        return write_array(path, mask, spacing=spacing, affine=affine, axcodes=axcodes, overwrite=overwrite)
    return write_array(path, mask, spacing=spacing, overwrite=overwrite)  # PNG 0/255, TIFF 0/1 + spacing


def planned_files(folder: Path, fmt: str, results: Sequence[SegmentResult], *, combined: bool = False) -> list[Path]:
    """The files :func:`save_results` would write (to ask before replacing any)."""
    files = [mask_path(folder / r.checkpoint, fmt, np.ndim(r.mask)) for r in results]
    if combined and fmt == "dicom-seg" and len(results) > 1:
        files.append(folder / COMPARISON_SEG)
    return files


def save_results(
    folder: str | Path,
    metadata: Mapping[str, Any],
    spacing: Sequence[float],
    results: Sequence[SegmentResult],
    *,
    fmt: str | None = None,
    combined: bool = False,
    overwrite: bool = False,
    where: str = "scan",
) -> list[Path]:
    """Save every checkpoint's mask of one scan into ``folder`` (created if missing).

    Args:
        folder: destination; files are named after the checkpoints (``<checkpoint>.seg.dcm``, ...).
        metadata, spacing: the scan's (its layer's) metadata and voxel spacing (mm, numpy order).
        results: one per checkpoint.
        fmt: one of :data:`RESULT_FORMATS`; default :func:`default_format`.
        combined: with DICOM SEG and several results, also one :data:`COMPARISON_SEG` holding one
            segment per checkpoint (last in the returned list).
        overwrite: replace existing files; otherwise FileExistsError naming them and nothing is
            written.
    Raises:
        ValueError / SegWriteError: the format does not fit the scan (nothing is written).
    """
    folder = Path(folder)
    fmt = fmt or default_format(metadata)
    check_format(fmt, metadata, where)
    if not results:
        raise ValueError(f"{where}: no results to save")
    targets = planned_files(folder, fmt, results, combined=combined)
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: file exists ({len(existing)} of {len(targets)} results already saved "
                              "there; choose another folder or replace them)")
    written = [write_mask(folder / r.checkpoint, fmt, metadata, spacing, r, overwrite=overwrite, where=where)
               for r in results]
    if len(targets) > len(results):  # the comparison SEG
        written.append(write_seg(targets[-1], metadata, results, overwrite=overwrite, where=where))
    return written


__all__ = [
    "COMPARISON_SEG",
    "RESULT_FORMATS",
    "SegWriteError",
    "SegmentResult",
    "check_format",
    "default_format",
    "mask_path",
    "planned_files",
    "save_results",
    "write_mask",
]
