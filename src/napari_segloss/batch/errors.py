"""Exceptions of batch mode."""

from __future__ import annotations


class BatchError(ValueError):
    """The batch cannot start: bad input, no images, unknown checkpoint, bad option."""


class BatchCancelled(Exception):
    """The run was cancelled; no output file was written and temporary files were removed."""
