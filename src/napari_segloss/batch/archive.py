"""Safe extraction of an input ZIP: every member is checked before a byte is written.

Refused members (listed with the reason, the rest is extracted): absolute paths (``/x``,
``C:\\x``, ``\\\\server\\x``), ``..`` components (zip slip), symbolic links, encrypted members,
unsupported compression methods (deflate64, ...), corrupt members, members that are not scans
(the format registry, :mod:`napari_segloss.io.formats`, decides by name and, for names it does
not know, by the member's first bytes) and members above 1 MiB whose compression ratio exceeds
``max_ratio``. The whole archive is refused (:class:`ArchiveError`) when it cannot be read (bad
central directory, names that are not valid UTF-8), when the members to extract declare more
than ``max_total_bytes``, when they expand more than ``max_ratio`` times *together* (many small
members that each pass the per-member check), or when it has more than ``max_members`` members.
Sizes are enforced while copying too, so a header that understates a member's size cannot fill
the disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from napari_segloss.io import formats

#: default limit on the archive's total uncompressed size (bytes)
MAX_TOTAL_BYTES = 8 * 2**30
#: default limit on the uncompressed / compressed size ratio: of one member above 1 MiB, and of
#: all the members to extract together once they exceed 1 MiB
MAX_RATIO = 200.0
#: default limit on the number of members
MAX_MEMBERS = 200_000
_RATIO_FLOOR_BYTES = 2**20
_DRIVE = re.compile(r"^[A-Za-z]:")
_COPY_CHUNK = 2**20
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}  # what zipfile decodes
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)


class ArchiveError(ValueError):
    """The archive as a whole is refused (unreadable, too large, too many members)."""


@dataclass(frozen=True)
class Refused:
    """A member that was not extracted: ``name`` as stored in the archive, and ``reason``."""

    name: str
    reason: str


@dataclass
class Extraction:
    """Result of :func:`safe_extract`: ``root`` (the destination folder), the relative POSIX
    paths of the ``extracted`` files and the ``refused`` members."""

    root: Path
    extracted: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _unsafe_path(name: str) -> str | None:
    """Why ``name`` may not be extracted as a path, or None when it is a safe relative path."""
    if "\x00" in name:
        return "NUL character in the name"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "'..' in the path (zip slip)"
    return None


def _recognised(archive: zipfile.ZipFile, info: zipfile.ZipInfo, base: str) -> bool:
    """Whether the registry knows the member as a scan: by its name, else by its first bytes."""
    if formats.by_name(base) is not None:
        return True
    with archive.open(info) as handle:
        head = handle.read(formats.HEAD_BYTES)
    return formats.by_content(head) is not None


def _member_problem(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_ratio: float) -> str | None:
    reason = _unsafe_path(info.filename)
    if reason:
        return reason
    if _is_symlink(info):
        return "symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted member"
    if info.compress_type not in _METHODS:
        return f"unsupported compression method {info.compress_type} (deflate64 or newer)"
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_FLOOR_BYTES and ratio > max_ratio:
        return f"compression ratio {ratio:.0f}:1 exceeds {max_ratio:.0f}:1 (zip bomb?)"
    base = PurePosixPath(info.filename.replace("\\", "/")).name
    if base.startswith(".") or "__MACOSX" in info.filename:
        return "hidden or system file"
    try:
        if _recognised(archive, info, base):
            return None
    except _MEMBER_ERRORS as exc:  # bad CRC or truncated data in the first bytes
        return f"corrupt member ({type(exc).__name__}: {exc})"
    suffix = PurePosixPath(base).suffix or "no extension"
    return f"not an image file ({suffix}; not DICOM or another known format)"


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Copy one member to ``target``; stop at its declared size or the remaining ``budget``."""
    limit = min(info.file_size, budget)
    written = 0
    with archive.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(_COPY_CHUNK):
            written += len(chunk)
            if written > limit:
                raise ArchiveError(f"{info.filename}: holds more data than declared (zip bomb?)")
            dst.write(chunk)
    return written


def _check_joint_ratio(zip_path: Path, infos: list[zipfile.ZipInfo], max_ratio: float) -> None:
    """Refuse members that expand more than ``max_ratio`` times together once above 1 MiB: a
    bomb made of many small members, each under the per-member floor."""
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    ratio = total / max(packed, 1)
    if total > _RATIO_FLOOR_BYTES and ratio > max_ratio:
        raise ArchiveError(
            f"{zip_path}: {len(infos)} members expand {ratio:.0f}:1 together ({total / 2**30:.2f} GiB "
            f"from {packed / 2**20:.1f} MiB), more than {max_ratio:.0f}:1 (zip bomb?)"
        )


def safe_extract(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    members: Callable[[str], bool] | None = None,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
    max_members: int = MAX_MEMBERS,
) -> Extraction:
    """Extract the image members of ``zip_path`` below ``dest`` (created if needed).

    Args:
        zip_path: the archive.
        dest: destination folder; nothing is ever written outside it.
        members: optional filter on member names (``True`` = extract); others are ignored silently.
        max_total_bytes / max_ratio / max_members: zip-bomb limits (see the module docstring).
    Returns:
        :class:`Extraction` with the extracted relative paths and the refused members.
    Raises:
        ArchiveError: not a regular file, not a ZIP file, too many members, or too much (declared,
            joint-ratio or actual) data.
    """
    zip_path, root = Path(zip_path), Path(dest)
    if not formats.is_regular_file(zip_path):  # a FIFO or device would block or never end
        raise ArchiveError(f"{zip_path}: not a regular file")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:  # ValueError: bad UTF-8 names
        raise ArchiveError(f"{zip_path}: not a readable ZIP file ({type(exc).__name__}: {exc})") from None
    result = Extraction(root=root)
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir() and (members is None or members(i.filename))]
        if len(infos) > max_members:
            raise ArchiveError(f"{zip_path}: {len(infos)} members exceed the limit of {max_members}")
        total = sum(i.file_size for i in infos)
        if total > max_total_bytes:
            raise ArchiveError(
                f"{zip_path}: {total / 2**30:.2f} GiB uncompressed exceeds the limit of "
                f"{max_total_bytes / 2**30:.2f} GiB (zip bomb?)"
            )
        checked = [(info, _member_problem(archive, info, max_ratio)) for info in infos]
        accepted = [info for info, reason in checked if reason is None]
        _check_joint_ratio(zip_path, accepted, max_ratio)
        root.mkdir(parents=True, exist_ok=True)
        budget = max_total_bytes
        for info, reason in checked:
            if reason:
                result.refused.append(Refused(info.filename, reason))
                continue
            relative = PurePosixPath(info.filename.replace("\\", "/"))
            target = root.joinpath(*relative.parts)
            try:
                if target.exists():
                    result.refused.append(Refused(info.filename, "duplicate member name"))
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                budget -= _copy(archive, info, target, budget)
            except ArchiveError:
                raise
            except _MEMBER_ERRORS as exc:  # bad CRC, truncated, clashing or too long names
                with contextlib.suppress(OSError):
                    target.unlink(missing_ok=True)
                what = "cannot be extracted" if isinstance(exc, OSError) else "corrupt member"
                result.refused.append(Refused(info.filename, f"{what} ({exc})"))
                continue
            result.extracted.append(relative.as_posix())
    return result
