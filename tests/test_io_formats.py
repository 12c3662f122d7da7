"""The file-format registry, the memory budget and the reader's refusals (issues 15 and 20).

Covers: the registry against the npe2 manifest and the other suffix users; recognition by name
and by content; FIFOs, devices and unreadable folders (``get_reader`` never raises, nothing
blocks); one ``ScanReadError`` out of every reader, ``BaseException`` panics included; bombs
refused from their headers (NIfTI, PNG, TIFF, DICOM) before anything is allocated; the ZIP
limits (many small members, deflate64, bad names).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from npe2 import PluginManifest
from PIL import Image
from pydicom.data import get_testdata_file

from napari_segloss import batch
from napari_segloss.batch import archive
from napari_segloss.io import ScanReadError, budget, formats, read_scans, write_dicom_series, writers
from napari_segloss.napari._reader import get_reader
from napari_segloss.train import data as train_data

MANIFEST = Path(__file__).resolve().parents[1] / "src" / "napari_segloss" / "napari.yaml"
GREY = np.random.default_rng(5).integers(0, 256, size=(24, 20)).astype(np.uint8)
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR with correct CRCs) declaring ``width`` x ``height`` grey pixels,
    followed by a one-row IDAT: a few dozen bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def _run_with_timeout(call, seconds: float = 10.0):
    """Run ``call()`` in a thread; fail the test if it does not finish (a FIFO would block)."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call blocked"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


# --- one registry ----------------------------------------------------------------------------


def test_manifest_patterns_and_writer_extensions_equal_the_registry() -> None:
    manifest = PluginManifest.from_file(MANIFEST)
    (reader,) = manifest.contributions.readers
    assert sorted(reader.filename_patterns) == sorted(formats.manifest_patterns())
    assert len(set(reader.filename_patterns)) == len(reader.filename_patterns)
    (writer,) = manifest.contributions.writers
    assert sorted(writer.filename_extensions) == sorted(formats.writable_suffixes())
    assert set(writers.ARRAY_SUFFIXES) == set(formats.writable_suffixes())
    assert train_data.IMAGE_SUFFIXES is formats.SUFFIXES


def test_every_suffix_has_one_format_and_names_resolve() -> None:
    assert len(formats.SUFFIXES) == len(set(formats.SUFFIXES))
    assert all(s == s.lower() and s.startswith(".") for s in formats.SUFFIXES)
    assert formats.by_name("scan.NII.GZ").name == "nifti" and formats.by_name("a.JPEG").lossy
    assert formats.by_name("sub/DICOMDIR").name == "dicomdir" and formats.by_name("notes.txt") is None
    assert formats.stem_of("case_mask.nii.gz") == "case_mask" and formats.stem_of("IM0001") == "IM0001"
    with pytest.raises(ValueError, match="unknown format .webp.; known: dicom, png"):
        formats.get("webp")


def test_content_recognises_files_whose_name_says_nothing(tmp_path: Path) -> None:
    (tmp_path / "png_noext").write_bytes(_png_bytes(GREY))
    tifffile.imwrite(tmp_path / "tiff_noext", GREY)
    (tmp_path / "nifti_noext").write_bytes(nib.Nifti1Image(GREY[..., None].astype(np.int16), np.eye(4)).to_bytes())
    shutil.copy(CT_SMALL, tmp_path / "1.2.840.113619.2")  # a DICOM named by its UID: no real suffix
    (tmp_path / "notes").write_text("plain text, no magic")
    expected = {"png_noext": "png", "tiff_noext": "tiff", "nifti_noext": "nifti", "1.2.840.113619.2": "dicom"}
    for name, fmt in expected.items():
        assert formats.detect(tmp_path / name).name == fmt
        assert get_reader(str(tmp_path / name)) is not None
    assert formats.detect(tmp_path / "notes") is None and get_reader(str(tmp_path / "notes")) is None
    np.testing.assert_array_equal(read_scans(tmp_path / "png_noext")[0].data, GREY)
    np.testing.assert_array_equal(read_scans(tmp_path / "tiff_noext")[0].data, GREY)
    ct = pydicom.dcmread(CT_SMALL)
    np.testing.assert_array_equal(read_scans(tmp_path / "1.2.840.113619.2")[0].data,
                                  ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept))


def test_jpeg_is_lossy_by_content_whatever_the_name(tmp_path: Path) -> None:
    mask = np.zeros((24, 20), np.uint8)
    mask[5:15, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "x_mask", "JPEG", quality=70)  # no suffix: Pillow says JPEG
    assert formats.is_lossy(tmp_path / "x_mask")
    scan = read_scans(tmp_path / "x_mask")[0]
    assert scan.kind == "labels"
    np.testing.assert_array_equal(scan.data, mask > 0)  # thresholded, not the artefacts' levels


# --- not regular files, unreadable folders ---------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_device_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    assert _run_with_timeout(lambda: get_reader(str(fifo))) is None
    with pytest.raises(ScanReadError, match=r"scan\.png: not a regular file or folder \(a FIFO\)"):
        _run_with_timeout(lambda: read_scans(fifo))
    os.mkfifo(tmp_path / "IM0001")  # extension-less: sniffing must not open it
    assert _run_with_timeout(lambda: get_reader(str(tmp_path / "IM0001"))) is None
    if Path("/dev/null").exists():
        assert get_reader("/dev/null") is None
        with pytest.raises(ScanReadError, match="character device"):
            read_scans("/dev/null")
    found = _run_with_timeout(lambda: batch.discover(tmp_path))
    reasons = {e.path: e.reason for e in found.entries}
    assert "not a regular file" in reasons["scan.png"] and not found.items
    os.mkfifo(tmp_path / "cohort.zip")
    with pytest.raises(archive.ArchiveError, match=r"cohort\.zip: not a regular file"):
        _run_with_timeout(lambda: archive.safe_extract(tmp_path / "cohort.zip", tmp_path / "out"))


def test_get_reader_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_series(np.zeros((2, 4, 4), np.uint16), tmp_path / "study" / "series")
    (tmp_path / "study" / "locked").mkdir()
    (tmp_path / "locked_only" / "locked").mkdir(parents=True)
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def stat(path, *args, **kwargs):
        if "forbidden" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    assert get_reader(str(tmp_path / "study")) is not None  # the readable part still counts
    assert get_reader(str(tmp_path / "locked_only")) is None
    assert get_reader(str(tmp_path / "forbidden.png")) is None
    assert get_reader("x" * 5000 + ".png") is None  # ENAMETOOLONG
    assert get_reader(str(tmp_path / "nul\0byte.png")) is None
    assert get_reader([]) is None and get_reader(3) is None  # type: ignore[arg-type]
    with pytest.raises(ScanReadError, match="forbidden.png: cannot be opened"):
        read_scans(tmp_path / "forbidden.png")


# --- one error type --------------------------------------------------------------------------


class PanicException(BaseException):
    """Stands for ``pyo3_runtime.PanicException``: a Rust decoder's panic is a BaseException."""


@pytest.mark.parametrize("error", [PanicException("index out of bounds"), MemoryError(), zlib.error("bad"),
                                   struct.error("unpack"), OverflowError("too big"), NotImplementedError("x")])
def test_any_reader_failure_is_one_scan_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(_png_bytes(GREY))

    def broken(_path):
        raise error

    monkeypatch.setattr("napari_segloss.io.raster.read_image", broken)
    with pytest.raises(ScanReadError, match=rf"scan\.png: unreadable PNG image \({type(error).__name__}") as info:
        read_scans(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(2), GeneratorExit()])
def test_interrupts_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(_png_bytes(GREY))

    def interrupted(_path):
        raise error

    monkeypatch.setattr("napari_segloss.io.raster.read_image", interrupted)
    with pytest.raises(type(error)):
        read_scans(path)


# --- memory budget ---------------------------------------------------------------------------


def test_tiny_nifti_declaring_a_huge_volume_is_refused_from_its_header(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((4096, 4096, 4096))
    path = tmp_path / "bomb.nii.gz"
    header.set_qform(np.eye(4))
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 64))  # header, no voxels
    assert path.stat().st_size < 200
    tracemalloc.start()
    try:
        with pytest.raises(ScanReadError, match=r"bomb\.nii\.gz: the header declares \(4096, 4096, 4096\) = 68\.72 G"):
            read_scans(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_png_bombs_are_refused_from_the_header(tmp_path: Path) -> None:
    (tmp_path / "huge.png").write_bytes(_png_declaring(100_000, 100_000))
    with pytest.raises(ScanReadError, match=r"huge\.png: refused by Pillow's decompression-bomb limit .*10000000000 pixels"):
        read_scans(tmp_path / "huge.png")
    (tmp_path / "warned.png").write_bytes(_png_declaring(10_000, 9_000))  # Pillow only warns here
    with pytest.raises(ScanReadError, match=r"warned\.png: the image declares 10000 x 9000 pixels"):
        read_scans(tmp_path / "warned.png")


def test_tiff_declaring_a_huge_page_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(path, mode="r+b") as tif:  # 512 bytes on disk, 3.6 G pixels declared
        tif.pages[0].tags["ImageWidth"].overwrite(60_000)
        tif.pages[0].tags["ImageLength"].overwrite(60_000)
    with pytest.raises(ScanReadError, match=r"huge\.tif: the header declares \(60000, 60000\) = 3\.60 G values"):
        read_scans(path)


def test_dicom_header_budget_per_file_and_per_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = pydicom.dcmread(CT_SMALL)
    ds.Rows = ds.Columns = 60_000  # the pixel data stays 128 x 128
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(ScanReadError, match=r"huge\.dcm: the header declares \(1, 60000, 60000, 1\)"):
        read_scans(tmp_path / "huge.dcm")
    write_dicom_series(np.zeros((3, 8, 8), np.uint16), tmp_path / "series")
    monkeypatch.setenv(budget.MAX_VOXELS_ENV, "150")  # one file (64) fits, three (192) do not
    with pytest.raises(ScanReadError, match=r"series: the DICOM files read so far hold \(192,\)"):
        read_scans(tmp_path / "series")
    monkeypatch.setenv(budget.MAX_VOXELS_ENV, "192")
    assert read_scans(tmp_path / "series")[0].data.shape == (3, 8, 8)


def test_budget_is_configurable_and_a_bad_value_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(_png_bytes(GREY))
    assert budget.max_voxels() == budget.DEFAULT_MAX_VOXELS
    monkeypatch.setenv(budget.MAX_VOXELS_ENV, str(GREY.size - 1))
    with pytest.raises(ScanReadError, match=r"scan\.png: the header declares \(24, 20, 1\) = 0\.0 M values"):
        read_scans(path)
    monkeypatch.setenv(budget.MAX_VOXELS_ENV, str(GREY.size))
    assert read_scans(path)[0].data.shape == GREY.shape
    monkeypatch.setenv(budget.MAX_VOXELS_ENV, "5e8")
    assert budget.max_voxels() == 500_000_000
    for bad in ("lots", "0", "-3", "1.5", "inf", "nan"):
        monkeypatch.setenv(budget.MAX_VOXELS_ENV, bad)
        with pytest.raises(budget.BudgetConfigError, match=rf"NAPARI_SEGLOSS_MAX_VOXELS='{bad}' is not a positive"):
            read_scans(path)


# --- ZIP limits ------------------------------------------------------------------------------


def _zip_of_small_members(path: Path, count: int, size: int) -> None:
    """A ZIP written by hand (fast: one deflate) of ``count`` ``size``-byte zero members."""
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = body.compress(bytes(size)) + body.flush()
    crc = zlib.crc32(bytes(size))
    central = []
    with open(path, "wb") as out:
        for i in range(count):
            name, offset = f"case{i:04d}.png".encode(), out.tell()
            out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(packed), size, len(name), 0))
            out.write(name + packed)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(packed),
                                       size, len(name), 0, 0, 0, 0, 0, offset) + name)
        directory, at = b"".join(central), out.tell()
        out.write(directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), at, 0))


def test_zip_of_many_small_members_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "many.zip"
    _zip_of_small_members(src, 2200, 2**20)  # each member passes the 1 MiB per-member floor
    assert src.stat().st_size < 2.5 * 2**20
    with zipfile.ZipFile(src) as z:  # a valid archive of 2.15 GiB
        assert sum(i.file_size for i in z.infolist()) == 2200 * 2**20 and z.read("case2199.png") == bytes(2**20)
    with pytest.raises(archive.ArchiveError, match=r"2200 members expand \d+:1 together \(2\.15 GiB"):
        archive.safe_extract(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _patch_member(path: Path, name: bytes, *, method: int | None = None, new_name: bytes | None = None) -> None:
    """Change a member's compression method or name bytes (same length; sets the UTF-8 flag) in
    both its local header and its central-directory entry."""
    raw = bytearray(path.read_bytes())
    for signature, flag_at, method_at, name_at in ((b"PK\x03\x04", 6, 8, 30), (b"PK\x01\x02", 8, 10, 46)):
        at = raw.index(signature)
        while raw[at + name_at: at + name_at + len(name)] != name:
            at = raw.index(signature, at + 4)
        if method is not None:
            raw[at + method_at: at + method_at + 2] = struct.pack("<H", method)
        if new_name is not None:
            raw[at + name_at: at + name_at + len(name)] = new_name
            raw[at + flag_at + 1] |= 0x08  # bit 11: the name is UTF-8
    path.write_bytes(bytes(raw))


def test_zip_members_that_cannot_be_read_are_refused_not_fatal(tmp_path: Path) -> None:
    src = tmp_path / "odd.zip"
    long_name = "d" * 300 + ".png"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("ok.png", _png_bytes(GREY))
        z.writestr("d64.png", _png_bytes(GREY))
        z.writestr(long_name, _png_bytes(GREY))
        z.writestr("IM0001", CT_SMALL.read_bytes())  # extension-less DICOM, kept by its marker
        z.writestr("d64noext", CT_SMALL.read_bytes())
    _patch_member(src, b"d64.png", method=9)  # deflate64: zipfile cannot decode it
    _patch_member(src, b"d64noext", method=9)
    got = archive.safe_extract(src, tmp_path / "out")
    assert sorted(got.extracted) == ["IM0001", "ok.png"]
    reasons = {r.name: r.reason for r in got.refused}
    assert reasons["d64.png"].startswith("unsupported compression method 9")
    assert reasons["d64noext"].startswith("unsupported compression method 9")
    assert reasons[long_name].startswith("cannot be extracted")
    bad = tmp_path / "badname.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("ab.png", _png_bytes(GREY))
    _patch_member(bad, b"ab.png", new_name=b"\xff\xfe.png")
    with pytest.raises(archive.ArchiveError, match=r"badname\.zip: not a readable ZIP file \(UnicodeDecodeError"):
        archive.safe_extract(bad, tmp_path / "out2")


def test_a_panicking_file_in_a_dicom_folder_is_skipped_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_segloss.io import ScanReadWarning, dicom

    write_dicom_series(np.arange(3 * 4 * 4, dtype=np.uint16).reshape(3, 4, 4), tmp_path / "series")
    real_load = dicom._load

    def load(path: Path):
        if path.name.endswith("0001.dcm"):
            raise PanicException("called `Option::unwrap()` on a `None` value")
        return real_load(path)

    monkeypatch.setattr(dicom, "_load", load)
    with pytest.warns(ScanReadWarning, match=r"slice_0001\.dcm: unreadable DICOM file \(PanicException"):
        (scan,) = read_scans(tmp_path / "series")
    assert scan.data.shape == (2, 4, 4)


def test_batch_discovery_lists_an_unreadable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "a.png").write_bytes(_png_bytes(GREY))
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = batch.discover(tmp_path)
    assert [i.name for i in found.items] == ["a"]
    reasons = {e.path: e.reason for e in found.entries}
    assert reasons["locked/"] == "folder cannot be read (Permission denied)"


def test_batch_pairing_uses_the_registry_names_and_content(tmp_path: Path) -> None:
    mask = (GREY > 128).astype(np.uint8) * 255
    (tmp_path / "a.v2.png").write_bytes(_png_bytes(GREY))
    (tmp_path / "a.v2_mask.png").write_bytes(_png_bytes(mask))
    nib.save(nib.Nifti1Image(GREY[..., None].astype(np.int16), np.eye(4)), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image((mask[..., None] > 0).astype(np.uint8), np.eye(4)), tmp_path / "scan_seg.NII.GZ")
    (tmp_path / "noext").write_bytes(_png_bytes(GREY))  # recognised by content
    (tmp_path / "noext_mask.png").write_bytes(_png_bytes(mask))
    (tmp_path / "notes.txt").write_text("not a scan")
    found = batch.discover(tmp_path)
    pairs = {i.name: (i.source, i.mask_source) for i in found.items}
    assert pairs == {"a.v2": ("a.v2.png", "a.v2_mask.png"), "scan": ("scan.nii.gz", "scan_seg.NII.GZ"),
                     "noext": ("noext", "noext_mask.png")}
    reasons = {e.path: e.reason for e in found.entries}
    assert reasons["notes.txt"].startswith("not an image file (.txt")
