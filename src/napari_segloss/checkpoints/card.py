"""The model card: a JSON file describing one checkpoint, and the safe reading of it.

A card is data, never a program: :meth:`ModelCard.validate` checks every field, the architecture
against the allow-list of :func:`napari_segloss.models.validate_architecture` (no smp, timm or
network library is imported), and :func:`read_card` reads only regular files of at most
:data:`MAX_CARD_BYTES` bytes and :data:`MAX_CARD_DEPTH` levels of nesting, so a FIFO, a device,
a huge or a deeply nested file is one :class:`CheckpointError` naming the file and the reason.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloss import __version__
from napari_segloss.jsonable import jsonable
from napari_segloss.models import DEFAULT_ARCHITECTURE, validate_architecture
from napari_segloss.preprocess import DEFAULT_NORMALIZATION, normalize

#: version of the model-card layout written by :func:`napari_segloss.checkpoints.save_checkpoint`
SCHEMA_VERSION = 1
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
#: largest card file read, in bytes (the bundled cards are about 11 kB)
MAX_CARD_BYTES = 1 << 20
#: deepest nesting of objects and lists in a card (the bundled cards use 4)
MAX_CARD_DEPTH = 16
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_HISTORY_NUMBERS = ("train_loss", "val_dice", "val_iou", "seconds")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded or saved safely; the message names file and reason."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any, where: str) -> Any:
    """:func:`napari_segloss.jsonable.jsonable` (NaN/Inf -> None, ...), its errors as CheckpointError."""
    try:
        return jsonable(value, where)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


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
            self.family = catalogue_family(self.loss) or ""
        if self.family not in _families():
            raise self._fail(f"family must be one of {_families()}, got {self.family!r}")
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


def _families() -> tuple[str, ...]:
    """The loss families in catalogue order (``pixel, region, boundary, compound``)."""
    from napari_segloss import losses

    return losses.FAMILIES


def catalogue_family(loss: str) -> str | None:
    """The loss catalogue's family of ``loss``, or None when the catalogue does not know it."""
    from napari_segloss import losses

    try:
        return losses.info(loss).family
    except ValueError:
        return None


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects/lists in ``value`` nest deeper than ``limit`` levels (iterative)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _read_bounded(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most :data:`MAX_CARD_BYTES` bytes.

    Opened non-blocking and checked on the open descriptor, so a FIFO, a socket, a device (or a
    symlink to one) and a file swapped in after a check are refused, never waited on or slurped.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read model card ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{path}: model card is not a regular file (a folder, FIFO, socket or device)")
        if info.st_size > MAX_CARD_BYTES:
            raise CheckpointError(f"{path}: model card is {info.st_size} bytes; at most {MAX_CARD_BYTES} are read")
        chunks, size = [], 0
        try:
            while size <= MAX_CARD_BYTES and (chunk := handle.read(MAX_CARD_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read model card ({exc.strerror or exc})") from None
    if size > MAX_CARD_BYTES:
        raise CheckpointError(f"{path}: model card grew over {MAX_CARD_BYTES} bytes while being read")
    return b"".join(chunks)


def _clip(message: str, limit: int = 400) -> str:
    """``message`` cut to ``limit`` characters (a card may hold megabytes in one bad field)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def read_card(path: str | os.PathLike) -> ModelCard:
    """Parse and validate a ``.json`` model card (bounded: see :data:`MAX_CARD_BYTES`,
    :data:`MAX_CARD_DEPTH`); every problem is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    payload = _read_bounded(path)
    try:
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints over Python's digit limit
        raise CheckpointError(f"{path}: model card is not valid JSON ({_clip(str(exc))})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: model card nests deeper than {MAX_CARD_DEPTH} levels") from None
    if _depth_exceeds(data, MAX_CARD_DEPTH):
        raise CheckpointError(f"{path}: model card nests deeper than {MAX_CARD_DEPTH} levels")
    try:
        return ModelCard.from_dict(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {_clip(str(exc))}") from None
    except TypeError as exc:
        raise CheckpointError(f"{path}: invalid model card ({_clip(str(exc))})") from None
