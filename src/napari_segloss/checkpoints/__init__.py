"""Checkpoints: a model card (JSON) plus weights (safetensors), a registry and a loader.

One checkpoint is ``<name>.safetensors`` (the state dict, fp16 by default) next to
``<name>.json`` (a :class:`ModelCard`). One job per module:

* :mod:`~napari_segloss.checkpoints.card`: :class:`ModelCard`, its validation (a card is data:
  architectures come from an allow-list, no network library is imported) and the bounded
  reading of a card file (:func:`read_card`);
* :mod:`~napari_segloss.checkpoints.registry`: :func:`list_checkpoints` /
  :func:`scan_checkpoints` over the search folders (cached, :func:`refresh`), exact unique names
  (:func:`find`), :func:`default_checkpoint`;
* :mod:`~napari_segloss.checkpoints.loading`: :func:`save_checkpoint`, :func:`load` (safetensors
  with sha256, ``torch.load(weights_only=True)`` for legacy files, an LRU of loaded models bounded
  by ``NAPARI_SEGLOSS_CACHE_MB``) and :func:`convert_pth`.

Every problem with a card or a state dict raises :class:`CheckpointError` naming the file and the
reason.
"""

from napari_segloss.checkpoints.card import (
    MAX_CARD_BYTES,
    MAX_CARD_DEPTH,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    CheckpointError,
    ModelCard,
    read_card,
)
from napari_segloss.checkpoints.loading import (
    CACHE_ENV,
    DEFAULT_CACHE_MB,
    LoadedCheckpoint,
    cache_info,
    clear_cache,
    convert_pth,
    load,
    save_checkpoint,
    write_card,
)
from napari_segloss.checkpoints.registry import (
    CHECKPOINTS_ENV,
    WEIGHTS_SUFFIXES,
    CheckpointInfo,
    Registry,
    default_checkpoint,
    find,
    list_checkpoints,
    refresh,
    scan_checkpoints,
)

__all__ = [
    "CACHE_ENV",
    "CHECKPOINTS_ENV",
    "DEFAULT_CACHE_MB",
    "MAX_CARD_BYTES",
    "MAX_CARD_DEPTH",
    "REQUIRED_FIELDS",
    "SCHEMA_VERSION",
    "WEIGHTS_SUFFIXES",
    "CheckpointError",
    "CheckpointInfo",
    "LoadedCheckpoint",
    "ModelCard",
    "Registry",
    "cache_info",
    "clear_cache",
    "convert_pth",
    "default_checkpoint",
    "find",
    "list_checkpoints",
    "load",
    "read_card",
    "refresh",
    "save_checkpoint",
    "write_card",
    "scan_checkpoints",
]
