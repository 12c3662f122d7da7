"""Strict-JSON copies of results: the one NaN-to-None cleaner (model cards, training records,
``predict``'s metrics.json, batch run.json).

JSON has no NaN or infinity (``json.dumps(..., allow_nan=False)`` refuses them and other readers
choke on the ``NaN`` token Python writes by default), while undefined metrics are NaN by design
(:mod:`napari_segloss.metrics`): they become ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def jsonable(value: Any, where: str = "value") -> Any:
    """A copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NaN and ±inf become None; numpy scalars and arrays become Python numbers and lists; tuples
    become lists; mappings are copied with their (string) keys. ``where`` names ``value`` in
    errors, which give the path of the offending item (``card.test_metrics.hd95``).

    Raises:
        ValueError: a mapping key that is not a string, or a value of another type (a Path,
            an object): the message names where it is and its type.

    Examples:
        >>> jsonable({"dice": float("nan"), "spacing": (0.5, np.float32(2.0)), "n": np.int64(3)})
        {'dice': None, 'spacing': [0.5, 2.0], 'n': 3}
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            out[key] = jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{where}: {type(value).__name__} is not JSON-serialisable")
