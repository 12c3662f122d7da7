"""Exceptions of batch mode, and which exceptions stop a run instead of failing one item."""

from __future__ import annotations


class BatchError(ValueError):
    """The batch cannot start: bad input, no images, unknown checkpoint, bad option."""


class BatchInputError(BatchError):
    """The input is missing, not a folder or ZIP, refused as a whole, or holds no image."""


class BatchCheckpointError(BatchError):
    """A requested checkpoint is unknown or cannot be loaded, or none is left to run."""


class BatchCancelled(Exception):
    """The run was cancelled; no output file was written and temporary files were removed."""


#: exceptions that stop the whole run (Ctrl-C, SIGTERM, exit); anything else, ``BaseException``
#: panics of native decoders included, fails only the item or chunk that raised it
FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


def describe(exc: BaseException) -> str:
    """``"Type: message"``, the reason recorded for a failed item."""
    return f"{type(exc).__name__}: {exc}"
