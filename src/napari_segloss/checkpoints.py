"""Checkpoints: a model card (JSON) plus weights (safetensors), a registry and a loader.

One checkpoint is ``<name>.safetensors`` (the state dict, fp16 by default) next to
``<name>.json`` (a :class:`ModelCard`). Loading never unpickles: safetensors files are parsed as
raw tensors; a legacy ``.pt``/``.pth`` file is read only through
``torch.load(weights_only=True)``, with a warning pointing at :func:`convert_pth`. Every problem
with a card or a state dict raises :class:`CheckpointError` naming the file and the reason.

The registry (:func:`list_checkpoints`) reads the top level of :func:`napari_segloss.weights_dir`
(``weights/aux/`` holds auxiliary networks and is not listed), the caller's extra folders and the
folders in ``NAPARI_SEGLOSS_CHECKPOINTS`` (``os.pathsep``-separated). Loaded models are kept in
an LRU cache bounded by memory (``NAPARI_SEGLOSS_CACHE_MB``, default 1024); cached models are
shared, so treat them as read-only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloss import __version__
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model, resolve_device, validate_architecture
from napari_segloss.paths import user_checkpoint_dir, weights_dir
from napari_segloss.preprocess import DEFAULT_NORMALIZATION, normalize

#: version of the model-card layout written by :func:`save_checkpoint`
SCHEMA_VERSION = 1
CHECKPOINTS_ENV = "NAPARI_SEGLOSS_CHECKPOINTS"
CACHE_ENV = "NAPARI_SEGLOSS_CACHE_MB"
DEFAULT_CACHE_MB = 1024
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth")
#: card fields a JSON card must contain (the others have defaults)
REQUIRED_FIELDS = (
    "schema_version",
    "name",
    "loss",
    "family",
    "architecture",
    "input_channels",
    "normalization",
    "weights_sha256",
)
_FAMILIES = ("pixel", "region", "boundary", "compound")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_HISTORY_NUMBERS = ("train_loss", "val_dice", "val_iou", "seconds")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded or saved safely; the message names file and reason."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any, where: str) -> Any:
    """JSON-ready copy: tuples -> lists, numpy scalars -> Python, NaN/Inf -> None."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where}: keys must be strings, got {key!r}")
            out[key] = _jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise CheckpointError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(kw_only=True)
class ModelCard:
    """Everything needed to run, judge and reproduce one checkpoint (validated on creation).

    Attributes:
        schema_version: card layout version (:data:`SCHEMA_VERSION`).
        name: file-safe identifier, the stem of both files (not ``"all"``).
        loss: loss name (a :mod:`napari_segloss.losses` name for the bundled checkpoints).
        family: ``pixel | region | boundary | compound``; filled from the loss catalogue when
            empty and the loss is known.
        loss_hparams / loss_state: hyper-parameters passed to ``build`` and ``loss.state()``.
        architecture: :func:`napari_segloss.models.build_model` argument.
        input_channels: channels the network expects (equals ``architecture["in_channels"]``).
        normalization: spec for :func:`napari_segloss.preprocess.normalize`.
        patch_size: training patch ``(H, W)`` in pixels, or None.
        pixel_spacing_mm: training pixel spacing in mm per axis, or None.
        image_size: ``(H, W)`` in pixels of the whole training slices (the field of view the
            network learnt at; an image of unknown pixel size is brought to it), or None.
        recipe / data: training recipe (optimiser, epochs, seed, ...) and data description.
        history: per-epoch dicts with ``epoch`` and optional ``train_loss``, ``val_dice``,
            ``val_iou``, ``seconds`` (numbers or None).
        test_metrics: held-out metrics (NaN is stored as null).
        calibration: how well the probabilities match the test frequencies (reliability bins,
            ECE, MCE, Brier, NLL; before and after ``temperature``) and the post-hoc
            ``temperature`` fitted on validation data (logits are divided by it); empty when
            not measured.
        notes: free text. created: ISO 8601 time stamp. project_version: writer's version.
        weights_sha256: hex sha256 of the ``.safetensors`` file (set by :func:`save_checkpoint`).
    """

    schema_version: int = SCHEMA_VERSION
    name: str
    loss: str
    family: str = ""
    loss_hparams: dict[str, Any] = field(default_factory=dict)
    loss_state: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    input_channels: int = 1
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    patch_size: tuple[int, ...] | None = None
    pixel_spacing_mm: tuple[float, ...] | None = None
    image_size: tuple[int, ...] | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    created: str = field(default_factory=_now)
    project_version: str = __version__
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def _fail(self, message: str) -> CheckpointError:
        return CheckpointError(f"model card {getattr(self, 'name', '?')!r}: {message}")

    def validate(self) -> None:
        """Check every field; normalise sequences to tuples and fill ``family``.

        Raises :class:`CheckpointError` naming the first invalid field.
        """
        if not _is_number(self.schema_version) or int(self.schema_version) != self.schema_version:
            raise self._fail(f"schema_version must be an integer, got {self.schema_version!r}")
        if self.schema_version > SCHEMA_VERSION or self.schema_version < 1:
            raise self._fail(
                f"schema_version {self.schema_version} is not supported (this napari-segloss reads 1..{SCHEMA_VERSION})"
            )
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name) or self.name.lower() == "all":
            raise self._fail("name must be 1-128 characters of letters, digits, '._+-' (not 'all')")
        if not isinstance(self.loss, str) or not self.loss.strip():
            raise self._fail("loss must be a non-empty string")
        if not self.family:
            self.family = _catalogue_family(self.loss) or ""
        if self.family not in _FAMILIES:
            raise self._fail(f"family must be one of {_FAMILIES}, got {self.family!r}")
        for key in ("loss_hparams", "loss_state", "architecture", "normalization", "recipe", "data", "test_metrics",
                    "calibration"):
            if not isinstance(getattr(self, key), Mapping):
                raise self._fail(f"{key} must be a JSON object, got {type(getattr(self, key)).__name__}")
        try:
            arch = validate_architecture(self.architecture)
        except ValueError as exc:
            raise self._fail(str(exc)) from None
        if not isinstance(self.input_channels, int) or isinstance(self.input_channels, bool) or self.input_channels < 1:
            raise self._fail(f"input_channels must be a positive integer, got {self.input_channels!r}")
        if arch["in_channels"] != self.input_channels:
            raise self._fail(
                f"input_channels={self.input_channels} but architecture in_channels={arch['in_channels']}"
            )
        try:
            normalize(np.arange(4, dtype=np.float32), self.normalization)
        except (ValueError, TypeError) as exc:
            raise self._fail(f"normalization: {exc}") from None
        self.patch_size = self._sequence("patch_size", self.patch_size, int)
        self.pixel_spacing_mm = self._sequence("pixel_spacing_mm", self.pixel_spacing_mm, float)
        self.image_size = self._sequence("image_size", self.image_size, int)
        if not isinstance(self.history, list):
            raise self._fail("history must be a list of per-epoch objects")
        for i, entry in enumerate(self.history):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("epoch"), int):
                raise self._fail(f"history[{i}] must be an object with an integer 'epoch'")
            for key in _HISTORY_NUMBERS:
                if entry.get(key) is not None and not _is_number(entry[key]):
                    raise self._fail(f"history[{i}].{key} must be a number or null, got {entry[key]!r}")
        for key in ("notes", "created", "project_version", "weights_sha256"):
            if not isinstance(getattr(self, key), str):
                raise self._fail(f"{key} must be a string")
        try:
            datetime.fromisoformat(self.created)
        except ValueError:
            raise self._fail(f"created must be an ISO 8601 time, got {self.created!r}") from None
        if self.weights_sha256 and not _SHA_RE.match(self.weights_sha256):
            raise self._fail("weights_sha256 must be 64 lower-case hex digits or empty")
        self.to_dict()  # everything must be JSON-serialisable

    def _sequence(self, key: str, value: Any, kind: type) -> tuple | None:
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not value or not all(_is_number(v) and v > 0 for v in value):
            raise self._fail(f"{key} must be null or a list of positive numbers, got {value!r}")
        if kind is int and not all(float(v).is_integer() for v in value):
            raise self._fail(f"{key} must hold integers, got {value!r}")
        return tuple(kind(v) for v in value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (tuples as lists, NaN as None)."""
        return {f.name: _jsonable(getattr(self, f.name), f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Validated card from a parsed JSON object.

        Raises :class:`CheckpointError` for a non-object, missing :data:`REQUIRED_FIELDS`,
        unknown fields or any invalid value.
        """
        if not isinstance(data, Mapping):
            raise CheckpointError(f"model card must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        missing = [key for key in REQUIRED_FIELDS if key not in data]
        if missing:
            raise CheckpointError(f"model card {data.get('name', '?')!r}: missing field(s) {missing}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"model card {data.get('name', '?')!r}: unknown field(s) {unknown}")
        return cls(**dict(data))


def _catalogue_family(loss: str) -> str | None:
    """The loss catalogue's family of ``loss``, or None when the catalogue does not know it."""
    from napari_segloss import losses

    try:
        return losses.info(loss).family
    except ValueError:
        return None


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


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A ready model: ``model`` (eval mode, on ``device``), its ``card`` and registry ``info``;
    ``nbytes`` is the memory its parameters and buffers take."""

    model: torch.nn.Module
    card: ModelCard
    info: CheckpointInfo
    device: torch.device
    nbytes: int


def _info(card: ModelCard, card_path: Path, weights_path: Path) -> CheckpointInfo:
    family = _catalogue_family(card.loss) or card.family
    return CheckpointInfo(card.name, card.loss, family, card_path, weights_path, card)


def _atomic_write(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_state_dict(expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped entries."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    shapes = [
        f"{k}: {tuple(actual[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in actual and tuple(actual[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    if problems:
        raise CheckpointError(f"{where}: weights do not match the card's architecture ({'; '.join(problems)})")
    floats = [v.reshape(-1).float() for v in actual.values() if torch.is_floating_point(v)]
    if floats and not bool(torch.isfinite(torch.cat(floats)).all()):
        bad = [k for k, v in actual.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v.float()).all())]
        raise CheckpointError(f"{where}: weights contain NaN or Inf ({', '.join(bad[:3])})")


def save_checkpoint(model: torch.nn.Module, card: ModelCard, directory: str | os.PathLike, *, half: bool = True) -> Path:
    """Write ``<card.name>.safetensors`` and ``<card.name>.json`` into ``directory`` atomically.

    Floating-point tensors are stored as float16 when ``half`` (integer buffers unchanged); the
    state dict must match ``card.architecture`` exactly. Fills ``card.weights_sha256`` (the
    sha256 of the weights file) and returns the ``.safetensors`` path. Existing files of the same
    name are replaced.
    """
    from safetensors.torch import save

    card.validate()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    try:
        reference = build_model(card.architecture).state_dict()
    except ValueError as exc:
        raise CheckpointError(f"model card {card.name!r}: {exc}") from None
    tensors = {}
    for key, value in state.items():
        value = value.detach().to("cpu")
        if half and torch.is_floating_point(value):
            value = value.to(torch.float16)
        tensors[key] = value.clone().contiguous()
    where = f"model for card {card.name!r}" + (" (float16; save with half=False if it overflows)" if half else "")
    _check_state_dict(reference, tensors, where)
    payload = save(tensors, metadata={"format": "pt", "card": card.name})
    card.weights_sha256 = hashlib.sha256(payload).hexdigest()
    weights_path = directory / f"{card.name}.safetensors"
    card_path = directory / f"{card.name}.json"
    _atomic_write(weights_path, payload)
    text = json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n"
    _atomic_write(card_path, text.encode("utf-8"))
    _CACHE.discard(weights_path)
    return weights_path


def read_card(path: str | os.PathLike) -> ModelCard:
    """Parse and validate a ``.json`` model card; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read model card ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: model card is not valid JSON ({exc})") from None
    try:
        return ModelCard.from_dict(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise CheckpointError(f"{path}: invalid model card ({exc})") from None


def _weights_next_to(card_path: Path) -> Path | None:
    for suffix in WEIGHTS_SUFFIXES:
        candidate = card_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _search_dirs(extra_dirs: Sequence[str | os.PathLike] | None) -> list[Path]:
    env = [p for p in os.environ.get(CHECKPOINTS_ENV, "").split(os.pathsep) if p.strip()]
    dirs, seen = [], set()
    for entry in [weights_dir(), *(extra_dirs or ()), *env, user_checkpoint_dir()]:
        path = Path(entry).expanduser()
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            dirs.append(path)
    return dirs


def list_checkpoints(extra_dirs: Sequence[str | os.PathLike] | None = None) -> list[CheckpointInfo]:
    """Every checkpoint (a ``.json`` card with weights beside it) in the search folders.

    Folders: :func:`napari_segloss.weights_dir` (top level only), ``extra_dirs``,
    ``NAPARI_SEGLOSS_CHECKPOINTS``, then the user's fine-tuned checkpoints
    (:func:`napari_segloss.paths.user_checkpoint_dir`). Sorted by loss family (pixel, region, boundary, compound)
    then name. Invalid cards are skipped with a warning; a name already seen in an earlier
    folder shadows later ones (with a warning).
    """
    found: dict[str, CheckpointInfo] = {}
    for directory in _search_dirs(extra_dirs):
        if not directory.is_dir():
            continue
        for card_path in sorted(directory.glob("*.json")):
            weights_path = _weights_next_to(card_path)
            if weights_path is None:
                continue
            try:
                card = read_card(card_path)
            except CheckpointError as exc:
                warnings.warn(f"skipping checkpoint: {exc}", stacklevel=2)
                continue
            if card.name in found:
                warnings.warn(f"{card_path}: checkpoint name {card.name!r} already taken by {found[card.name].path}; skipped", stacklevel=2)
                continue
            found[card.name] = _info(card, card_path, weights_path)
    return sorted(found.values(), key=lambda i: (_FAMILIES.index(i.family), i.name.lower(), i.name))


def default_checkpoint(extra_dirs: Sequence[str | os.PathLike] | None = None) -> CheckpointInfo:
    """The checkpoint used when none is named: the first trained with the Dice loss, else the first listed."""
    infos = list_checkpoints(extra_dirs)
    if not infos:
        raise CheckpointError(f"no checkpoints found in {', '.join(map(str, _search_dirs(extra_dirs)))}")
    return next((i for i in infos if i.loss.lower() == "dice"), infos[0])


def _locate(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(card_path, weights_path)`` for a registry name or a ``.json``/weights path."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = (
        isinstance(name_or_path, os.PathLike)
        or path.suffix.lower() in (".json", *WEIGHTS_SUFFIXES)
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
    )
    if not looks_like_path:
        infos = list_checkpoints()
        match = next((i for i in infos if i.name == text), None) or next(
            (i for i in infos if i.name.lower() == text.lower()), None
        )
        if match is None:
            names = ", ".join(i.name for i in infos) or "none found"
            raise CheckpointError(f"unknown checkpoint {text!r}; available: {names}")
        return match.path, match.weights
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        weights_path = _weights_next_to(path)
        if weights_path is None:
            raise CheckpointError(f"{path}: no weights file ({', '.join(WEIGHTS_SUFFIXES)}) next to the card")
        return path, weights_path
    if suffix not in WEIGHTS_SUFFIXES:
        raise CheckpointError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .json, .safetensors, .pt or .pth")
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"{path}: no model card {card_path.name} next to the weights")
    return card_path, path


def _read_weights(weights_path: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    """State dict from a safetensors file (sha256-checked) or, with a warning, a .pt/.pth file."""
    if weights_path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        payload = weights_path.read_bytes()
        digest = hashlib.sha256(payload).hexdigest()
        if not card.weights_sha256:
            warnings.warn(f"{weights_path}: card has no weights_sha256; integrity not checked", stacklevel=3)
        elif digest != card.weights_sha256:
            raise CheckpointError(
                f"{weights_path}: sha256 mismatch (file {digest[:12]}..., card {card.weights_sha256[:12]}...): "
                "the weights were modified or belong to another card"
            )
        try:
            return load_safetensors(payload)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{weights_path}: not a valid safetensors file ({exc})") from None
    warnings.warn(
        f"{weights_path}: legacy PyTorch file read with torch.load(weights_only=True) (sha256 not checked); "
        "convert it once with napari_segloss.checkpoints.convert_pth",
        stacklevel=3,
    )
    try:
        obj = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{weights_path}: refused, not a plain tensor file ({reason})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{weights_path}: does not hold a state dict of tensors")
    return dict(obj)


def _load_uncached(card_path: Path, weights_path: Path, device: torch.device) -> LoadedCheckpoint:
    card = read_card(card_path)
    state = _read_weights(weights_path, card)
    try:
        model = build_model(card.architecture)
    except ValueError as exc:
        raise CheckpointError(f"{card_path}: {exc}") from None
    _check_state_dict(model.state_dict(), state, str(weights_path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights_path}: cannot load weights ({str(exc).splitlines()[0]})") from None
    model.eval().to(device)
    nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return LoadedCheckpoint(model, card, _info(card, card_path, weights_path), device, nbytes)


class _ModelCache:
    """Thread-safe LRU of loaded checkpoints bounded by total parameter bytes.

    The most recently used entry is always kept, even when alone it exceeds the budget.
    """

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, LoadedCheckpoint] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def limit_bytes() -> int:
        return int(float(os.environ.get(CACHE_ENV, DEFAULT_CACHE_MB)) * 2**20)

    def get(self, key: tuple) -> LoadedCheckpoint | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: tuple, value: LoadedCheckpoint) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            limit = self.limit_bytes()
            while len(self._items) > 1 and sum(v.nbytes for v in self._items.values()) > limit:
                self._items.popitem(last=False)

    def discard(self, weights_path: Path) -> None:
        target = str(Path(weights_path).resolve())
        with self._lock:
            for key in [k for k in self._items if k[0] == target]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def info(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": sum(v.nbytes for v in self._items.values()),
                "limit_bytes": self.limit_bytes(),
            }


_CACHE = _ModelCache()


def clear_cache() -> None:
    """Forget every cached model (frees their memory once callers drop them)."""
    _CACHE.clear()


def cache_info() -> dict[str, int]:
    """``{"entries", "bytes", "limit_bytes"}`` of the model cache."""
    return _CACHE.info()


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def load(name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint by registry name or by path (``.json``, ``.safetensors``, ``.pt``/``.pth``).

    The model is in eval mode on ``device`` (``"auto"``, ``"cpu"``, ``"cuda[:i]"``, ``"mps"``).
    Results are cached (LRU, bounded by memory): loading the same unchanged files onto the same
    device again returns the same object. Raises :class:`CheckpointError` for an unknown name,
    a missing/invalid card, a sha256 mismatch, an unsafe or unreadable weights file or a state
    dict that does not match the card's architecture exactly; ``ValueError`` for an unavailable
    device.
    """
    dev = resolve_device(device)
    card_path, weights_path = _locate(name_or_path)
    key = (str(weights_path.resolve()), str(dev), _signature(card_path), _signature(weights_path))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    loaded = _load_uncached(card_path, weights_path, dev)
    _CACHE.put(key, loaded)
    return loaded


def convert_pth(
    path: str | os.PathLike, card: ModelCard | None = None, directory: str | os.PathLike | None = None
) -> Path:
    """Convert a legacy ``.pt``/``.pth`` state dict into a safetensors checkpoint.

    The file is read with ``torch.load(weights_only=True)`` only. ``card`` defaults to the
    ``.json`` card next to the file; ``directory`` defaults to the file's folder. Returns the new
    ``.safetensors`` path (see :func:`save_checkpoint`).
    """
    path = Path(path)
    if path.suffix.lower() not in (".pt", ".pth"):
        raise CheckpointError(f"{path}: expected a .pt or .pth file")
    if card is None:
        card = read_card(path.with_suffix(".json"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = _read_weights(path, card)
    model = build_model(card.architecture)
    _check_state_dict(model.state_dict(), state, str(path))
    model.load_state_dict(state, strict=True)
    return save_checkpoint(model, card, directory if directory is not None else path.parent)
