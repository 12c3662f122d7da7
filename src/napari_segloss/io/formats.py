"""The file formats the plugin reads and writes: one registry, read by every part that asks.

:data:`FORMATS` lists each format once: its name, the file-name suffixes it claims, the magic
bytes that identify it when the name says nothing (``Format.magic``, a test on the first
:data:`HEAD_BYTES` bytes, so a ZIP member is sniffed like a file), its reader and its writer.
:func:`napari_segloss.io.read_scans`, the npe2 reader, batch pairing, ZIP member filtering and
the training-folder loader all ask this module which files are scans, so a new format is its
reader module, one entry here and its ``*.suffix`` patterns in ``napari.yaml``
(``tests/test_io_formats.py`` checks the manifest against :func:`manifest_patterns`).

How a path is recognised (:func:`detect`): a folder is a DICOM series folder; otherwise an exact
file name (``DICOMDIR``), then the suffix (case-insensitive), then the content of the first
:data:`HEAD_BYTES` bytes. Only regular files are opened, so a FIFO or a device never blocks a
caller. :func:`read` dispatches to the reader and turns *anything* a reader or a native decoder
raises (``zlib.error``, ``struct.error``, a Rust ``PanicException``, ...) into one
:class:`~napari_segloss.io.ScanReadError` naming the file; only ``KeyboardInterrupt``,
``SystemExit`` and ``GeneratorExit`` pass through.
"""

from __future__ import annotations

import importlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from napari_segloss.io import Scan

#: bytes read from the start of a file to recognise its format (DICOM's marker ends at 132)
HEAD_BYTES = 132
#: regular files of a folder checked for DICOM before the folder counts as a series folder
FOLDER_SNIFF_FILES = 64
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)
_REASON_CHARS = 300
_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISSOCK, "a socket"))
_T = TypeVar("_T")


def _png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _bmp(head: bytes) -> bool:
    return head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00"  # reserved fields are zero


def _tiff(head: bytes) -> bool:
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def _nifti(head: bytes) -> bool:
    """An uncompressed NIfTI-1/-2 (or ANALYZE) header: ``sizeof_hdr`` of 348 or 540, either order."""
    return head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c", b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")


def _dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM"


@dataclass(frozen=True)
class Format:
    """One file format.

    Attributes:
        name: short identifier (``"png"``, ``"dicom"``, ...).
        title: how messages name a file of this format (``"PNG image"``).
        suffixes: lower-case file-name endings with the dot (``(".nii", ".nii.gz")``).
        reader: ``"module:function"`` taking a :class:`~pathlib.Path` and returning
            ``list[Scan]``; imported on first use, so the registry costs no import.
        writer: ``"module:function"`` writing an array to this format
            (``write_array(path, data, *, spacing, overwrite) -> Path``), or None.
        magic: recognises the format from a file's first :data:`HEAD_BYTES` bytes, or None.
        file_names: exact file names (upper case) that are this format whatever their suffix.
        lossy: pixel values are altered by compression (JPEG): masks must be thresholded.
        folder: the reader takes a folder, not a file.
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    reader: str
    writer: str | None = None
    magic: Callable[[bytes], bool] | None = None
    file_names: tuple[str, ...] = ()
    lossy: bool = False
    folder: bool = False

    def read(self, path: str | os.PathLike, **options: Any) -> list[Scan]:
        """Read ``path`` with this format's reader, passing ``options`` on (the DICOM folder
        reader's ``series_uid``); every failure is a ScanReadError (see the module docstring)."""
        path = Path(path)
        return guarded(path, self.title, lambda: _resolve(self.reader)(path, **options))


#: the formats; magic is tried in this order, so DICOM (whose marker sits at byte 128, after a
#: preamble that may itself look like a TIFF header) comes first
FORMATS: tuple[Format, ...] = (
    Format("dicom", "DICOM file", (".dcm", ".dicom", ".ima"), "napari_segloss.io.dicom:read_dicom_file", magic=_dicom),
    Format("png", "PNG image", (".png",), "napari_segloss.io.raster:read_image",
           "napari_segloss.io.writers:write_array", _png),
    Format("jpeg", "JPEG image", (".jpg", ".jpeg"), "napari_segloss.io.raster:read_image", magic=_jpeg, lossy=True),
    Format("bmp", "BMP image", (".bmp",), "napari_segloss.io.raster:read_image", magic=_bmp),
    Format("tiff", "TIFF image", (".tif", ".tiff"), "napari_segloss.io.raster:read_tiff",
           "napari_segloss.io.writers:write_array", _tiff),
    Format("nifti", "NIfTI image", (".nii", ".nii.gz"), "napari_segloss.io.nifti:read_nifti",
           "napari_segloss.io.writers:write_array", _nifti),
    Format("dicomdir", "DICOMDIR", (), "napari_segloss.io.dicom:read_dicomdir", file_names=("DICOMDIR",)),
    Format("dicom-folder", "DICOM folder", (), "napari_segloss.io.dicom:read_dicom_folder", folder=True),
)
_BY_NAME = {f.name: f for f in FORMATS}
#: read when neither name nor content says what a file is: old DICOM datasets carry no marker
FALLBACK = _BY_NAME["dicom"]
#: every suffix some format claims, in registry order
SUFFIXES: tuple[str, ...] = tuple(s for f in FORMATS for s in f.suffixes)


def get(name: str) -> Format:
    """The format called ``name``; ValueError listing the names otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(_BY_NAME)}") from None


def suffix_of(name: str) -> str:
    """The registered suffix ``name`` ends in (lower case, ``".nii.gz"`` whole), or ``""``."""
    lower = name.lower()
    return max((s for s in SUFFIXES if lower.endswith(s)), key=len, default="")


def stem_of(name: str) -> str:
    """``name`` without its registered suffix (``"a_mask.nii.gz"`` -> ``"a_mask"``), else unchanged."""
    return name[: len(name) - len(suffix_of(name))]


def by_name(name: str) -> Format | None:
    """The file format a bare file name announces (exact name, then suffix), or None."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for fmt in FORMATS:
        if base.upper() in fmt.file_names:
            return fmt
    suffix = suffix_of(base)
    return next((f for f in FORMATS if suffix and suffix in f.suffixes), None)


def by_content(head: bytes) -> Format | None:
    """The file format whose magic the first bytes of a file (or ZIP member) carry, or None."""
    return next((f for f in FORMATS if f.magic is not None and f.magic(head)), None)


def _mode(path: str | os.PathLike) -> int | None:
    """``st_mode`` of ``path`` (links followed), or None when it cannot be stat-ed."""
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError):  # missing, permission denied, NUL in the name
        return None


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` (symbolic links followed) is a regular file: not a FIFO, device or folder."""
    mode = _mode(path)
    return mode is not None and stat.S_ISREG(mode)


def read_head(path: str | os.PathLike, size: int = HEAD_BYTES) -> bytes | None:
    """The first ``size`` bytes of a regular file, or None for anything else or an unreadable file.

    Opened non-blocking and checked after opening, so a FIFO (even one swapped in after a
    check) is never waited on.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def detect(path: str | os.PathLike) -> Format | None:
    """The format of a folder or file, from its name and then its content; None if unknown.

    A folder gets the DICOM folder format (whether it holds DICOM is the reader's or
    :func:`is_dicom_folder`'s question); anything that is neither a folder nor a regular file
    (FIFO, device, missing, unreadable) gets None. Never raises.
    """
    path = Path(path)
    mode = _mode(path)
    if mode is not None and stat.S_ISDIR(mode):
        return _BY_NAME["dicom-folder"]
    if mode is None or not stat.S_ISREG(mode):
        return None
    fmt = by_name(path.name)
    if fmt is not None:
        return fmt
    head = read_head(path)
    return None if head is None else by_content(head)


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file that is DICOM by name or by its ``DICM`` marker."""
    fmt = detect(path)
    return fmt is not None and fmt.name in ("dicom", "dicomdir")


def _regular_files(folder: Path) -> Iterable[Path]:
    """Regular, non-hidden files below ``folder``; unreadable sub-folders are skipped silently."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and is_regular_file(Path(dirpath, name)):
                yield Path(dirpath, name)


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    """Whether one of the first :data:`FOLDER_SNIFF_FILES` regular files below ``folder`` is DICOM."""
    files = _regular_files(Path(folder))
    return any(is_dicom(p) for _, p in zip(range(FOLDER_SNIFF_FILES), files))


def is_lossy(path: str | os.PathLike) -> bool:
    """Whether the file's format alters pixel values (JPEG), judged from the name, then content."""
    fmt = detect(path)
    return fmt is not None and fmt.lossy


def writable_suffixes() -> tuple[str, ...]:
    """The suffixes of the formats that have a writer (what ``write_array`` and napari save)."""
    return tuple(s for f in FORMATS if f.writer for s in f.suffixes)


def manifest_patterns() -> list[str]:
    """The npe2 reader's ``filename_patterns``: ``*<suffix>`` per suffix, and ``*`` because
    files are also recognised by exact name (DICOMDIR) and by content (extension-less DICOM).
    npe2 matches suffixes case-insensitively, so no upper-case copies are needed."""
    return [f"*{s}" for s in SUFFIXES] + ["*"]


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def guarded(path: str | os.PathLike, what: str, call: Callable[[], _T]) -> _T:
    """Run ``call()``; any failure but an interrupt becomes a ScanReadError naming ``path``.

    ``ScanReadError`` passes (its message joined into one line); ``KeyboardInterrupt``, ``SystemExit`` and
    ``GeneratorExit`` are re-raised; everything else, ``BaseException`` panics of native
    decoders (``pyo3_runtime.PanicException``) and ``MemoryError`` included, becomes
    ``ScanReadError("<path>: unreadable <what> (<type>: <message>)")``.
    """
    from napari_segloss.io import ScanReadError

    try:
        return call()
    except ScanReadError as exc:
        if "\n" not in str(exc):
            raise
        raise type(exc)(" ".join(str(exc).split())) from None  # decoders list their plugins line by line
    except _PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - decoders fail in arbitrary ways, even with panics
        raise ScanReadError(f"{Path(path)}: unreadable {what} ({_one_line(exc)})") from None


def read(path: str | os.PathLike) -> list[Scan]:
    """Read a file or folder with the reader of its :func:`detect`-ed format.

    Files no format recognises go to the DICOM reader (:data:`FALLBACK`), which accepts old
    datasets without the ``DICM`` marker and refuses anything else.

    Raises:
        ScanReadError: missing path, not a regular file or folder (FIFO, device: refused without
            opening it), or any failure of the reader (see :func:`guarded`).
    """
    from napari_segloss.io import ScanReadError

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ScanReadError(f"{path}: no such file or folder") from None
    except (OSError, ValueError) as exc:
        raise ScanReadError(f"{path}: cannot be opened ({_one_line(exc)})") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        kind = next((k for test, k in _SPECIAL if test(mode)), "not a file")
        raise ScanReadError(f"{path}: not a regular file or folder ({kind}); refused")
    return (detect(path) or FALLBACK).read(path)
