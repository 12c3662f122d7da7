"""DICOM Segmentation objects (SEG) of checkpoint results, built with highdicom.

A SEG references the series it was computed on: highdicom copies the patient, study and frame
of reference from the source headers and, for every frame, the referenced SOP instance and
its plane position and orientation. One :class:`SegmentResult` is one segment: the tumour
mask of one checkpoint, coded as SCT 108369006 "Neoplasm" (category "Morphologically Abnormal
Structure"), with an algorithm identification naming the checkpoint, version = the project's
version, and parameters for its loss, its weights' sha256 and the mask threshold. A comparison
of several checkpoints is one SEG with one segment each.

The source headers come from the scan's metadata (``dicom_sources``, ``affine_lps``: see
:func:`napari_segloss.io.dicom._volume`); a Scan or a napari layer read by this plugin carries
both. Every frame is written, empty ones too, so the SEG's frames are the series' slices and
:func:`napari_segloss.io.read_scans` reads it back on the scan's grid (a Labels layer with the
scan's scale and translate).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloss import __version__

#: the segment's coded concepts (SNOMED CT): what a PACS or OHIF shows as the segment's type
TUMOUR_CATEGORY = ("49755003", "SCT", "Morphologically Abnormal Structure")
TUMOUR_TYPE = ("108369006", "SCT", "Neoplasm")
_MAX_FRACTIONAL = 255
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "StudyID", "AccessionNumber")


class SegWriteError(ValueError):
    """A DICOM SEG cannot be made for this scan (not DICOM, no geometry, sources gone, ...)."""


@dataclass(frozen=True)
class SegmentResult:
    """One checkpoint's result on a scan: one segment of a SEG.

    Attributes:
        checkpoint: the checkpoint's name (segment label, algorithm name).
        loss: the loss it was trained with.
        mask: bool, the scan's spatial shape ``(Z, H, W)`` or ``(H, W)`` in its array order.
        probability: float in [0, 1], same shape (needed for a FRACTIONAL SEG), or None.
        weights_sha256: hex sha256 of its weights (the model card's ``weights_sha256``).
        threshold: the probability threshold that gave ``mask``.
    """

    checkpoint: str
    loss: str
    mask: np.ndarray
    probability: np.ndarray | None = None
    weights_sha256: str = ""
    threshold: float = 0.5


def check_seg_source(metadata: Mapping[str, Any], where: str = "scan") -> list[tuple[Path, int]]:
    """The ``(file, frame)`` each slice of the scan was read from; SegWriteError when a SEG of it
    cannot be made: not a DICOM input, no patient geometry, or source files gone."""
    fmt = metadata.get("format") or "unknown"
    if fmt != "dicom":
        raise SegWriteError(f"{where}: a DICOM SEG needs a DICOM input, this scan is {fmt}; save it as NIfTI or PNG/TIFF")
    if metadata.get("affine_lps") is None:
        raise SegWriteError(f"{where}: the series has no patient geometry (ImagePositionPatient/ImageOrientationPatient "
                            "missing), so a DICOM SEG could not be aligned with it; save it as NIfTI or PNG/TIFF")
    sources = [(Path(file), int(frame)) for file, frame in metadata.get("dicom_sources") or ()]
    if not sources:
        raise SegWriteError(f"{where}: the scan does not record its DICOM source files; open the series with this plugin")
    missing = sorted({str(p) for p, _ in sources if not p.is_file()})
    if missing:
        raise SegWriteError(f"{where}: {len(missing)} source file(s) of the series are gone (first: {missing[0]})")
    return sources


def _source_headers(sources: list[tuple[Path, int]], where: str) -> tuple[list[Any], np.ndarray]:
    """Source headers for highdicom and the order of the scan's slices in highdicom's frames."""
    import pydicom

    files = list(dict.fromkeys(p for p, _ in sources))
    headers = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in files}
    for ds in headers.values():  # type 2 patient/study attributes highdicom copies: empty if absent
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    if len(files) == len(sources):  # single-frame series: frame k is the scan's slice k
        return [headers[p] for p, _ in sources], np.arange(len(sources))
    if len(files) == 1:  # one multi-frame object: frames in the file's order
        return [headers[files[0]]], np.argsort([frame for _, frame in sources])
    raise SegWriteError(f"{where}: the scan mixes multi-frame objects ({len(files)} files for {len(sources)} slices)")


def build_seg(
    metadata: Mapping[str, Any],
    results: Sequence[SegmentResult],
    *,
    fractional: bool = False,
    where: str = "scan",
) -> Any:
    """A ``highdicom.seg.Segmentation`` of ``results`` (one segment each) on the scan of ``metadata``.

    Args:
        metadata: the scan's (or its layer's) metadata, as the DICOM reader made it.
        results: the checkpoints' results; each mask (and probability) has the scan's spatial shape.
        fractional: a FRACTIONAL (PROBABILITY, 0..255) SEG of the probabilities instead of a
            BINARY one of the masks.
        where: the scan's name, for messages.
    Raises:
        SegWriteError: no results, a result of the wrong shape, a missing probability, or a
            scan that cannot have a SEG (:func:`check_seg_source`).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not results:
        raise SegWriteError(f"{where}: no result to write")
    sources = check_seg_source(metadata, where)
    headers, frame_order = _source_headers(sources, where)
    shape = (len(sources), int(headers[0].Rows), int(headers[0].Columns))
    planes = []
    for result in results:
        values = result.probability if fractional else result.mask
        if values is None:
            raise SegWriteError(f"{where}: {result.checkpoint} has no probability map for a FRACTIONAL SEG")
        values = np.asarray(values)
        stack = values.reshape(shape) if values.size == np.prod(shape) and values.ndim in (2, 3) else None
        if stack is None or values.shape[-2:] != shape[1:]:
            raise SegWriteError(f"{where}: {result.checkpoint}'s result has shape {values.shape}, the scan {shape}")
        planes.append(stack.astype(np.float32) if fractional else stack.astype(bool))
    pixels = np.stack(planes, axis=-1)[np.argsort(frame_order)]  # (frames, rows, columns, segments)
    category, kind = (hd.sr.CodedConcept(*TUMOUR_CATEGORY), hd.sr.CodedConcept(*TUMOUR_TYPE))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=result.checkpoint[:64],
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=result.checkpoint[:64],
                family=codes.cid7162.ArtificialIntelligence,
                version=__version__,
                source="napari-segloss",
                parameters={"loss": result.loss, "weights_sha256": result.weights_sha256 or "unknown",
                            "threshold": f"{result.threshold:g}"},
            ),
            tracking_id=f"{result.checkpoint} tumour"[:64],
            tracking_uid=hd.UID(),
        )
        for number, result in enumerate(results, start=1)
    ]
    source_number = headers[0].get("SeriesNumber")
    model = results[0].checkpoint if len(results) == 1 else f"{len(results)} checkpoints"
    return hd.seg.Segmentation(
        source_images=headers,
        pixel_array=pixels,
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(source_number or 0) + 1000 if str(source_number or "").isdigit() else 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-segloss",
        manufacturer_model_name=model[:64],
        software_versions=__version__,
        device_serial_number="0",
        max_fractional_value=_MAX_FRACTIONAL,
        content_description=f"napari-segloss {'probability' if fractional else 'tumour mask'}: {model}"[:64],
        series_description=f"napari-segloss {model}"[:64],
        omit_empty_frames=False,
    )


def seg_bytes(metadata: Mapping[str, Any], results: Sequence[SegmentResult], *, fractional: bool = False,
              where: str = "scan") -> bytes:
    """:func:`build_seg` encoded as a DICOM file (Part 10, with file meta), for archives."""
    buffer = io.BytesIO()
    build_seg(metadata, results, fractional=fractional, where=where).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_seg(
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    results: Sequence[SegmentResult],
    *,
    fractional: bool = False,
    overwrite: bool = False,
    where: str = "scan",
) -> Path:
    """Write :func:`build_seg` to ``path`` atomically; FileExistsError for an existing file
    unless ``overwrite``. Nothing is written when the SEG cannot be made."""
    from napari_segloss.io.writers import write_bytes

    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)")
    return write_bytes(path, seg_bytes(metadata, results, fractional=fractional, where=where), overwrite=overwrite)
