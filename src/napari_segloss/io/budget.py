"""The memory budget of the readers: how many values a scan may hold, checked from its header.

Every reader calls :func:`check_voxel_budget` with the shape its file's header declares, before
any pixel is decoded, so a 79-byte ``.nii.gz`` declaring a 4 GB volume is refused without
allocating it. The budget counts values (voxels times colour channels), default
:data:`DEFAULT_MAX_VOXELS` (512 Mi, a 512 x 512 x 2048 CT, 2 GiB as float32); the environment
variable ``NAPARI_SEGLOSS_MAX_VOXELS`` (a positive integer, ``1e9`` notation accepted) changes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from napari_segloss.io import ScanReadError

#: the environment variable that sets the budget (values per scan)
MAX_VOXELS_ENV = "NAPARI_SEGLOSS_MAX_VOXELS"
#: values per scan when the variable is not set
DEFAULT_MAX_VOXELS = 2**29


class BudgetConfigError(ScanReadError):
    """``NAPARI_SEGLOSS_MAX_VOXELS`` holds something that is not a positive whole number.

    A :class:`ScanReadError`, so every caller that reports a reader's error in one line reports
    this one too."""


def max_voxels() -> int:
    """The budget in values per scan: ``NAPARI_SEGLOSS_MAX_VOXELS`` if set, else the default.

    Raises:
        BudgetConfigError: the variable is set to something other than a positive whole number
            (the message names the variable and the value).
    """
    raw = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise BudgetConfigError(
            f"{MAX_VOXELS_ENV}={raw!r} is not a positive whole number of voxels (e.g. 536870912 or 5e8)"
        )
    return int(value)


def _describe(count: int) -> str:
    return f"{count / 1e9:.2f} G" if count >= 10**9 else f"{count / 1e6:.1f} M"


def check_voxel_budget(shape: Sequence[int], path: str | os.PathLike, *, what: str = "the header declares") -> int:
    """Refuse a scan whose declared ``shape`` holds more values than the budget.

    Args:
        shape: the shape the header declares, all axes included (``(Z, H, W)``, ``(H, W, 3)``,
            frames x rows x columns x samples, ...).
        path: the file (or folder), named in the error.
        what: the words before the shape in the error (``"the header declares"``,
            ``"the files read so far hold"``).
    Returns:
        The number of values, ``prod(shape)``.
    Raises:
        ScanReadError: more values than :func:`max_voxels`, or a negative extent; the message
            names the file, the shape and the limit (``scan.nii.gz: the header declares
            (4096, 4096, 4096) = 68.72 G values, more than the memory budget of 536.9 M values
            (set NAPARI_SEGLOSS_MAX_VOXELS to raise it)``).
        BudgetConfigError: the budget variable is malformed.
    """
    dims = tuple(int(n) for n in shape)
    if any(n < 0 for n in dims):
        raise ScanReadError(f"{Path(path)}: {what} a negative size {dims}")
    count = math.prod(dims)
    limit = max_voxels()
    if count > limit:
        raise ScanReadError(
            f"{Path(path)}: {what} {dims} = {_describe(count)} values, more than the memory budget "
            f"of {_describe(limit)} values (set {MAX_VOXELS_ENV} to raise it)"
        )
    return count
