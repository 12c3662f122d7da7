"""Where the plugin finds its files (bundled checkpoints), whatever the install mode."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "NAPARI_SEGLOSS_WEIGHTS"
USER_DIR_ENV = "NAPARI_SEGLOSS_USER_DIR"

_PACKAGE_DIR = Path(__file__).resolve().parent


def weights_dir() -> Path:
    """Folder of the bundled checkpoints.

    Order: the ``NAPARI_SEGLOSS_WEIGHTS`` environment variable; ``napari_segloss/weights``
    inside an installed wheel (hatchling force-includes the repository's ``weights/`` there);
    the repository's root ``weights/`` for an editable install or a source checkout.
    """
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override).expanduser()
    in_package = _PACKAGE_DIR / "weights"
    if in_package.is_dir():
        return in_package
    return _PACKAGE_DIR.parent.parent / "weights"


def user_checkpoint_dir() -> Path:
    """Folder of the user's own (fine-tuned) checkpoints, always searched by the registry.

    ``NAPARI_SEGLOSS_USER_DIR`` overrides the default ``~/.napari-segloss/checkpoints``.
    """
    override = os.environ.get(USER_DIR_ENV)
    return Path(override).expanduser() if override else Path.home() / ".napari-segloss" / "checkpoints"


SHARED_DATA_ENV = "NAPARI_SEGLOSS_SHARED_DATA"


def shared_data_dir() -> Path:
    """The team's real labelled data (``shared/data`` beside a source checkout; never bundled).

    ``NAPARI_SEGLOSS_SHARED_DATA`` overrides it. The folder may not exist (a user's clone): callers
    check, and tests that need it skip with that reason.
    """
    override = os.environ.get(SHARED_DATA_ENV)
    return Path(override).expanduser() if override else _PACKAGE_DIR.parent.parent.parent / "shared" / "data"


CACHE_DIR_ENV = "NAPARI_SEGLOSS_CACHE_DIR"


def user_cache_dir() -> Path:
    """The one folder of derived files, each safe to delete (rebuilt when needed): the ONNX graphs
    of :mod:`napari_segloss.backends` (``onnx/``), the rendered synthetic splits
    (``synthetic/``, :func:`napari_segloss.train.data.synthetic_splits`) and the shared
    pretraining weights (``pretrain/``, :mod:`napari_segloss.train.pretrain`).

    ``NAPARI_SEGLOSS_CACHE_DIR`` overrides the default ``$XDG_CACHE_HOME/napari-segloss``
    (``~/.cache/napari-segloss``).
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "napari-segloss"
