"""Find the scans in a batch input folder and pair each image with its ground-truth mask.

Units: every file the format registry (:mod:`napari_segloss.io.formats`) recognises, by name or
by content, is one unit, except that a sub-folder holding two
or more DICOM files (and nothing else: no sub-folders, no raster files, no mask-named files) is
one DICOM series unit named after the folder; when its headers hold several series and no mask
pairs with it, each series is an item of its own (``folder/series_3_T1_post``). DICOM files
directly in the input folder are single images. Masks follow the reader's convention
(:func:`napari_segloss.io.raster.is_mask_name`: ``x_mask``, ``x_seg``, ``x_label(s)``), and every
unit below a ``masks/`` folder that has an ``images/`` sibling is a mask.

Pairing: an image and a mask pair when they sit in the same folder (or in sibling ``images/``
and ``masks/`` folders, at the same relative place) and the mask's stem is the image's stem, with
or without the mask suffix (``image1.png`` + ``image1_mask.png``; ``images/a.tif`` +
``masks/a.png``). Images without a mask are processed without metrics; masks without an image,
non-image files and ambiguous groups are listed in the manifest with the reason.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from napari_segloss.io import formats
from napari_segloss.io.raster import is_mask_name

Status = Literal["paired", "unpaired", "skipped", "failed"]
_PAIR_DIR = "\x00pair"  # stands for both "images" and "masks" while grouping


@dataclass(frozen=True)
class Item:
    """One scan to process.

    Attributes:
        name: unique output name, a POSIX path without extension (``"sub/image1"``).
        image: the image file or DICOM series folder.
        mask: the ground-truth mask file or folder, or None.
        source / mask_source: ``image`` / ``mask`` relative to the input root (POSIX).
        series: SeriesInstanceUID of the one series to read when the ``image`` folder holds
            several (each series is then an item of its own), else None.
        series_label: how the manifest names that series (``"series 3: T1 post"``).
    """

    name: str
    image: Path
    mask: Path | None
    source: str
    mask_source: str | None
    series: str | None = None
    series_label: str = ""

    @property
    def manifest_path(self) -> str:
        """The item's manifest row: ``source``, plus ``[series label]`` for one series of several."""
        return f"{self.source} [{self.series_label}]" if self.series else self.source


@dataclass(frozen=True)
class Entry:
    """One manifest row: ``path`` (relative, POSIX; folders end in ``/``), ``role``
    (image | mask | other), ``status`` (paired | unpaired | skipped | failed), the ``item`` name it
    belongs to, its ``partner`` path and a human-readable ``reason``."""

    path: str
    role: str
    status: Status
    item: str = ""
    partner: str = ""
    reason: str = ""


@dataclass
class Discovery:
    """What :func:`discover` found below ``root``: the ``items`` to process and one manifest
    ``entries`` row per file, folder unit or refused member."""

    root: Path
    items: list[Item]
    entries: list[Entry]


@dataclass(frozen=True)
class _Unit:
    path: Path
    rel: PurePosixPath
    is_mask: bool
    group: tuple[str, str]  # (pairing folder, stem without mask suffix)
    display: str


def _strip_mask_suffix(stem: str) -> str:
    if not is_mask_name(stem):
        return stem
    return stem[: max(stem.rfind("_"), stem.rfind("-"))]


def _pair_layout(rel_dir: PurePosixPath, root: Path) -> tuple[PurePosixPath, bool | None]:
    """``rel_dir`` with an ``images``/``masks`` component replaced by a common marker, and
    whether that component was ``masks`` (None when there is no images/ + masks/ pair)."""
    parts = rel_dir.parts
    for i, part in enumerate(parts):
        if part.lower() in ("images", "masks"):
            parent = root.joinpath(*parts[:i])
            siblings = {p.name.lower() for p in parent.iterdir() if p.is_dir()}
            if {"images", "masks"} <= siblings:
                return PurePosixPath(*parts[:i], _PAIR_DIR, *parts[i + 1 :]), part.lower() == "masks"
    return rel_dir, None


def _unit(path: Path, root: Path, *, folder: bool) -> _Unit:
    rel = PurePosixPath(path.relative_to(root).as_posix())
    pair_dir, in_masks = _pair_layout(rel.parent, root)
    stem = rel.name if folder else formats.stem_of(rel.name)
    is_mask = in_masks if in_masks is not None else is_mask_name(rel.name)
    key = _strip_mask_suffix(stem) if is_mask else stem
    return _Unit(path, rel, bool(is_mask), (str(pair_dir), key), rel.as_posix() + ("/" if folder else ""))


def _walk(root: Path) -> tuple[list[_Unit], list[Entry]]:
    units: list[_Unit] = []
    skipped: list[Entry] = []

    def unreadable(exc: OSError) -> None:
        rel = Path(exc.filename or root).relative_to(root).as_posix()
        skipped.append(Entry(f"{rel}/", "other", "skipped", reason=f"folder cannot be read ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        files = sorted(f for f in filenames if not f.startswith("."))
        kinds = {f: formats.detect(here / f) for f in files}
        dicom = [f for f in files if kinds[f] is not None and kinds[f].name in ("dicom", "dicomdir")]
        scans = [f for f in files if kinds[f] is not None and f not in dicom]
        series = len(dicom) >= 2 and not dirnames and here != root and not scans and not any(map(is_mask_name, dicom))
        if series:
            units.append(_unit(here, root, folder=True))
        else:
            units.extend(_unit(here / f, root, folder=False) for f in dicom)
        units.extend(_unit(here / f, root, folder=False) for f in scans)
        for f in files:
            if kinds[f] is None:
                rel = (here / f).relative_to(root).as_posix()
                skipped.append(Entry(rel, "other", "skipped", reason=_not_a_scan(here / f)))
    return units, skipped


def _not_a_scan(path: Path) -> str:
    """Why a file the registry does not recognise is skipped."""
    if not formats.is_regular_file(path):
        return "not a regular file (FIFO, device or unreadable)"
    return f"not an image file ({PurePosixPath(path.name).suffix or 'no extension'}; not DICOM or another known format)"


def _add_series_items(image: _Unit, name: str, items: list[Item], entries: list[Entry], taken: set[str]) -> bool:
    """Split a DICOM folder unit holding several series into one item per series.

    Returns False (adding nothing) when ``image`` is not a folder or holds one series.
    """
    if not image.display.endswith("/"):
        return False
    from napari_segloss.io.dicom import list_series

    headers = list_series(image.path)
    if len(headers) < 2:
        return False
    for index, header in enumerate(headers, 1):
        label = f"series {header.number if header.number is not None else index}: {header.label}"
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in label.replace(": ", "_")).strip("_")
        item_name = f"{name}/{slug}"
        while item_name in taken:
            item_name += "+"
        taken.add(item_name)
        item = Item(item_name, image.path, None, image.display, None, header.uid, label)
        items.append(item)
        entries.append(Entry(item.manifest_path, "image", "unpaired", item_name,
                             reason=f"one of {len(headers)} series in this folder; no mask: predictions only"))
    return True


def _item_name(unit: _Unit, taken: set[str]) -> str:
    parts = [p for p in PurePosixPath(unit.group[0]).parts if p != _PAIR_DIR and p != "."]
    name = "/".join([*parts, unit.group[1]])
    if name in taken:
        name = "/".join([*parts, unit.rel.name])
    while name in taken:
        name += "+"
    taken.add(name)
    return name


def discover(root: str | os.PathLike) -> Discovery:
    """Units and pairs below ``root`` (recursively; hidden files and ``__MACOSX`` ignored).

    Returns a :class:`Discovery`: items in sorted path order, and manifest entries for paired and
    unpaired images, unpaired or ambiguous masks and skipped non-image files.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    units, entries = _walk(root)
    groups: dict[tuple[str, str], list[_Unit]] = defaultdict(list)
    for unit in units:
        groups[unit.group].append(unit)
    items: list[Item] = []
    taken: set[str] = set()
    for key in sorted(groups, key=lambda k: min(u.display for u in groups[k])):
        images = [u for u in groups[key] if not u.is_mask]
        masks = [u for u in groups[key] if u.is_mask]
        if len(images) == 1 and len(masks) == 1:
            image, mask = images[0], masks[0]
            name = _item_name(image, taken)
            items.append(Item(name, image.path, mask.path, image.display, mask.display))
            entries.append(Entry(image.display, "image", "paired", name, mask.display))
            entries.append(Entry(mask.display, "mask", "paired", name, image.display))
            continue
        ambiguous = len(images) > 1 or len(masks) > 1
        for image in images:
            name = _item_name(image, taken)
            if not masks and _add_series_items(image, name, items, entries, taken):
                continue
            items.append(Item(name, image.path, None, image.display, None))
            reason = (
                f"{len(images)} images and {len(masks)} masks share the stem {key[1]!r}; not paired"
                if ambiguous
                else "no mask found: predictions only, no metrics"
            )
            entries.append(Entry(image.display, "image", "unpaired", name, reason=reason))
        for mask in masks:
            reason = (
                f"{len(masks)} masks share the stem {key[1]!r}; not paired"
                if len(masks) > 1
                else f"no image with the stem {key[1]!r}; mask ignored"
            )
            entries.append(Entry(mask.display, "mask", "unpaired", reason=reason))
    entries.sort(key=lambda e: e.path)
    return Discovery(root, items, entries)
