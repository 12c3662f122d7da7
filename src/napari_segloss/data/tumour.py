"""Tumour geometry, mass effect and T1-CE appearance of the three synthetic tumour kinds.

Geometry is an implicit function of subject-space millimetres: a randomly rotated ellipsoid of
radius ``R`` whose boundary is perturbed by a smooth random field (lobulation, infiltration).
Region labels: 1 enhancing tumour, 2 necrotic core (or cyst), 3 oedema.

Size distribution (deliberate; CALF's branch depends on its skewness): the 3D radius is
log-normal per kind and a 2D slice cuts the tumour at a uniform offset within ±0.7 R of its centre,
so the per-slice tumour area is right-skewed: many small and grazing cross-sections, few large
ones (the measured skewness is in ``synthetic``'s docstring; a test asserts S > 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from napari_segloss.data.template import Template

TUMOUR_KINDS: tuple[str, ...] = ("meningioma", "glioma", "pituitary")

#: (median radius mm, log-normal sigma, min mm, max mm) of the 3D tumour radius per kind
RADIUS_MM: dict[str, tuple[float, float, float, float]] = {
    "meningioma": (24.0, 0.35, 6.0, 36.0),
    "glioma": (20.0, 0.35, 6.0, 34.0),
    "pituitary": (17.0, 0.3, 5.0, 24.0),
}


@dataclass(frozen=True)
class TumourSpec:
    """One tumour in subject space (mm). ``shape`` maps ``p - centre`` to unit-sphere units times R.

    ``anchor`` is the point it grows from (the dural base of a meningioma, else the centre).
    """

    kind: str
    centre: np.ndarray
    anchor: np.ndarray
    radius: float
    shape: np.ndarray
    mass_effect: float
    mass_length: float
    lobulation: float
    edge: float
    core: float
    oedema: float
    oedema_drop: float
    brightness: float
    core_level: float
    heterogeneity: float


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def draw_tumour(
    rng: np.random.Generator, kind: str, template: Template, to_subject: Callable[[np.ndarray], np.ndarray]
) -> TumourSpec:
    """Draw a tumour of ``kind``; ``to_subject`` maps template mm (3,) to subject mm (3,)."""
    median, sigma, lo, hi = RADIUS_MM[kind]
    radius = float(np.clip(median * np.exp(sigma * rng.standard_normal()), lo, hi))
    axes = rng.uniform(0.8, 1.25, 3)
    axes /= np.cbrt(axes.prod())
    shape = np.diag(1.0 / axes) @ _rotation(rng).T
    if kind == "meningioma":
        anchor = template.dura[rng.integers(len(template.dura))]
        centre = anchor - template.icv_normal(anchor) * radius * rng.uniform(0.25, 0.6)
        params = dict(mass_effect=rng.uniform(0.45, 0.6), lobulation=rng.uniform(0.02, 0.06), edge=0.03,
                      core=rng.uniform(0.15, 0.4) if rng.random() < 0.08 else 0.0,
                      oedema=rng.uniform(1.15, 1.5) if rng.random() < 0.4 else 1.0,
                      brightness=rng.uniform(1.2, 1.6), heterogeneity=rng.uniform(0.03, 0.08))
    elif kind == "glioma":
        centre = anchor = template.white_matter[rng.integers(len(template.white_matter))]
        params = dict(mass_effect=rng.uniform(0.3, 0.5), lobulation=rng.uniform(0.12, 0.25),
                      edge=rng.uniform(0.06, 0.14),
                      core=rng.uniform(0.35, 0.75) if rng.random() < 0.85 else 0.0,
                      oedema=rng.uniform(1.35, 2.1), brightness=rng.uniform(1.1, 1.5),
                      heterogeneity=rng.uniform(0.1, 0.2))
    elif kind == "pituitary":
        anchor = template.sella
        centre = anchor + np.array([0.0, 0.0, 0.45 * radius])  # suprasellar growth
        params = dict(mass_effect=rng.uniform(0.25, 0.45), lobulation=rng.uniform(0.02, 0.06), edge=0.04,
                      core=rng.uniform(0.2, 0.5) if (radius > 8 and rng.random() < 0.15) else 0.0,
                      oedema=1.0, brightness=rng.uniform(1.0, 1.35), heterogeneity=rng.uniform(0.04, 0.1))
    else:
        raise ValueError(f"unknown tumour kind {kind!r}; valid: {', '.join(TUMOUR_KINDS)}")
    return TumourSpec(
        kind=kind, centre=to_subject(np.asarray(centre, float)), anchor=to_subject(np.asarray(anchor, float)),
        radius=radius, shape=shape,
        mass_length=1.5 * radius, oedema_drop=rng.uniform(0.15, 0.3), core_level=rng.uniform(0.18, 0.35),
        **params,
    )


def shrink(spec: TumourSpec, factor: float) -> TumourSpec:
    """The same tumour scaled by ``factor`` about its anchor (a meningioma stays on the dura)."""
    return replace(spec, radius=spec.radius * factor, mass_length=spec.mass_length * factor,
                   centre=spec.anchor + (spec.centre - spec.anchor) * factor)


def _offset(points: np.ndarray, spec: TumourSpec) -> np.ndarray:
    return points - spec.centre.astype(points.dtype).reshape((3,) + (1,) * (points.ndim - 1))


def reach_mm(spec: TumourSpec) -> tuple[float, float]:
    """Distances from the centre beyond which the tumour (with oedema) and the mass effect vanish."""
    stretch = float(np.linalg.norm(np.linalg.inv(spec.shape), 2))  # longest ellipsoid semi-axis factor
    tumour = spec.radius * stretch * (max(spec.oedema, 1.0) + 5.0 * spec.lobulation + 0.4) + 4.0
    return tumour, 2.6 * spec.mass_length


def displace(points: np.ndarray, spec: TumourSpec) -> np.ndarray:
    """Mass effect: where the tissue seen at ``points`` (3, ...) mm came from before the tumour grew.

    Radial map ``c + (p - c)(1 - k exp(-r²/L²))``: monotonic in r for k < 1, identity far away,
    so the surrounding tissue is pushed outward smoothly and the tissue inside is compressed.
    """
    d = _offset(points, spec)
    factor = np.exp(np.einsum("i...,i...->...", d, d) * np.float32(-1.0 / spec.mass_length**2))
    factor *= np.float32(-spec.mass_effect)
    factor += 1.0
    d *= factor
    d += spec.centre.astype(points.dtype).reshape((3,) + (1,) * (d.ndim - 1))
    return d


@dataclass(frozen=True)
class TumourMaps:
    """Per-pixel tumour fields: hard ``regions`` (uint8) and soft weights for painting."""

    regions: np.ndarray
    tumour: np.ndarray
    core: np.ndarray
    oedema: np.ndarray
    rho: np.ndarray
    inside: np.ndarray


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    return np.clip(x / width + 0.5, 0.0, 1.0)


def tumour_maps(
    points: np.ndarray, spec: TumourSpec, lobes: np.ndarray, inside: np.ndarray, tissue: np.ndarray
) -> TumourMaps:
    """Evaluate the tumour at ``points`` (3, ...) subject mm.

    Args:
        lobes: (2, ...) unit-variance smooth field (boundary and core/oedema perturbations).
        inside: (...) bool intracranial mask: no tumour outside it.
        tissue: (...) template T1 in WM units at the displaced points (oedema follows white matter).
    """
    d = np.tensordot(spec.shape.astype(np.float32), _offset(points, spec), axes=1)
    r = np.sqrt(np.einsum("i...,i...->...", d, d)) * np.float32(1.0 / spec.radius)
    rho = r - spec.lobulation * lobes[0]
    tumour = (rho < 1.0) & inside
    alpha = _soft(1.0 - rho, spec.edge) * inside
    core_rho = r - 0.25 * lobes[1]
    core_soft = _soft(spec.core - core_rho, 0.06) if spec.core > 0 else np.zeros_like(r)
    regions = np.zeros(r.shape, np.uint8)
    regions[tumour] = 1
    regions[tumour & (core_rho < spec.core)] = 2
    if spec.oedema > 1.0:
        wm = np.clip((tissue - 0.75) / 0.2, 0.0, 1.0)  # oedema spreads along white matter
        reach = 1.0 + (spec.oedema - 1.0) * (0.35 + 0.65 * wm)
        o_rho = r - 0.35 * lobes[1]
        oedema_soft = _soft(reach - o_rho, 0.15) * inside * (1.0 - alpha)
        regions[(o_rho < reach) & inside & ~tumour & (tissue > 0.45)] = 3
        oedema_soft *= tissue > 0.45
    else:
        oedema_soft = np.zeros_like(r)
    return TumourMaps(regions=regions, tumour=alpha.astype(np.float32), core=core_soft.astype(np.float32),
                      oedema=oedema_soft.astype(np.float32), rho=rho.astype(np.float32),
                      inside=inside.astype(np.float32))


def dural_tail(points: np.ndarray, outside_mm: np.ndarray, spec: TumourSpec) -> np.ndarray:
    """Weight (0..1) of the enhancing dural tail of a meningioma: dura within ~1.8 R of the tumour."""
    if spec.kind != "meningioma":
        return np.zeros(outside_mm.shape, np.float32)
    d = _offset(points, spec)
    r = np.sqrt(np.einsum("i...,i...->...", d, d)) / spec.radius
    near = np.clip((1.8 - r) / 0.6, 0.0, 1.0)
    on_dura = np.clip(1.0 - np.abs(outside_mm - 0.8) / 1.2, 0.0, 1.0)
    return (near * on_dura).astype(np.float32)


def paint(image: np.ndarray, maps: TumourMaps, spec: TumourSpec, texture: np.ndarray) -> np.ndarray:
    """Draw the tumour into ``image`` (WM units, modified in place and returned).

    Args:
        texture: (...) unit-variance fine-scale field (tumour heterogeneity).
    """
    image *= 1.0 - spec.oedema_drop * maps.oedema
    enhancing = spec.brightness * (1.0 + spec.heterogeneity * texture)
    if spec.kind == "glioma":
        # the rim enhances most just outside the necrotic core
        enhancing *= 1.0 + 0.15 * np.exp(-(((maps.rho - spec.core - 0.12) / 0.15) ** 2))
    core = spec.core_level * (1.0 + 0.3 * texture)
    value = enhancing * (1.0 - maps.core) + core * maps.core
    if spec.kind == "meningioma":
        # CSF cleft: a thin dark ring between the tumour and the compressed brain
        cleft = np.exp(-(((maps.rho - 1.05) / 0.05) ** 2)) * (1.0 - maps.tumour) * maps.inside
        image *= 1.0 - 0.4 * cleft
    image += (value - image) * maps.tumour
    return image
