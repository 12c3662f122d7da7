"""PNG/JPG/BMP (Pillow) and TIFF (tifffile) reading, and the mask-file convention.

Grey images keep their bit depth (8- or 16-bit PNG, any TIFF dtype). A colour image whose three
channels are equal is returned grey; an opaque alpha channel is dropped. TIFF multi-page stacks
become ``(Z, H, W)``; ImageJ/tifffile metadata (voxel size and unit) gives the spacing in mm.
The size a header declares is checked against the memory budget
(:func:`napari_segloss.io.budget.check_voxel_budget`) before pixels are decoded; Pillow's own
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is reported the same way. Failures
reach callers as ScanReadError through the format registry (:mod:`napari_segloss.io.formats`).

Masks: a file whose stem ends in ``_mask`` (the seed tool's ``image.png`` + ``image_mask.png``
convention; also ``_seg``, ``_label``, ``_labels``) is read as labels. Two-level masks (0/255,
0/1, JPEG's near-binary values) become uint8 0/1; label maps with more values keep them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from napari_segloss.io import Scan, ScanReadError
from napari_segloss.io.budget import check_voxel_budget
from napari_segloss.io.formats import stem_of

_MASK_STEM = re.compile(r"[_-](mask|seg|label|labels)$", re.IGNORECASE)
_MM_PER_UNIT = {
    "mm": 1.0,
    "millimeter": 1.0,
    "cm": 10.0,
    "centimeter": 10.0,
    "m": 1000.0,
    "um": 1e-3,
    "µm": 1e-3,
    "\u00b5m": 1e-3,
    "micron": 1e-3,
    "micrometer": 1e-3,
    "nm": 1e-6,
}
_RESUNIT_CENTIMETER = 3


def is_mask_name(path: str | Path) -> bool:
    """Whether a file name follows the mask convention (``x_mask.png``, ``x_seg.nii.gz``, ...)."""
    return bool(_MASK_STEM.search(stem_of(Path(path).name)))


def as_labels(data: np.ndarray, *, lossy: bool = False, rgb: bool = False) -> np.ndarray:
    """Mask file content as labels.

    Args:
        data: spatial array, with a trailing colour axis when ``rgb`` (a pixel is set if any
            channel is).
        lossy: JPEG input; thresholded at half the value range (compression leaves values
            that are neither 0 nor 255).
    Returns:
        uint8 0/1 for a two-level mask; otherwise the integer labels (float input rounded).
    """
    arr = np.asarray(data)
    if rgb:
        arr = arr.max(axis=-1)
    if lossy:
        top = np.iinfo(arr.dtype).max if arr.dtype.kind in "iu" else float(arr.max())
        return (arr > top / 2).astype(np.uint8)
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        return (arr > 0.5).astype(np.uint8)
    values = np.unique(arr)
    if values.size <= 2:
        return (arr > 0).astype(np.uint8) if values.min() >= 0 else (arr == values.max()).astype(np.uint8)
    lo, hi = int(values.min()), int(values.max())
    for dtype in (np.uint8, np.uint16):
        if lo >= 0 and hi <= np.iinfo(dtype).max:
            return arr.astype(dtype)
    return arr.astype(np.int32)


def _drop_trivial_colour(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    """Drop an opaque alpha and collapse equal RGB channels; returns (data, still colour)."""
    opaque = np.iinfo(arr.dtype).max if arr.dtype.kind in "iu" else 1.0
    if arr.shape[-1] == 4 and np.all(arr[..., 3] == opaque):
        arr = arr[..., :3]
    if arr.shape[-1] == 2:  # grey + alpha
        return arr[..., 0], False
    if arr.shape[-1] == 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return arr[..., 0], False
    return arr, True


def _read_pillow(path: Path, mask: bool) -> tuple[np.ndarray, bool, dict]:
    """(data, still colour, metadata) of a Pillow image; the size is checked before decoding."""
    from PIL import Image

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ScanReadError(f"{path}: refused by Pillow's decompression-bomb limit ({exc})") from None
    with img:
        width, height = img.size
        limit = Image.MAX_IMAGE_PIXELS
        if limit and width * height > limit:  # Pillow only warned: its limit still holds
            raise ScanReadError(
                f"{path}: the image declares {width} x {height} pixels, more than Pillow's "
                f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)"
            )
        check_voxel_budget((height, width, len(img.getbands())), path)
        img.load()
        mode, fmt = img.mode, (img.format or "").lower()
        if mode == "P" and not mask:  # palette image: colours; a palette mask keeps its indices
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB")
        arr = np.array(img)
    if arr.ndim == 3:
        arr, rgb = _drop_trivial_colour(arr)
    else:
        rgb = False
    return arr, rgb, {"format": fmt, "mode": mode}


def _tiff_spacing(tif, n_spatial: int) -> tuple[float, ...] | None:
    """mm per spatial axis from tifffile/ImageJ metadata; None (unknown) without a physical unit."""
    shaped = (tif.shaped_metadata or ({},))[0] if tif.is_shaped else {}
    imagej = tif.imagej_metadata or {}
    unit = str(imagej.get("unit") or shaped.get("unit") or "").strip().lower()
    factor = _MM_PER_UNIT.get(unit)
    spacing = shaped.get("spacing")
    if factor and isinstance(spacing, list) and len(spacing) == n_spatial:  # written by io.writers
        return tuple(float(s) * factor for s in spacing)
    page = tif.pages.first
    if factor is None and page.resolutionunit == _RESUNIT_CENTIMETER:
        factor = 10.0
    if factor is None:  # no unit, or inches (usually a print DPI, not a pixel size)
        return None
    x_res, y_res = page.resolution
    dx = factor / x_res if x_res else 1.0
    dy = factor / y_res if y_res else 1.0
    dz = float(imagej.get("spacing", 1.0)) * factor if "spacing" in imagej else 1.0
    return (dz, dy, dx)[-n_spatial:]


def _read_tiff(path: Path) -> list[tuple[np.ndarray, bool, tuple[float, ...] | None, str]]:
    """(data, rgb, spacing, suffix) per channel: pages become Z; a C axis splits into scans."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ScanReadError(f"{path}: the TIFF holds no image")
        series = tif.series[0]
        check_voxel_budget(series.shape, path)
        data = series.asarray()
        axes = series.axes
        # drop singleton axes, except Y and X
        keep = [i for i, a in enumerate(axes) if data.shape[i] > 1 or a in "YX"]
        data = data.reshape([data.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
        rgb = "S" in axes and data.shape[axes.index("S")] in (3, 4)
        if "S" in axes:
            data = np.moveaxis(data, axes.index("S"), -1)
            axes = axes.replace("S", "") + "S"
        channels = [data] if "C" not in axes else list(np.moveaxis(data, axes.index("C"), 0))
        axes = axes.replace("C", "")
        n_stack = len(axes) - 2 - int("S" in axes)
        out = []
        for k, channel in enumerate(channels):
            tail = channel.shape[n_stack:]
            arr = channel.reshape(-1, *tail) if n_stack else channel
            if n_stack and arr.shape[0] == 1:
                arr = arr[0]
            n_spatial = arr.ndim - int("S" in axes)
            suffix = f" [channel {k}]" if len(channels) > 1 else ""
            out.append((arr, rgb, _tiff_spacing(tif, n_spatial), suffix))
    return out


def _scans(path: Path, parts: list[tuple[np.ndarray, bool, tuple[float, ...] | None, str]], metadata: dict,
           *, lossy: bool) -> list[Scan]:
    """One Scan per ``(data, rgb, spacing, name suffix)`` part (spacing None: unknown, 1.0 per
    axis and ``spacing_known=False``); labels for mask file names."""
    mask = is_mask_name(path)
    scans = []
    for arr, rgb, spacing, name_suffix in parts:
        if arr.ndim - int(rgb) not in (2, 3):
            raise ScanReadError(f"{path}: expected a 2D image or a 3D stack, got shape {arr.shape}")
        known = spacing is not None
        spacing = spacing if known else (1.0,) * (arr.ndim - int(rgb))
        if mask:
            arr, rgb = as_labels(arr, lossy=lossy, rgb=rgb), False
        scans.append(
            Scan(
                data=arr,
                spacing=tuple(float(s) for s in spacing),
                origin=(0.0,) * len(spacing),
                name=stem_of(path.name) + name_suffix,
                metadata=dict(metadata),
                kind="labels" if mask else "image",
                spacing_known=known,
            )
        )
    return scans


def read_image(path: str | Path) -> list[Scan]:
    """Read a PNG/JPG/BMP image (Pillow; the format is Pillow's reading of the content).

    Returns one Scan, ``kind="labels"`` for mask file names (a JPEG mask is thresholded at half
    range). Raises ScanReadError for sizes over the budget or Pillow's limit.
    """
    path = Path(path)
    arr, rgb, metadata = _read_pillow(path, is_mask_name(path))
    parts = [(arr, rgb, None, "")]  # Pillow formats record no pixel size
    return _scans(path, parts, metadata, lossy=metadata["format"] == "jpeg")


def read_tiff(path: str | Path) -> list[Scan]:
    """Read a TIFF: one page ``(H, W)``, a multi-page stack ``(Z, H, W)``, 8/16/32-bit, float, RGB.

    Returns one Scan (one per channel for a multi-channel non-RGB TIFF); ``kind="labels"`` for
    mask file names. Raises ScanReadError for an empty TIFF or a size over the budget.
    """
    path = Path(path)
    return _scans(path, _read_tiff(path), {"format": "tiff"}, lossy=False)
