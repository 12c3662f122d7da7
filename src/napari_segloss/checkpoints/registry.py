"""The checkpoint registry: which checkpoints exist, under which names, and where.

:func:`scan_checkpoints` reads the top level of :func:`napari_segloss.weights_dir` (the bundled
set; ``weights/aux/`` holds auxiliary networks and is not listed), the caller's extra folders, the
folders in ``NAPARI_SEGLOSS_CHECKPOINTS`` (``os.pathsep``-separated) and the user's fine-tuned
checkpoints, in that order. Names are exact and unique regardless of case: a card whose name is
already taken by an earlier folder (``DICE`` after the bundled ``dice``) is refused with a problem
naming both files, so a user folder can never shadow a bundled checkpoint. One bad card is a
problem line and is skipped; the others are still listed.

The parsed registry is cached: each call compares the identities (inode, size, mtime, ctime)
of the folders and of their cards with the cached ones and re-reads only the cards that changed;
:func:`refresh` forgets everything. Cached :class:`CheckpointInfo` objects (and their cards) are
shared between callers: treat them as read-only.
"""

from __future__ import annotations

import os
import stat
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_segloss.checkpoints.card import CheckpointError, ModelCard, catalogue_family, read_card
from napari_segloss.paths import user_checkpoint_dir, weights_dir

CHECKPOINTS_ENV = "NAPARI_SEGLOSS_CHECKPOINTS"
#: weights files a card may sit next to, in order of preference
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth")
#: registries (one per combination of search folders) and parsed cards kept in memory
_MAX_REGISTRIES = 8
_MAX_CARDS = 4096


@dataclass(frozen=True)
class CheckpointInfo:
    """A registry entry: ``name``, ``loss``, ``family`` (catalogue first, else the card's),
    ``path`` (the ``.json`` card), ``weights`` (the weights file) and the validated ``card``."""

    name: str
    loss: str
    family: str
    path: Path
    weights: Path
    card: ModelCard

    @classmethod
    def from_card(cls, card: ModelCard, card_path: Path, weights_path: Path) -> CheckpointInfo:
        """The entry for ``card`` read from ``card_path`` with weights ``weights_path``."""
        family = catalogue_family(card.loss) or card.family
        return cls(card.name, card.loss, family, card_path, weights_path, card)


@dataclass(frozen=True)
class Registry:
    """One scan of the search folders.

    Attributes:
        checkpoints: the valid checkpoints, sorted by loss family (pixel, region, boundary,
            compound) then name.
        problems: one line per card that was skipped (unreadable, invalid, or a name already
            taken), naming the file and the reason.
    """

    checkpoints: tuple[CheckpointInfo, ...]
    problems: tuple[str, ...]


#: a change this close to a scan may share its time stamps (file systems keep coarse clocks: a
#: kernel tick on ext4, 2 s on FAT), so such a scan (or card) is not cached
_RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class _Scan:
    """A cached scan: the search folders' identities, the cards read and theirs, the result."""

    dirs: tuple[tuple[int, ...] | None, ...]
    cards: tuple[str, ...]
    card_ids: tuple[tuple[int, ...] | None, ...]
    registry: Registry


_lock = threading.Lock()
_scans: OrderedDict[tuple[str, ...], _Scan] = OrderedDict()
_cards: dict[tuple[str, tuple[int, ...]], ModelCard | CheckpointError] = {}


def refresh() -> None:
    """Forget the cached registry and cards: the next scan reads every card again."""
    with _lock:
        _scans.clear()
        _cards.clear()


def _identity(path: str | Path) -> tuple[int, ...] | None:
    """``(device, inode, size, mtime ns, ctime ns, mode)`` of ``path`` (symlinks followed), or
    None when it cannot be stat'ed."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode)


def _settled(identity: tuple[int, ...] | None, now_ns: int) -> bool:
    """Whether ``identity`` is old enough that a later change must show in its time stamps
    (every change sets the ctime to the present; an mtime set into the future stays unsettled)."""
    return identity is not None and max(identity[3], identity[4]) < now_ns - _RACY_NS


def _search_dirs(extra_dirs: Sequence[str | os.PathLike] | None) -> list[tuple[Path, tuple[int, ...] | None]]:
    """The search folders in order, each once (a folder reached again by another path is
    dropped), with their identities (None when absent)."""
    env = [p for p in os.environ.get(CHECKPOINTS_ENV, "").split(os.pathsep) if p.strip()]
    dirs, seen = [], set()
    for entry in [weights_dir(), *(extra_dirs or ()), *env, user_checkpoint_dir()]:
        path = Path(entry).expanduser()
        identity = _identity(path)
        key = identity[:2] if identity is not None else str(path)
        if key not in seen:
            seen.add(key)
            dirs.append((path, identity))
    return dirs


def _pairs(directory: Path) -> list[tuple[Path, Path]] | str:
    """``(card, weights)`` for every ``.json`` file with a regular weights file beside it, by
    name; the reason as a string when the folder cannot be listed."""
    try:
        with os.scandir(directory) as scan:
            regular = {item.name: item.is_file() for item in scan}  # symlinks judged by their target
    except OSError as exc:
        return str(exc.strerror or exc)
    pairs = []
    for name in sorted(regular):
        if name.endswith(".json"):
            stem = name[: -len(".json")]
            weights = next((stem + s for s in WEIGHTS_SUFFIXES if regular.get(stem + s)), None)
            if weights is not None:  # a JSON file without weights beside it is not a checkpoint
                pairs.append((directory / name, directory / weights))
    return pairs


def _card(path: Path, identity: tuple[int, ...] | None, now_ns: int) -> ModelCard | CheckpointError:
    """The parsed card at ``path`` (or its error), cached under its settled identity."""
    key = (str(path), identity)
    if key in _cards:
        return _cards[key]
    try:
        card: ModelCard | CheckpointError = read_card(path)
    except CheckpointError as exc:
        card = exc
    if _settled(identity, now_ns):
        if len(_cards) >= _MAX_CARDS:
            _cards.clear()
        _cards[key] = card
    return card


def _scan(dirs: Sequence[tuple[Path, tuple[int, ...] | None]], now_ns: int) -> _Scan:
    from napari_segloss import losses

    found: dict[str, CheckpointInfo] = {}
    problems: list[str] = []
    cards: list[str] = []
    card_ids: list[tuple[int, ...] | None] = []
    for directory, identity in dirs:
        if identity is None or not stat.S_ISDIR(identity[5]):
            continue
        pairs = _pairs(directory)
        if isinstance(pairs, str):
            problems.append(f"skipping checkpoint folder {directory}: cannot list it ({pairs})")
            continue
        for card_path, weights_path in pairs:
            cards.append(str(card_path))
            card_id = _identity(cards[-1])  # before reading: a change after it shows next time
            card_ids.append(card_id)
            card = _card(card_path, card_id, now_ns)
            if isinstance(card, CheckpointError):
                problems.append(f"skipping checkpoint: {card}")
                continue
            taken = found.get(card.name.casefold())
            if taken is not None:
                problems.append(
                    f"skipping checkpoint: {card_path}: name {card.name!r} is already taken by {taken.path} "
                    "(names are unique regardless of case; rename one)"
                )
                continue
            found[card.name.casefold()] = CheckpointInfo.from_card(card, card_path, weights_path)
    order = sorted(found.values(), key=lambda i: (losses.FAMILIES.index(i.family), i.name.lower(), i.name))
    return _Scan(tuple(i for _, i in dirs), tuple(cards), tuple(card_ids), Registry(tuple(order), tuple(problems)))


def scan_checkpoints(extra_dirs: Sequence[str | os.PathLike] | None = None) -> Registry:
    """The checkpoints in the search folders and the problems met (see the module docstring).

    Folders: :func:`napari_segloss.weights_dir` (top level only), ``extra_dirs``,
    ``NAPARI_SEGLOSS_CHECKPOINTS``, then :func:`napari_segloss.paths.user_checkpoint_dir`. A
    ``.json`` file without weights beside it is not a checkpoint and is ignored silently.

    Cached: a call stats the folders and the cards; when none changed (a file added, removed or
    renamed changes its folder's times; a card rewritten changes its size or times) the previous
    result is returned, else only the changed cards are read again. Weights files are not part
    of the registry: :func:`napari_segloss.checkpoints.load` checks them itself (times, size,
    sha256). A scan that sees files changed in the last 2 s is not cached (they may change
    again within the file system's time-stamp resolution).
    """
    dirs = _search_dirs(extra_dirs)
    key = tuple(str(path) for path, _ in dirs)
    with _lock:
        cached = _scans.get(key)
        if cached is not None and cached.dirs == tuple(i for _, i in dirs) and cached.card_ids == tuple(
            _identity(path) for path in cached.cards
        ):
            _scans.move_to_end(key)
            return cached.registry
        now_ns = time.time_ns()
        scan = _scan(dirs, now_ns)
        if all(_settled(identity, now_ns) for identity in (*scan.dirs, *scan.card_ids) if identity is not None):
            _scans[key] = scan
            _scans.move_to_end(key)
            while len(_scans) > _MAX_REGISTRIES:
                _scans.popitem(last=False)
        else:
            _scans.pop(key, None)
        return scan.registry


def list_checkpoints(extra_dirs: Sequence[str | os.PathLike] | None = None) -> list[CheckpointInfo]:
    """Every valid checkpoint (a ``.json`` card with weights beside it) in the search folders,
    sorted by loss family then name; each skipped card is reported as a ``UserWarning``
    (:func:`scan_checkpoints` returns the same problems as a list)."""
    registry = scan_checkpoints(extra_dirs)
    for problem in registry.problems:
        warnings.warn(problem, stacklevel=2)
    return list(registry.checkpoints)


def default_checkpoint(extra_dirs: Sequence[str | os.PathLike] | None = None) -> CheckpointInfo:
    """The checkpoint used when none is named: the first trained with the Dice loss, else the first listed."""
    infos = list_checkpoints(extra_dirs)
    if not infos:
        raise CheckpointError(f"no checkpoints found in {', '.join(str(p) for p, _ in _search_dirs(extra_dirs))}")
    return next((i for i in infos if i.loss.lower() == "dice"), infos[0])


def weights_next_to(card_path: Path) -> Path | None:
    """The weights file beside ``card_path`` (first of :data:`WEIGHTS_SUFFIXES`), or None."""
    for suffix in WEIGHTS_SUFFIXES:
        candidate = card_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def find(name: str, extra_dirs: Sequence[str | os.PathLike] | None = None) -> CheckpointInfo:
    """The registered checkpoint called exactly ``name`` (names are case-sensitive).

    Raises :class:`CheckpointError` for an unknown name, suggesting the name that differs only in
    case, if any, and listing the available ones.
    """
    infos = list_checkpoints(extra_dirs)
    match = next((i for i in infos if i.name == name), None)
    if match is None:
        near = next((i.name for i in infos if i.name.casefold() == name.casefold()), None)
        hint = f" (did you mean {near!r}? names are case-sensitive)" if near else ""
        names = ", ".join(i.name for i in infos) or "none found"
        raise CheckpointError(f"unknown checkpoint {name!r}{hint}; available: {names}")
    return match


def locate(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(card_path, weights_path)`` for an exact registry name or a ``.json``/weights path.

    Raises :class:`CheckpointError` for an unknown name (suggesting the name that differs only
    in case, if any), a missing file or an unsupported suffix.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = (
        isinstance(name_or_path, os.PathLike)
        or path.suffix.lower() in (".json", *WEIGHTS_SUFFIXES)
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
    )
    if not looks_like_path:
        match = find(text)
        return match.path, match.weights
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        weights_path = weights_next_to(path)
        if weights_path is None:
            raise CheckpointError(f"{path}: no weights file ({', '.join(WEIGHTS_SUFFIXES)}) next to the card")
        return path, weights_path
    if suffix not in WEIGHTS_SUFFIXES:
        raise CheckpointError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .json, .safetensors, .pt or .pth")
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"{path}: no model card {card_path.name} next to the weights")
    return card_path, path
