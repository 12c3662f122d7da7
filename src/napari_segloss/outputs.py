"""Publishing a command's result without losing anything a user owns: :func:`claim`, :func:`writing`.

``predict`` writes a folder and ``batch`` one ZIP file. Both are written into a fresh temporary
sibling of the target and renamed into place when complete, so the target never holds a partial
result, and nothing else is ever deleted or replaced:

* an existing target is replaced only with ``overwrite`` and only when it is a previous result of
  this tool: a folder holding nothing but the files its marker :data:`MARKER` lists (the marker is
  written by :func:`publish`), or a ZIP whose :data:`RUN_INFO` member names the
  ``napari_segloss_version`` that wrote it;
* the target's identity is recorded when the run starts (:func:`claim`); a result that appears or
  changes while the run works (another run into the same place) is never replaced: the run is
  refused at the end instead;
* a target equal to or inside an input (or holding one) is refused before any work.

Every problem is an :class:`OutputError` with a one-line message; an ``OSError`` while writing
(permission denied, read-only or full file system) becomes one too.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from napari_segloss import __version__

#: the marker file of a result folder: ``{"tool": "napari-segloss", "version", "files": [...]}``
MARKER = ".napari-segloss.json"
#: the member of a result ZIP that marks it (a JSON object with ``napari_segloss_version``)
RUN_INFO = "run.json"
_TOOL = "napari-segloss"
_MAX_MARKER_BYTES = 16 * 2**20


class OutputError(Exception):
    """The output cannot be written, or writing it would replace something that is not a
    previous result of this tool; the message is one line and names the path."""


@dataclass(frozen=True)
class Target:
    """Where a result goes (from :func:`claim`).

    Attributes:
        path: the result folder or file (absolute).
        folder: whether the result is a folder (else a single file).
        previous: ``(st_dev, st_ino, st_mtime_ns)`` of the previous result that ``overwrite`` may
            replace, or None when the target did not exist (or was an empty folder).
    """

    path: Path
    folder: bool
    previous: tuple[int, int, int] | None = None


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (``os.fsdecode``'s surrogate escapes) written as
    ``\\xNN``: safe to print, to write as UTF-8 and to use as a ZIP member name."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that do not stand for bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_dev, info.st_ino, info.st_mtime_ns


def _within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _overlaps(out: Path, source: Path) -> bool:
    a, b = os.path.realpath(out), os.path.realpath(source)
    if _within(a, b) or _within(b, a):
        return True
    try:
        return os.path.samefile(out, source)  # a hard link, or a case-insensitive file system
    except OSError:
        return False


def _folder_problem(path: Path) -> str | None:
    """Why the folder ``path`` is not a previous result (None when it is one)."""
    marker = path / MARKER
    try:
        info = os.lstat(marker)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MARKER_BYTES:
            return f"{MARKER} is not a regular file of at most {_MAX_MARKER_BYTES // 2**20} MiB"
        record = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {MARKER}"
    except (OSError, ValueError) as exc:
        return f"{MARKER} is unreadable ({type(exc).__name__})"
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(record, dict) or record.get("tool") != _TOOL or not isinstance(files, list):
        return f"{MARKER} was not written by {_TOOL}"
    listed = set(map(str, files)) | {MARKER}
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            rel = (here / name).relative_to(path).as_posix()
            if rel not in listed or not stat.S_ISREG(os.lstat(here / name).st_mode):
                return f"{printable(rel)} is not one of the files it wrote"
    return None


def _file_problem(path: Path) -> str | None:
    """Why the file ``path`` is not a previous result ZIP (None when it is one)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(RUN_INFO)
            if info.file_size > _MAX_MARKER_BYTES:
                return f"its {RUN_INFO} is too large"
            record = json.loads(archive.read(info))
    except KeyError:
        return f"it holds no {RUN_INFO}"
    except (OSError, ValueError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        return f"it is not a readable result ZIP ({type(exc).__name__})"
    if not isinstance(record, dict) or "napari_segloss_version" not in record:
        return f"its {RUN_INFO} was not written by {_TOOL}"
    return None


def _problem(path: Path, folder: bool) -> str | None:
    return _folder_problem(path) if folder else _file_problem(path)


def claim(path: str | os.PathLike, *, folder: bool, inputs: Sequence[str | os.PathLike] = (),
          overwrite: bool = False) -> Target:
    """Check, before any work, that a result may be written to ``path``.

    Args:
        path: the result folder (``folder=True``) or file.
        folder: whether the result is a folder.
        inputs: the files and folders the run reads; the output may not equal, lie inside or hold
            any of them.
        overwrite: allow replacing a previous result of this tool (nothing else).
    Returns:
        the :class:`Target` to pass to :func:`writing`.
    Raises:
        OutputError: the output overlaps an input, exists without ``overwrite``, or exists and is
            not a previous result of this tool.
    """
    path = Path(os.path.abspath(os.path.expanduser(path)))
    shown = printable(str(path))
    for source in inputs:
        if _overlaps(path, Path(source)):
            raise OutputError(f"{shown}: the output would overlap the input {printable(str(source))}; choose another output")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Target(path, folder)
    except OSError as exc:
        raise OutputError(f"{shown}: cannot check the output ({exc.strerror or exc})") from None
    if stat.S_ISLNK(info.st_mode):
        raise OutputError(f"{shown}: the output is a symbolic link; choose another output")
    if folder and not stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{shown}: exists and is not a folder")
    if not folder and not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{shown}: exists and is not a regular file")
    if folder and not any(path.iterdir()):
        return Target(path, folder)
    if not overwrite:
        raise OutputError(f"{shown}: exists (pass --overwrite / overwrite=True to replace a previous result)")
    problem = _problem(path, folder)
    if problem:
        raise OutputError(f"{shown}: not a previous {_TOOL} result ({problem}); refusing to replace it")
    return Target(path, folder, _identity(info))


def _write_marker(folder: Path) -> None:
    files = sorted(
        (Path(dirpath) / name).relative_to(folder).as_posix()
        for dirpath, _, names in os.walk(folder) for name in names
    )
    record = {"tool": _TOOL, "version": __version__, "files": files}
    with open(folder / MARKER, "x", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)  # ASCII: undecodable name bytes survive as \udcXX


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _place(tmp: Path, target: Target) -> None:
    """Rename ``tmp`` to the target's path without replacing anything that is there."""
    from napari_segloss.io.writers import publish as publish_file

    changed = OutputError(f"{printable(str(target.path))}: another result appeared there while this run "
                          "was working; refusing to replace it (this run's result was not kept)")
    if not target.folder:
        try:
            publish_file(tmp, target.path, overwrite=False)  # a hard link: fails if the name exists
        except FileExistsError:
            raise changed from None
        return
    try:
        os.rename(tmp, target.path)  # replaces at most an empty folder
    except OSError:
        if target.path.exists() or target.path.is_symlink():
            raise changed from None
        raise


def publish(tmp: Path, target: Target) -> None:
    """Move the finished result ``tmp`` (a sibling of the target) to the target's path.

    A folder gets its :data:`MARKER` first. The previous result recorded by :func:`claim` is moved
    aside, checked to be the same one and still a result, and deleted only once ``tmp`` is in
    place (put back if placing fails); anything else found there is left as it is and
    :class:`OutputError` is raised.
    """
    if target.folder:
        _write_marker(tmp)
    backup = None
    if target.previous is not None:
        backup = target.path.parent / f".{target.path.name}.{uuid.uuid4().hex[:12]}.old"
        changed = OutputError(f"{printable(str(target.path))}: the previous result changed while this run "
                              "was working (another run?); refusing to replace it")
        try:
            os.rename(target.path, backup)
        except FileNotFoundError:
            raise changed from None
        if _identity(os.lstat(backup)) != target.previous or _problem(backup, target.folder):
            if os.path.lexists(target.path):  # yet another result landed meanwhile: keep both
                raise OutputError(f"{changed}; what was there is kept as {printable(str(backup))}")
            os.rename(backup, target.path)
            raise changed
    try:
        _place(tmp, target)
    except BaseException:
        if backup is not None and not os.path.lexists(target.path):
            os.rename(backup, target.path)  # this run failed: the previous result stays
        raise
    finally:
        if backup is not None and os.path.lexists(backup):
            _remove(backup)  # replaced (or superseded by another run's result): it was ours to replace


@contextmanager
def writing(target: Target) -> Iterator[Path]:
    """Yield a fresh temporary sibling of the target to write the result into (a folder, or a
    path not yet created for a file), :func:`publish` it when the block ends normally, and always
    remove what is left of it. An ``OSError`` in the block becomes :class:`OutputError`."""
    parent = target.path.parent
    tmp = parent / f".{target.path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if target.folder:
            tmp.mkdir()  # ordinary permissions (umask), unlike tempfile.mkdtemp's 0700
        yield tmp
        publish(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write {printable(str(target.path))}: {exc.strerror or exc}") from None
    finally:
        _remove(tmp)
