"""Loss registry: metadata (`LossInfo`), hyper-parameter validation and `build`.

Each loss module registers its classes with :func:`register`; the package ``__init__``
imports the family modules in catalogue order so ``available()`` lists them in that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch

Family = Literal["pixel", "region", "boundary", "compound"]
FAMILIES: tuple[str, ...] = ("pixel", "region", "boundary", "compound")


@dataclass(frozen=True)
class LossInfo:
    """What a loss is, in one place.

    Attributes:
        name: canonical snake_case name (the key of ``build``).
        title: human name, e.g. ``"Focal Tversky"``.
        family: ``"pixel" | "region" | "boundary" | "compound"``.
        summary: one line a clinician understands: what the loss rewards or punishes.
        reference: authors, title, venue, year, arXiv/DOI.
        defaults: hyper-parameters with their paper values.
        bounds: per hyper-parameter ``(low, high)`` inclusive range (``None`` = open side),
            or a tuple of allowed values for non-numeric parameters.
        needs: extra inputs beyond logits and target (``"features"``, ``"epoch"``,
            ``"dataset_stats"``, ...).
        dims: spatial dimensionalities supported, ``{2}`` or ``{2, 3}``.
        notes: implementation choices, degeneracies, deviations from reference code.
        aliases: other names that resolve to this loss (seed tool class names, ...).
        check: the independent implementation the tests compare against, or
            ``"none: invariants only"``.
        slow_reason: why this loss may be slower than 10x BCE (``""`` when it is not).
    """

    name: str
    title: str
    family: Family
    summary: str
    reference: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    bounds: Mapping[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()
    dims: frozenset[int] = frozenset({2, 3})
    notes: str = ""
    aliases: tuple[str, ...] = ()
    check: str = "none: invariants only"
    slow_reason: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}, got {self.family!r}")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "bounds", MappingProxyType(dict(self.bounds)))
        object.__setattr__(self, "needs", frozenset(self.needs))
        object.__setattr__(self, "dims", frozenset(self.dims))


_INFOS: dict[str, LossInfo] = {}
_FACTORIES: dict[str, Callable[..., torch.nn.Module]] = {}
_ALIASES: dict[str, str] = {}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register(info: LossInfo) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Class decorator: register ``cls`` under ``info.name`` (and its aliases)."""

    def decorate(factory: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if info.name in _INFOS:
            raise RuntimeError(f"loss {info.name!r} registered twice")
        _INFOS[info.name] = info
        _FACTORIES[info.name] = factory
        for alias in info.aliases:
            _ALIASES[_normalise(alias)] = info.name
        return factory

    return decorate


def available() -> list[str]:
    """Canonical loss names, in catalogue order (pixel, region, boundary, compound)."""
    return sorted(_INFOS, key=lambda n: (FAMILIES.index(_INFOS[n].family), list(_INFOS).index(n)))


def resolve(name: str) -> str:
    """Canonical name for ``name`` or an alias (``"DiceLoss"`` -> ``"dice"``)."""
    if name in _INFOS:
        return name
    key = _normalise(name)
    if key in _INFOS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(available())}")


def info(name: str) -> LossInfo:
    """The :class:`LossInfo` of ``name`` (canonical name or alias)."""
    return _INFOS[resolve(name)]


def _check_value(loss: str, key: str, value: Any, bound: Any) -> None:
    if isinstance(bound, tuple) and len(bound) == 2 and all(b is None or isinstance(b, (int, float)) for b in bound) and not isinstance(value, (str, bool)):
        low, high = bound
        if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            raise ValueError(f"{loss}: {key} must be a number in [{low}, {high}], got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{loss}: {key}={value!r} is out of range [{low}, {high}]")
    elif isinstance(bound, (tuple, list, frozenset, set)):
        if value not in bound:
            raise ValueError(f"{loss}: {key}={value!r} is not one of {sorted(map(str, bound))}")


def build(name: str, **hparams: Any) -> torch.nn.Module:
    """Instantiate a loss by canonical name or alias.

    Unknown names, unknown hyper-parameters and out-of-range values raise ``ValueError``
    listing what is valid. Unset hyper-parameters take ``info(name).defaults``.
    """
    canonical = resolve(name)
    meta = _INFOS[canonical]
    unknown = sorted(set(hparams) - set(meta.defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in meta.defaults.items()) or "none"
        raise ValueError(f"{canonical}: unknown hyper-parameter(s) {unknown}; valid: {valid}")
    for key, value in hparams.items():
        if key in meta.bounds:
            _check_value(canonical, key, value, meta.bounds[key])
    params = {**meta.defaults, **hparams}
    return _FACTORIES[canonical](**params)
