"""DICOM reading: single files, series folders, multi-frame objects, DICOMDIR and DICOM SEG.

Pixel values follow ``shared/io_metrics.md`` §1.1: decode (pydicom with its pylibjpeg plugins),
apply the modality transform (RescaleSlope/Intercept, the functional groups of enhanced
multi-frame objects, or a Modality LUT Sequence), invert MONOCHROME1 over the stored range. The
VOI window is for display only and goes into ``metadata["window"]``.

A folder gives one :class:`~napari_segloss.io.Scan` per series (SeriesInstanceUID) and per
orientation inside a series (a tri-planar localizer gives three stacks). Slices are ordered by
their position along the slice normal ``cross(row, col)`` of ImageOrientationPatient, never by
file name or InstanceNumber, and the slice spacing is the step between those positions.

Privacy: metadata is built from a list of non-identifying attributes, messages name files only,
and pydicom's value-validation warnings (which quote values) are silenced while reading.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from napari_segloss.io import Scan, ScanReadError, ScanReadWarning
from napari_segloss.io.budget import check_voxel_budget
from napari_segloss.io.formats import guarded
from napari_segloss.io.geometry import dicom_affine

_SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_ORIENTATION_ATOL = 1e-3
_SPACING_RTOL = 0.01  # slice gaps within 1 % of the median count as regular
_MAX_LISTED = 10  # bad files named one by one in a warning

#: pydicom decoder plugins per compressed transfer syntax (the message names them when missing)
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or Pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (or Pillow)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (or Pillow)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}


@dataclass
class _Slice:
    """One 2D frame with its geometry; ``pixels`` are modality values ``(H, W)`` or ``(H, W, 3)``."""

    pixels: np.ndarray
    position: np.ndarray | None  # ImagePositionPatient, mm
    orientation: np.ndarray | None  # ImageOrientationPatient: row then column direction cosines
    pixel_spacing: tuple[float, float] | None  # (row spacing dy, column spacing dx), mm
    instance: int  # InstanceNumber or frame index: the order when there is no geometry
    source: tuple[str, int] | None = None  # (file, 0-based frame) the slice was read from


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's value warnings while reading: they can quote identifying values."""
    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = previous


def _floats(value: Any) -> np.ndarray | None:
    """A DS/IS value or multi-value as a float array; None when absent, empty or malformed."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else value
    try:
        out = np.array([float(v) for v in items], dtype=float)
    except (TypeError, ValueError):
        return None
    return out if out.size and np.all(np.isfinite(out)) else None


def _fg(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """A functional-group attribute of ``frame``: per-frame item first, then shared; else None."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if not items or len(items) <= index:
            continue
        seq = items[index].get(sequence)
        if seq:
            value = seq[0].get(keyword)
            if value is not None:
                return value
    return None


def _attr(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """A functional-group attribute, falling back to the top-level attribute."""
    value = _fg(ds, frame, sequence, keyword)
    return ds.get(keyword) if value is None else value


def _dcmread(path: Path) -> Dataset | None:
    """The whole dataset; files without the 128-byte preamble and file meta (old or raw
    datasets) are read with ``force`` and kept only if they hold an image. None if not DICOM."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:  # noqa: BLE001 - arbitrary bytes fail in arbitrary ways: simply not DICOM
        return None
    if not all(keyword in ds for keyword in ("Rows", "Columns", "PixelData", "BitsAllocated")):
        return None  # force=True parses any bytes into something; this is no image
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _load(path: Path) -> tuple[Dataset, np.ndarray]:
    """Header (pixel data dropped) and decoded stored pixels in native byte order.

    Raises ScanReadError for non-DICOM files, objects without pixels and undecodable pixels.
    """
    try:
        with _quiet():
            ds = _dcmread(path)
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise ScanReadError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from None
    if ds is None:
        raise ScanReadError(f"{path}: not a DICOM file")
    if "PixelData" not in ds or "Rows" not in ds:
        what = ds.get("Modality") or "non-image"
        raise ScanReadError(f"{path}: no pixel data ({what} object)")
    guarded(path, "DICOM header", lambda: check_voxel_budget(
        [int(ds.get(k) or 1) for k in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel")], path))
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            raise ScanReadError(f"{path}: unsupported transfer syntax {syntax}") from None
        if not available:
            package = _DECODER_PACKAGES.get(str(syntax), "pylibjpeg-libjpeg")
            raise ScanReadError(
                f"{path}: no decoder installed for {syntax.name}; install pylibjpeg and {package}"
            )
    try:
        with _quiet():
            stored = ds.pixel_array
    except (RuntimeError, ValueError, NotImplementedError, TypeError, AttributeError, KeyError) as exc:
        raise ScanReadError(f"{path}: cannot decode the pixel data ({syntax.name}): {exc}") from None
    if not stored.dtype.isnative:
        stored = stored.astype(stored.dtype.newbyteorder("="))
    del ds.PixelData
    return ds, stored


def _smallest_int(values: np.ndarray) -> np.ndarray:
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype)
    return values.astype(np.int64)


def _linear(values: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``values * slope + intercept``: exact integers when both are integral, else float32."""
    if slope == 1 and intercept == 0:
        return values
    if float(slope).is_integer() and float(intercept).is_integer():
        return _smallest_int(values.astype(np.int64) * int(slope) + int(intercept))
    return values.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _rescale(ds: Dataset, frame: int) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a frame; (1, 0) when absent or malformed."""
    slope = _floats(_attr(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"))
    intercept = _floats(_attr(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"))
    return (1.0 if slope is None else float(slope[0])), (0.0 if intercept is None else float(intercept[0]))


def _value_range(ds: Dataset, frame: int) -> tuple[float, float]:
    """Modality values of the smallest and largest storable pixel (for MONOCHROME1 inversion)."""
    if "ModalityLUTSequence" in ds:
        lut = np.asarray(ds.ModalityLUTSequence[0].LUTData)
        return float(lut.min()), float(lut.max())
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = _rescale(ds, frame)
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return ends[0], ends[1]


def _modality_values(ds: Dataset, frame: int, stored: np.ndarray) -> np.ndarray:
    """Stored pixels of one frame to modality values (MONOCHROME1 inverted); colour to RGB."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(stored, ds)
        return rgb if rgb.dtype == np.uint8 else (rgb // 257).astype(np.uint8)
    if stored.ndim == 3:  # RGB (pydicom converts YBR to RGB)
        return stored
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(stored, ds)
    else:
        values = _linear(stored, *_rescale(ds, frame))
    if photometric == "MONOCHROME1":
        lo, hi = _value_range(ds, frame)
        if values.dtype.kind in "iu" and float(lo).is_integer() and float(hi).is_integer():
            values = _smallest_int(int(lo + hi) - values.astype(np.int64))
        else:
            values = np.float32(lo + hi) - values.astype(np.float32)
    return values


def _geometry(ds: Dataset) -> list[tuple[np.ndarray | None, np.ndarray | None, tuple[float, float] | None]]:
    """(position, orientation, pixel spacing) of every frame of one object.

    Enhanced objects keep them in functional groups; a classic multi-frame object has slice
    positions only through GridFrameOffsetVector (otherwise its frames are e.g. time: None).
    """
    n = int(ds.get("NumberOfFrames") or 1)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    offsets = None if enhanced or n == 1 else _floats(ds.get("GridFrameOffsetVector"))
    out = []
    for i in range(n):
        orientation = _floats(_attr(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient"))
        orientation = orientation if orientation is not None and orientation.size == 6 else None
        position = _floats(_attr(ds, i, "PlanePositionSequence", "ImagePositionPatient"))
        position = position if position is not None and position.size == 3 else None
        if n > 1 and not enhanced:
            if offsets is not None and offsets.size == n and orientation is not None and position is not None:
                position = position + offsets[i] * np.cross(orientation[:3], orientation[3:])
            else:
                position = None
        spacing = _floats(_attr(ds, i, "PixelMeasuresSequence", "PixelSpacing"))
        if spacing is None:  # projection radiographs carry only ImagerPixelSpacing
            spacing = _floats(ds.get("ImagerPixelSpacing"))
        pixel_spacing = (float(spacing[0]), float(spacing[1])) if spacing is not None and spacing.size == 2 else None
        out.append((position, orientation, pixel_spacing))
    return out


def _frames(ds: Dataset, stored: np.ndarray, path: Path) -> list[_Slice]:
    """The 2D frames of one object (read from ``path``) as modality values with their geometry."""
    n = int(ds.get("NumberOfFrames") or 1)
    frames = stored if n > 1 else stored[None]
    return [
        _Slice(_modality_values(ds, i, frames[i]), position, orientation, spacing,
               i if n > 1 else int(ds.get("InstanceNumber") or 0), (str(path), i))
        for i, (position, orientation, spacing) in enumerate(_geometry(ds))
    ]


def _split_by_orientation(slices: list[_Slice]) -> list[list[_Slice]]:
    groups: list[list[_Slice]] = []
    for s in slices:
        for group in groups:
            a, b = group[0].orientation, s.orientation
            if (a is None and b is None) or (
                a is not None and b is not None and np.allclose(a, b, atol=_ORIENTATION_ATOL)
            ):
                group.append(s)
                break
        else:
            groups.append([s])
    return groups


def _slice_step(positions: np.ndarray, where: str) -> tuple[float, bool]:
    """Slice spacing (mm) from sorted positions along the normal, and whether it is regular."""
    gaps = np.diff(positions)
    median = float(np.median(gaps))
    if median <= 1e-6:
        warnings.warn(f"{where}: several slices share one position (echoes or time points?); "
                      "stacked with 1 mm spacing", ScanReadWarning, stacklevel=5)
        return 1.0, False
    if np.any(np.abs(gaps - median) > _SPACING_RTOL * median):
        warnings.warn(f"{where}: irregular slice spacing (gaps {gaps.min():.4g}..{gaps.max():.4g} mm; "
                      f"missing slices?); shown with the median gap {median:.4g} mm", ScanReadWarning, stacklevel=5)
        return median, False
    return median, True


def _volume(slices: list[_Slice], where: str) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...], dict]:
    """Stack slices of one orientation in geometric order: data, spacing, origin, geometry metadata.

    The origin is in the scan's own axes: (position along the normal, along the column
    direction, along the row direction) of the first voxel; one slice gives a 2D scan. With
    geometry, ``affine_lps`` (:mod:`napari_segloss.io.geometry`; 1 mm normal step for one slice)
    and ``dicom_sources`` (``[file, frame]`` per slice, in array order; what a DICOM SEG
    references) join the metadata.
    """
    first = slices[0]
    orientation = first.orientation
    instances = np.array([s.instance for s in slices])
    dy, dx = first.pixel_spacing or (1.0, 1.0)
    geometry: dict[str, Any] = {
        "orientation": None if orientation is None else [float(v) for v in orientation],
        "geometric_order": False,
        "regular_spacing": True,
    }
    if orientation is None or any(s.position is None for s in slices):  # no geometry: acquisition order
        data = np.stack([slices[i].pixels for i in np.argsort(instances, kind="stable")])
        geometry["dicom_sources"] = [list(slices[i].source) for i in np.argsort(instances, kind="stable") if slices[i].source]
        if len(slices) == 1:
            return data[0], (dy, dx), (0.0, 0.0), geometry
        return data, (1.0, dy, dx), (0.0, 0.0, 0.0), geometry
    row, col = orientation[:3], orientation[3:]
    along = np.array([float(s.position @ np.cross(row, col)) for s in slices])
    order = np.lexsort((instances, along))
    positions = along[order]
    p0 = slices[order[0]].position
    geometry.update(
        geometric_order=True,
        image_position=[float(v) for v in p0],
        slice_positions=[float(v) for v in positions],
        dicom_sources=[list(slices[i].source) for i in order if slices[i].source],
    )
    data = np.stack([slices[i].pixels for i in order])
    in_plane = (float(p0 @ col), float(p0 @ row))
    if len(slices) == 1:
        geometry["affine_lps"] = dicom_affine(p0, orientation, (1.0, dy, dx)).tolist()
        return data[0], (dy, dx), in_plane, geometry
    dz, geometry["regular_spacing"] = _slice_step(positions, where)
    geometry["affine_lps"] = dicom_affine(p0, orientation, (dz, dy, dx)).tolist()
    return data, (dz, dy, dx), (float(positions[0]), *in_plane), geometry


def _window(ds: Dataset) -> tuple[float, float] | None:
    center = _attr(ds, 0, "FrameVOILUTSequence", "WindowCenter")
    width = _attr(ds, 0, "FrameVOILUTSequence", "WindowWidth")
    center_v, width_v = _floats(center), _floats(width)
    if center_v is None or width_v is None or width_v[0] <= 0:
        return None
    c = float(center_v[0])
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        lo, hi = _value_range(ds, 0)
        c = lo + hi - c
    return c, float(width_v[0])


def _name(ds: Dataset, path: Path) -> str:
    description = str(ds.get("SeriesDescription") or "").strip()
    if description:
        return description
    modality = str(ds.get("Modality") or "DICOM").strip()
    number = ds.get("SeriesNumber")
    return f"{modality} series {number}" if number not in (None, "") else f"{modality} {path.stem}"


def _metadata(ds: Dataset, n_files: int) -> dict[str, Any]:
    """Non-identifying facts about a series (an allow-list: nothing about the patient)."""
    slope, intercept = _rescale(ds, 0)
    sop = ds.get("SOPClassUID")
    number = ds.get("SeriesNumber")
    return {
        "format": "dicom",
        "modality": str(ds.get("Modality") or ""),
        "series_description": str(ds.get("SeriesDescription") or ""),
        "series_number": None if number in (None, "") else int(number),
        "sop_class": UID(sop).name if sop else "",
        "transfer_syntax": UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")).name,
        "photometric_interpretation": str(ds.get("PhotometricInterpretation") or ""),
        "bits_stored": int(ds.get("BitsStored") or 0),
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "window": _window(ds),
        "files": n_files,
    }


def _seg_layers(ds: Dataset, stored: np.ndarray) -> list[tuple[list[dict[str, Any]], list[_Slice]]]:
    """A DICOM SEG as label slices, label value = segment number, with the segments they hold.

    Frames at one position merge. Disjoint segments (organs) give one label image; overlapping
    ones (a comparison of checkpoints, each one segment) give one label image per segment.
    """
    n = int(ds.get("NumberOfFrames") or 1)
    frames = stored.reshape(n, int(ds.Rows), int(ds.Columns))
    fractional = ds.get("SegmentationType") == "FRACTIONAL"
    threshold = float(ds.get("MaximumFractionalValue") or 255) / 2 if fractional else 0.0
    segments = [
        {"number": int(item.SegmentNumber), "label": str(item.get("SegmentLabel") or "")}
        for item in ds.get("SegmentSequence") or []
    ]
    dtype = np.uint8 if max((s["number"] for s in segments), default=1) < 256 else np.uint16
    planes: dict[Any, _Slice] = {}  # one empty slice per position, the template of every layer
    masks: dict[int, dict[Any, np.ndarray]] = {}  # segment -> position -> frame mask
    per_segment: Counter[int] = Counter()
    for i, (position, orientation, spacing) in enumerate(_geometry(ds)):
        segment = int(_fg(ds, i, "SegmentIdentificationSequence", "ReferencedSegmentNumber") or 1)
        if position is not None:
            key: Any = tuple(np.round(position, 3))
        else:  # no geometry: the k-th frame of each segment is slice k
            key = per_segment[segment]
            per_segment[segment] += 1
        planes.setdefault(key, _Slice(np.zeros(frames.shape[1:], dtype), position, orientation, spacing, i))
        on = masks.setdefault(segment, {})
        on[key] = on[key] | (frames[i] > threshold) if key in on else frames[i] > threshold

    def layer(numbers: list[int]) -> list[_Slice]:
        out = []
        for key, plane in planes.items():
            pixels = plane.pixels.copy()
            for number in numbers:
                if key in masks[number]:
                    pixels[masks[number][key]] = number
            out.append(_Slice(pixels, plane.position, plane.orientation, plane.pixel_spacing, plane.instance))
        return out

    numbers = sorted(masks)
    overlap = any(
        np.any(sum(masks[s][key].astype(np.uint16) for s in numbers if key in masks[s]) > 1) for key in planes
    )
    if not overlap:
        return [(segments, layer(numbers))]
    return [([s for s in segments if s["number"] == number], layer([number])) for number in numbers]


def _plane(orientation: np.ndarray | None) -> str:
    """axial / coronal / sagittal / oblique from the slice normal (patient axes x, y, z)."""
    if orientation is None:
        return "no geometry"
    normal = np.abs(np.cross(orientation[:3], orientation[3:]))
    return ("sagittal", "coronal", "axial")[int(normal.argmax())] if normal.max() > 0.9 else "oblique"


def _warn_skipped(problems: list[str], where: object) -> None:
    listed = "; ".join(problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    warnings.warn(f"{where}: skipped {len(problems)} file(s): {listed}{more}", ScanReadWarning, stacklevel=3)


def _series_scans(members: list[tuple[Path, Dataset, np.ndarray]], where: object) -> list[Scan]:
    """Scans of one series or one multi-frame object: files of the majority size, per orientation."""

    def size(ds: Dataset) -> tuple[int, int, int]:
        return int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel") or 1)

    main = Counter(size(ds) for _, ds, _ in members).most_common(1)[0][0]
    odd = [f"{p}: {size(ds)[0]}x{size(ds)[1]} pixels, the series has {main[0]}x{main[1]}"
           for p, ds, _ in members if size(ds) != main]
    if odd:
        _warn_skipped(odd, where)
    kept = [m for m in members if size(m[1]) == main]
    path0, ds0, _ = kept[0]
    is_seg = ds0.get("SOPClassUID") == _SEG_CLASS
    name = _name(ds0, path0)
    if is_seg:  # a SEG is one object: one label image per group of non-overlapping segments
        layers = [(segments, slices, name if len(found) == 1 else f"{name} · {segments[0]['label'] or segments[0]['number']}")
                  for found in [_seg_layers(ds0, kept[0][2])] for segments, slices in found]
    else:
        layers = [([], [s for path, ds, stored in kept for s in _frames(ds, stored, path)], name)]
    scans = []
    for segments, slices, layer_name in layers:
        groups = _split_by_orientation(slices)
        for group in groups:
            label = layer_name if len(groups) == 1 else f"{layer_name} ({_plane(group[0].orientation)})"
            data, spacing, origin, geometry = _volume(group, f"{where} [{label}]")
            metadata = {**_metadata(ds0, len(kept)), **geometry}
            if is_seg:
                metadata["segments"] = segments
            scans.append(Scan(data, spacing, origin, label, metadata, "labels" if is_seg else "image",
                              spacing_known=group[0].pixel_spacing is not None))  # no PixelSpacing: pixels
    return scans


def _read_files(files: list[Path], where: Path) -> list[Scan]:
    """Load every file, warn about the unusable ones, one Scan per series (and orientation)."""
    loaded, problems = [], []
    total = 0
    for path in files:
        try:
            loaded.append((path, *guarded(path, "DICOM file", lambda: _load(path))))  # a decoder panic skips one file
        except ScanReadError as exc:
            problems.append(str(exc))
            continue
        total = check_voxel_budget((total + loaded[-1][2].size,), where, what="the DICOM files read so far hold")
    if not loaded:
        first = f"; {problems[0]}" if problems else ""
        raise ScanReadError(f"{where}: no readable DICOM image among {len(files)} file(s){first}")
    if problems:
        _warn_skipped(problems, where)
    series: dict[tuple[str, str], list[tuple[Path, Dataset, np.ndarray]]] = {}
    for path, ds, stored in loaded:
        single = int(ds.get("NumberOfFrames") or 1) == 1 and ds.get("SOPClassUID") != _SEG_CLASS
        key = ("series", str(ds.get("SeriesInstanceUID") or path.parent)) if single else ("object", str(path))
        series.setdefault(key, []).append((path, ds, stored))
    scans, failed = [], []
    for members in series.values():
        try:
            scans.extend(_series_scans(members, where))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:  # malformed headers
            failed.append(f"{members[0][0]} (series of {len(members)} file(s)): {type(exc).__name__}: {exc}")
    if failed and not scans:
        raise ScanReadError(f"{where}: no usable series; {failed[0]}")
    if failed:
        _warn_skipped(failed, where)
    return sorted(scans, key=lambda s: (s.metadata["series_number"] is None, s.metadata["series_number"] or 0, s.name))


def read_dicom_file(path: str | Path) -> list[Scan]:
    """Read one DICOM file: a slice (2D scan), a multi-frame object or a SEG (labels)."""
    path = Path(path)
    ds, stored = _load(path)
    try:
        return _series_scans([(path, ds, stored)], path)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:  # malformed headers
        raise ScanReadError(f"{path}: malformed DICOM header ({type(exc).__name__}: {exc})") from None


def _folder_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )


def _header(path: Path) -> Dataset | None:
    """The header without pixel data, or None for a file pydicom cannot parse as DICOM."""
    try:
        with _quiet():
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not DICOM (or damaged): the full read reports it
        return None


@dataclass(frozen=True)
class SeriesHeader:
    """One single-frame image series of a folder, from its headers.

    Attributes:
        uid: SeriesInstanceUID (selects the series in :func:`read_dicom_folder`).
        number: SeriesNumber, or None.
        label: the name the series' Scan gets (SeriesDescription, else "<modality> series <n>").
        files: how many files hold it.
    """

    uid: str
    number: int | None
    label: str
    files: int


def list_series(folder: str | Path) -> list[SeriesHeader]:
    """The series of a folder of single-frame DICOM files, read from headers only (fast).

    Sorted as :func:`read_dicom_folder` sorts its scans (series number, then name). Empty when
    the folder also holds multi-frame objects, SEGs or files without a SeriesInstanceUID, whose
    grouping only the full read decides.
    """
    found: dict[str, list[tuple[Path, Dataset]]] = {}
    for path in _folder_files(Path(folder)):
        ds = _header(path)
        if ds is None:
            continue
        uid = str(ds.get("SeriesInstanceUID") or "")
        if not uid or int(ds.get("NumberOfFrames") or 1) != 1 or ds.get("SOPClassUID") == _SEG_CLASS:
            return []
        found.setdefault(uid, []).append((path, ds))
    series = []
    for uid, members in found.items():
        path, ds = members[0]
        number = ds.get("SeriesNumber")
        series.append(SeriesHeader(uid, None if number in (None, "") else int(number), _name(ds, path), len(members)))
    return sorted(series, key=lambda h: (h.number is None, h.number or 0, h.label, h.uid))


def read_dicom_folder(folder: str | Path, *, series_uid: str | None = None) -> list[Scan]:
    """Read every DICOM file under ``folder`` (recursively): one Scan per series and orientation.

    Non-DICOM, truncated, undecodable or odd-sized files are skipped with one
    :class:`~napari_segloss.io.ScanReadWarning` naming them; ScanReadError if nothing is left.
    ``series_uid`` reads only the files of that series (headers decide; see :func:`list_series`).
    """
    folder = Path(folder)
    files = _folder_files(folder)
    if not files:
        raise ScanReadError(f"{folder}: the folder holds no files")
    if series_uid is not None:
        files = [p for p in files if (ds := _header(p)) is not None and str(ds.get("SeriesInstanceUID") or "") == series_uid]
        if not files:
            raise ScanReadError(f"{folder}: no file of series {series_uid}")
    return _read_files(files, folder)


def read_dicomdir(path: str | Path) -> list[Scan]:
    """Read the images a DICOMDIR lists (paths relative to its folder), grouped as for a folder."""
    from pydicom.fileset import FileSet

    path = Path(path)
    try:
        with _quiet():
            files = [Path(instance.path) for instance in FileSet(pydicom.dcmread(path))]
    except (InvalidDicomError, OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ScanReadError(f"{path}: unreadable DICOMDIR ({type(exc).__name__}: {exc})") from None
    if not files:
        raise ScanReadError(f"{path}: the DICOMDIR lists no files")
    return _read_files(files, path)
