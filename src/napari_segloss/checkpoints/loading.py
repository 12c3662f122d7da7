"""Saving and loading checkpoints: safetensors weights checked against the card's sha256, and a
memory-bounded cache of loaded models.

Loading never unpickles: safetensors files are parsed as raw tensors after their sha256 is
compared with the card's; a legacy ``.pt``/``.pth`` file is read only through
``torch.load(weights_only=True)``, with a warning pointing at :func:`convert_pth`. Every problem
with a card or a state dict raises :class:`CheckpointError` naming the file and the reason.
Loaded models are kept in an LRU cache bounded by memory (``NAPARI_SEGLOSS_CACHE_MB``, default
1024); cached models are shared, so treat them as read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from napari_segloss.checkpoints import registry
from napari_segloss.checkpoints.card import CheckpointError, ModelCard, read_card
from napari_segloss.checkpoints.registry import CheckpointInfo, locate
from napari_segloss.models import build_model, resolve_device

CACHE_ENV = "NAPARI_SEGLOSS_CACHE_MB"
DEFAULT_CACHE_MB = 1024


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A ready model: ``model`` (eval mode, on ``device``), its ``card`` and registry ``info``;
    ``nbytes`` is the memory its parameters and buffers take."""

    model: torch.nn.Module
    card: ModelCard
    info: CheckpointInfo
    device: torch.device
    nbytes: int


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
    _atomic_write(card_path, _card_bytes(card))
    _CACHE.discard(weights_path)
    registry.refresh()  # the folder changed (its listing says so too, within the clock's resolution)
    return weights_path


def _card_bytes(card: ModelCard) -> bytes:
    return (json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_card(card: ModelCard, directory: str | os.PathLike) -> Path:
    """Rewrite ``<card.name>.json`` in ``directory`` atomically, beside weights that stay as they are.

    For card-only updates (e.g. the calibration measured after training). The ``.safetensors``
    file must exist with the sha256 the card records, so a card never vouches for other weights.
    Returns the card path.
    """
    card.validate()
    directory = Path(directory)
    weights_path = directory / f"{card.name}.safetensors"
    try:
        digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    except OSError as exc:
        raise CheckpointError(f"{weights_path}: cannot read the weights ({exc.strerror or exc})") from None
    if digest != card.weights_sha256:
        raise CheckpointError(f"{weights_path}: sha256 {digest[:12]}... differs from the card's "
                              f"{card.weights_sha256[:12] or '(none)'}...; save new weights with save_checkpoint")
    card_path = directory / f"{card.name}.json"
    _atomic_write(card_path, _card_bytes(card))
    registry.refresh()
    return card_path


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
    return LoadedCheckpoint(model, card, CheckpointInfo.from_card(card, card_path, weights_path), device, nbytes)


def cache_limit_bytes() -> int:
    """The model cache's budget in bytes from :data:`CACHE_ENV` (MiB; default :data:`DEFAULT_CACHE_MB`).

    Raises:
        ValueError: the variable is set but not a number >= 0 (the message names it).
    """
    text = os.environ.get(CACHE_ENV, "").strip()
    try:
        mib = float(text) if text else float(DEFAULT_CACHE_MB)
    except ValueError:
        mib = -1.0
    if not 0 <= mib < float("inf"):
        raise ValueError(f"{CACHE_ENV} must be a number of MiB >= 0, got {text!r}")
    return int(mib * 2**20)


class _ModelCache:
    """Thread-safe LRU of loaded checkpoints bounded by total parameter bytes.

    The most recently used entry is always kept, even when alone it exceeds the budget.
    """

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, LoadedCheckpoint] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def limit_bytes() -> int:
        return cache_limit_bytes()

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
    card_path, weights_path = locate(name_or_path)
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
