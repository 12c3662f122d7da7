"""Seeded fuzzing of the readers: byte-flipped and truncated PNG/TIFF/NIfTI/DICOM files.

Whatever the damage, :func:`napari_segloss.io.read_scans` either returns scans or raises
:class:`~napari_segloss.io.ScanReadError`: never ``zlib.error``, ``struct.error``,
``OverflowError``, a Rust decoder's ``PanicException`` (RLE DICOM) or any other type, and never
more memory than the budget (set low here, so a mutated header declaring a huge volume is
refused instead of allocated). Small enough for CI: about 300 files, a few seconds.
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file

from napari_segloss.io import Scan, ScanReadError, budget, read_scans

MUTANTS_PER_SEED = 40
RNG = np.random.default_rng(20)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    """Small valid files, one per format and decoder path (file name -> bytes)."""
    grey = RNG.integers(0, 256, size=(24, 20), dtype=np.uint8)
    tiff = io.BytesIO()
    tifffile.imwrite(tiff, RNG.integers(0, 4000, size=(3, 16, 12), dtype=np.uint16), compression="zlib")
    nifti = nib.Nifti1Image(RNG.random((6, 5, 4), dtype=np.float32), np.diag([1.0, 2.0, 3.0, 1.0])).to_bytes()
    seeds = {
        "grey.png": _png(grey),
        "rgb.png": _png(RNG.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)),
        "stack.tif": tiff.getvalue(),
        "volume.nii": nifti,
        "volume.nii.gz": gzip.compress(nifti),
    }
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"):  # raw, RLE (Rust), JPEG 2000
        seeds[name] = Path(get_testdata_file(name)).read_bytes()
    return seeds


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Truncate (one mutant in three) or overwrite 1-8 random bytes."""
    if rng.random() < 1 / 3:
        return data[: int(rng.integers(0, len(data)))]
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
    return bytes(out)


@pytest.mark.parametrize("name", sorted(_seeds()))
def test_damaged_files_raise_only_scan_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(budget.MAX_VOXELS_ENV, str(10**6))
    data = _seeds()[name]
    seed_path = tmp_path / name
    seed_path.write_bytes(data)
    assert all(isinstance(s, Scan) for s in read_scans(seed_path))  # the undamaged file reads
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    outcomes = {"read": 0, "refused": 0}
    for k in range(MUTANTS_PER_SEED):
        path = tmp_path / f"m{k:02d}_{name}"
        path.write_bytes(_mutate(data, rng))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                scans = read_scans(path)
            except ScanReadError as exc:
                assert path.name in str(exc) and "\n" not in str(exc)
                outcomes["refused"] += 1
                continue
        assert scans and all(isinstance(s, Scan) and s.data.size <= 10**6 for s in scans)
        outcomes["read"] += 1
    assert outcomes["refused"] > 0  # the damage was real: some mutants must be refused
