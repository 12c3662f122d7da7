"""Writers for masks, renderings, DICOM series and metric tables.

Every writer is atomic: it writes a temporary file in the destination folder and renames it into
place, so a crash never leaves a half-written file under the final name. None overwrites an
existing file unless ``overwrite=True`` (then ``FileExistsError`` names the file).

Conventions (the readers in :mod:`napari_segloss.io` undo them):
  * spacing is in mm, one value per spatial axis in numpy order (``(dz, dy, dx)`` or ``(dy, dx)``);
  * a bool mask is written to PNG as 0/255 (visible in any viewer) and to TIFF/NIfTI as 0/1 labels;
  * integer arrays wider than 16 bit (napari's int32/int64 labels) are stored in the smallest
    unsigned type that holds them.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloss.io.geometry import lps_nifti_affine
from napari_segloss.spacing import check_spacing

ARRAY_SUFFIXES = (".png", ".tif", ".tiff", ".nii", ".nii.gz")

_SOP_CLASS = {
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def publish(tmp: Path, path: Path, *, overwrite: bool, hint: str = "pass overwrite=True to replace it") -> None:
    """Move the finished file ``tmp`` to ``path`` (same folder): an atomic replace with
    ``overwrite``, else a hard link that fails with ``FileExistsError`` if ``path`` appeared
    meanwhile (``hint`` says how to replace it). The caller removes ``tmp`` afterwards."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path}: file exists ({hint})") from None
    except OSError:  # file system without hard links
        if path.exists():
            raise FileExistsError(f"{path}: file exists ({hint})") from None
        os.replace(tmp, path)


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path`` and rename it to ``path``.

    The temporary file keeps ``path``'s suffix (libraries pick the format from it). Without
    ``overwrite`` the final step is a hard link, which fails if the name appeared meanwhile.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp{_suffix(path)}"
    with open(tmp, "x"):  # created with the umask's permissions, unlike mkstemp's 0600
        pass
    try:
        write(tmp)
        publish(tmp, path, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _compact_integers(data: np.ndarray) -> np.ndarray:
    """Store wide integer labels (int32/int64) in uint8/uint16 when their values fit; else unchanged."""
    if data.dtype.kind not in "iu" or data.dtype.itemsize <= 2 or data.size == 0:
        return data
    lo, hi = int(data.min()), int(data.max())
    if lo >= 0:
        for dtype in (np.uint8, np.uint16):
            if hi <= np.iinfo(dtype).max:
                return data.astype(dtype)
    return data


def _png_array(data: np.ndarray) -> np.ndarray:
    if data.ndim != 2:
        raise ValueError(f"PNG holds a 2D (H, W) array, got shape {data.shape}; use .tif or .nii.gz for 3D")
    if data.dtype == bool:
        return data.astype(np.uint8) * np.uint8(255)
    if data.dtype.kind not in "iu":
        raise ValueError(f"PNG holds integer data, got {data.dtype}; convert (e.g. to uint8) or use .tif")
    if data.size and (int(data.min()) < 0 or int(data.max()) > 65535):
        raise ValueError("PNG holds values 0..65535; this array has values outside that range, use .tif")
    if data.dtype == np.uint8 or (data.size and int(data.max()) <= 255 and data.dtype.itemsize > 2):
        return data.astype(np.uint8)
    return data.astype(np.uint16)


def _write_png(tmp: Path, data: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(data).save(tmp, format="PNG")


def _write_tiff(tmp: Path, data: np.ndarray, spacing: tuple[float, ...]) -> None:
    import tifffile

    if data.ndim not in (2, 3):
        raise ValueError(f"TIFF holds a 2D (H, W) or 3D (Z, H, W) array, got shape {data.shape}")
    dy, dx = spacing[-2:]
    resolution = (1.0 / dx, 1.0 / dy)
    if data.dtype in (np.uint8, np.uint16, np.float32):
        # ImageJ hyperstack: Fiji reads the voxel size; our reader does too
        metadata: dict[str, Any] = {"unit": "mm", "axes": "ZYX" if data.ndim == 3 else "YX"}
        if data.ndim == 3:
            metadata["spacing"] = spacing[0]
        tifffile.imwrite(
            tmp, data, imagej=True, resolution=resolution, metadata=metadata, photometric="minisblack",
            compression="zlib",
        )
    else:  # ImageJ has no int16/int32/float64 pages: tifffile's JSON description carries the spacing
        tifffile.imwrite(
            tmp, data, resolution=resolution, metadata={"spacing": list(spacing), "unit": "mm"},
            photometric="minisblack", compression="zlib",
        )


def _write_nifti(
    tmp: Path, data: np.ndarray, spacing: tuple[float, ...], affine_lps: np.ndarray | None, axcodes: str | None
) -> None:
    try:
        import nibabel as nib
        from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
    except ImportError as exc:  # optional extra
        raise ImportError("writing NIfTI needs the 'nibabel' package: pip install nibabel") from exc
    if data.ndim not in (2, 3):
        raise ValueError(f"NIfTI holds a 2D (H, W) or 3D (Z, H, W) array, got shape {data.shape}")
    # numpy (Z, Y, X) -> NIfTI (i, j, k) = (X, Y, Z); without a scan affine the axes are DICOM's
    # LPS (x to the patient's left, y posterior): NIfTI's world is RAS, so x and y sizes get a minus
    if affine_lps is None:
        sizes = [*reversed(spacing), *([1.0] * (3 - data.ndim))]
        affine = np.diag([-sizes[0], -sizes[1], sizes[2], 1.0])
    else:
        affine = lps_nifti_affine(affine_lps)
    voxels = np.ascontiguousarray(data.T)
    if axcodes is not None:  # the voxel order of the source file (a NIfTI input's on-disk order)
        stack = voxels if voxels.ndim == 3 else voxels[..., None]
        transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))
        affine = affine @ inv_ornt_aff(transform, stack.shape)
        stack = apply_orientation(stack, transform)
        voxels = stack[..., 0] if data.ndim == 2 and stack.shape[2] == 1 else stack
    image = nib.Nifti1Image(np.ascontiguousarray(voxels), affine)
    image.set_qform(affine, code=1)  # scanner coordinates, read by every viewer
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, tmp)


def write_array(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | Sequence[Sequence[float]] | None = None,
    axcodes: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a grey image or a label/mask array, choosing the format from the extension.

    Args:
        path: ``.png`` (2D ``(H, W)``, bool or integers 0..65535 → 8/16-bit), ``.tif``/``.tiff``
            (``(H, W)`` or ``(Z, H, W)``, with spacing) or ``.nii``/``.nii.gz`` (same, with spacing;
            needs nibabel).
        data: the array; bool masks become 0/255 in PNG and 0/1 in TIFF/NIfTI.
        spacing: mm per axis in numpy order (``(dy, dx)`` or ``(dz, dy, dx)``); default 1 mm.
            Ignored by PNG, which has no physical size.
        affine: NIfTI only: the scan's ``(4, 4)`` numpy-index -> LPS mm affine
            (``metadata["affine_lps"]``, :mod:`napari_segloss.io.geometry`); the file then
            carries the scan's orientation, origin and spacing instead of ``spacing`` alone.
        axcodes: NIfTI only: voxel axis order on disk (a NIfTI input's ``axcodes_on_disk``,
            e.g. ``"RAS"``), so the output has the input's exact affine; default: array order.
        overwrite: replace an existing file instead of raising ``FileExistsError``.
    Returns:
        The written path.
    """
    path = Path(path)
    suffix = _suffix(path)
    arr = np.asarray(data)
    if suffix == ".png":
        png = _png_array(arr)
        return _atomic_write(path, lambda tmp: _write_png(tmp, png), overwrite=overwrite)
    if suffix not in ARRAY_SUFFIXES:
        raise ValueError(f"{path}: unsupported extension {suffix!r}; supported: {', '.join(ARRAY_SUFFIXES)}")
    arr = _compact_integers(arr.astype(np.uint8) if arr.dtype == bool else arr)
    sp = check_spacing(spacing, arr.ndim)
    if suffix in (".tif", ".tiff"):
        return _atomic_write(path, lambda tmp: _write_tiff(tmp, arr, sp), overwrite=overwrite)
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"affine must be a finite 4x4 matrix (numpy index -> LPS mm), got shape {affine.shape}")
    return _atomic_write(path, lambda tmp: _write_nifti(tmp, arr, sp, affine, axcodes), overwrite=overwrite)


def write_rgb_png(path: str | os.PathLike, rgb_uint8: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 rendering as PNG."""
    arr = np.asarray(rgb_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected (H, W, 3|4) uint8, got shape {arr.shape} dtype {arr.dtype}")
    if _suffix(Path(path)) != ".png":
        raise ValueError(f"{path}: write_rgb_png writes .png files")
    return _atomic_write(path, lambda tmp: _write_png(tmp, arr), overwrite=overwrite)


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write an already encoded file (a DICOM SEG, ...) atomically."""
    return _atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


def write_csv(path: str | os.PathLike, rows: list[Mapping[str, Any]], *, overwrite: bool = False) -> Path:
    """Write dict rows as CSV; the header is the union of the keys in first-seen order.

    Missing keys give empty cells; floats keep full precision (``repr``), NaN is written ``nan``.
    An empty ``rows`` list writes an empty file.
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            if not columns:
                return
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    return _atomic_write(path, write, overwrite=overwrite)


def _stored_dtype(volume: np.ndarray) -> np.dtype:
    if volume.dtype == bool:
        return np.dtype(np.uint16)
    if volume.dtype.kind not in "iu":
        raise ValueError(f"DICOM stores integer pixels, got {volume.dtype}; pass stored values + rescale_slope")
    lo, hi = (int(volume.min()), int(volume.max())) if volume.size else (0, 0)
    if lo >= 0 and hi <= 65535:
        return np.dtype(np.uint16)
    if lo >= -32768 and hi <= 32767:
        return np.dtype(np.int16)
    raise ValueError(f"pixel values {lo}..{hi} do not fit 16 bits")


def _orientation(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = np.asarray(orientation, dtype=float)
    if iop.shape != (6,):
        raise ValueError(f"orientation needs 6 direction cosines (row then column), got {orientation}")
    row, col = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-4) and np.isclose(np.linalg.norm(col), 1, atol=1e-4)):
        raise ValueError(f"orientation vectors must have unit length, got {orientation}")
    if abs(float(row @ col)) > 1e-4:
        raise ValueError(f"orientation vectors must be orthogonal, got {orientation}")
    return row, col, np.cross(row, col)


def write_dicom_series(
    volume: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    series_description: str = "",
    modality: str = "MR",
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    uid_seed: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Write a ``(Z, H, W)`` integer volume as a DICOM series, one file per slice.

    Args:
        volume: stored pixel values, ``(Z, H, W)`` or ``(H, W)`` (one file); integer or bool,
            within uint16 or int16 range. Readers see ``stored * rescale_slope + rescale_intercept``.
        out_dir: folder for ``slice_0000.dcm``, ``slice_0001.dcm``, ... (created if missing).
        spacing: ``(dz, dy, dx)`` mm: slice step along the normal, row spacing, column spacing.
        origin: patient position (mm) of the first voxel of slice 0 (ImagePositionPatient).
        orientation: ImageOrientationPatient, the row (increasing column index) then column
            direction cosines; slice ``k`` lies at ``origin + k * dz * cross(row, col)``.
        series_description, modality: SeriesDescription and Modality ("MR", "CT", or any other
            value, stored as Secondary Capture).
        uid_seed: makes the study, series and instance UIDs reproducible; the series UID also
            depends on the description, modality, shape and geometry.
        overwrite: replace existing slice files instead of raising ``FileExistsError``.
    Returns:
        The written paths in slice order. The patient fields are fixed synthetic placeholders.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import format_number_as_ds

    vol = np.asarray(volume)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3 or 0 in vol.shape:
        raise ValueError(f"expected a (Z, H, W) or (H, W) volume, got shape {np.shape(volume)}")
    stored = vol.astype(_stored_dtype(vol))
    dz, dy, dx = check_spacing(spacing, 3)
    row, col, normal = _orientation(orientation)
    start = np.asarray(origin, dtype=float)
    if start.shape != (3,):
        raise ValueError(f"origin needs 3 coordinates in mm, got {origin}")
    modality = modality.upper()
    out = Path(out_dir)
    paths = [out / f"slice_{k:04d}.dcm" for k in range(stored.shape[0])]
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: file exists (pass overwrite=True to replace the series)")

    def ds_str(value: float) -> str:
        return format_number_as_ds(float(value))

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=["napari-segloss", str(uid_seed), *map(str, parts)])

    geometry = (stored.shape, spacing, tuple(orientation), tuple(origin))
    study_uid = uid("study")
    series_uid = uid("series", series_description, modality, *geometry)
    frame_uid = uid("frame", series_uid)
    sop_class = _SOP_CLASS.get(modality, _SECONDARY_CAPTURE)
    rescaled = stored.astype(np.float64) * rescale_slope + rescale_intercept
    lo, hi = float(rescaled.min()), float(rescaled.max())

    for k, path in enumerate(paths):
        position = start + k * dz * normal
        sop_uid = uid("instance", series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Synthetic^Phantom"
        ds.PatientID = f"SYNTH{uid_seed}"
        ds.PatientBirthDate = ds.PatientSex = ds.ReferringPhysicianName = ds.AccessionNumber = ""  # type 2: empty
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20000101", "000000", "1"
        ds.Modality = modality
        ds.SeriesDescription = series_description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ImagePositionPatient = [ds_str(v) for v in position]
        ds.ImageOrientationPatient = [ds_str(v) for v in (*row, *col)]
        ds.SliceLocation = ds_str(position @ normal)
        ds.PixelSpacing = [ds_str(dy), ds_str(dx)]
        ds.SliceThickness = ds_str(dz)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = int(stored.dtype.kind == "i")
        ds.RescaleSlope = ds_str(rescale_slope)
        ds.RescaleIntercept = ds_str(rescale_intercept)
        ds.WindowCenter = ds_str((lo + hi) / 2)
        ds.WindowWidth = ds_str(max(hi - lo, 1.0))
        ds.PixelData = np.ascontiguousarray(stored[k]).astype(stored.dtype.newbyteorder("<")).tobytes()
        _atomic_write(path, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True), overwrite=overwrite)
    return paths
