"""Write synthetic datasets to disk: PNG or TIFF image/mask pairs, or DICOM series of volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_segloss.data.synthetic import generate_slice, generate_volume, split_seeds

FORMATS: tuple[str, ...] = ("png", "tiff", "dicom")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Window a 16-bit scan to 8 bits (0.5–99.5 percentile → 0–255), as PNG datasets store it."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    scaled = (image.astype(np.float32) - lo) * (255.0 / max(float(hi - lo), 1.0))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def write_dataset(
    out_dir: str | os.PathLike,
    n: int,
    *,
    fmt: str = "png",
    size: int = 256,
    base_seed: int = 0,
    split: str = "test",
    plane: str = "random",
    depth: int = 64,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``n`` synthetic samples of a split and a ``manifest.csv`` describing them.

    Args:
        out_dir: folder, created if missing.
        n: number of samples (slices for png/tiff, volumes for dicom).
        fmt: ``"png"``: ``name.png`` (8-bit, windowed at the 0.5/99.5 percentiles) +
            ``name_mask.png`` (0/255), the seed tool's convention; ``"tiff"``: ``name.tif``
            (uint16 as generated, pixel size in mm) + ``name_mask.tif`` (0/1); ``"dicom"``: one
            series folder ``name/`` per (depth, size, size) volume (MR, spacing, position,
            orientation and rescale tags) + ``name_mask.tif`` (0/1, with spacing).
        size: image side in pixels.
        base_seed: first seed within the split (see :func:`split_seeds`).
        split: "train", "val" or "test": the seeds are that split's.
        plane: slice plane for png/tiff ("axial", "coronal", "sagittal" or "random").
        depth: slices per volume (dicom).
        overwrite: replace existing files instead of raising ``FileExistsError``.
    Returns:
        The image paths (png/tiff files, or dicom series folders) in seed order; names are
        ``<split>_<index>_<kind>``.
    """
    from napari_segloss.io.writers import write_array, write_csv, write_dicom_series

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    rows: list[dict] = []
    for index, seed in enumerate(split_seeds(split, n, base_seed)):
        if fmt == "dicom":
            sample = generate_volume(seed, (depth, size, size))
        else:
            sample = generate_slice(seed, size, plane=plane)
        name = f"{split}_{index:04d}_{sample.kind}"
        if fmt == "png":
            image = write_array(out / f"{name}.png", to_uint8(sample.image), overwrite=overwrite)
            mask = write_array(out / f"{name}_mask.png", sample.mask, overwrite=overwrite)
        elif fmt == "tiff":
            image = write_array(out / f"{name}.tif", sample.image, spacing=sample.spacing, overwrite=overwrite)
            mask = write_array(out / f"{name}_mask.tif", sample.mask, spacing=sample.spacing, overwrite=overwrite)
        else:
            dz, dy, dx = sample.spacing
            # axial slices, inferior → superior; rows run posterior, columns to the subject's
            # left (LPS patient axes: +x left, +y posterior, +z superior)
            origin = (-(size - 1) / 2 * dx, -(size - 1) / 2 * dy, -(depth - 1) / 2 * dz)
            write_dicom_series(
                sample.image, out / name, spacing=sample.spacing, origin=origin, orientation=(1, 0, 0, 0, 1, 0),
                series_description=f"synthetic T1 post-contrast ({sample.kind})", uid_seed=seed,
                overwrite=overwrite,
            )
            image = out / name
            mask = write_array(out / f"{name}_mask.tif", sample.mask, spacing=sample.spacing, overwrite=overwrite)
        paths.append(image)
        rows.append({
            "name": name, "image": image.name, "mask": mask.name, "seed": seed, "kind": sample.kind,
            "plane": sample.plane, "spacing_mm": " ".join(f"{s:.4f}" for s in sample.spacing),
            "tumour_pixels": int(sample.mask.sum()), "brain_pixels": int(sample.brain.sum()),
        })
    write_csv(out / "manifest.csv", rows, overwrite=overwrite)
    return paths
