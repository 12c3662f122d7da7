"""Synthetic T1 contrast-enhanced brain MRI with tumours, deterministic from a seed.

Anatomy is the MNI ICBM152 2009 template (bundled, see ``template.py``), warped per subject by a
random affine (rotation ±7–10°, scale 0.92–1.08 with ±5 % per axis, shift ±3 mm) and a smooth
elastic field (1.5–3.5 mm, 35 mm correlation), with a synthetic skull and scalp (``head.py``).
Tumours (``tumour.py``) displace the tissue around them (mass effect). Acquisition (``mr.py``):
smooth multiplicative bias field (±15–25 %), partial-volume blur, Rician noise at an SNR of
12–40, white matter stored at 600–2000 in uint16.

Realism, measured against the real T1-CE slices of Cheng's dataset (folds 1-3 only; the
checkpoints trained on them are the yardstick): grey matter at 0.85-0.95 of white matter,
subcutaneous fat at 1.9-2.4 (the brightest tissue, as on the real slices: 99th percentile of the
head over its median 2.5-3.1 here, 2.5-2.7 there), and tumour radii that give the real slices'
median areas (synthetic / real mm², tumour slices at 256²: meningioma 815 / 1114, glioma 1044 /
1089, pituitary 374 / 382). Synthetic gliomas stay brighter than the real ones (tumour over head
median 1.39 / 0.95: the real masks hold more necrosis). Mean Dice of the bundled real ``dice``,
``dice_focal`` and ``unified_focal`` checkpoints on the 59 tumour slices among the first 80
synthetic test slices: 0.71 (0.28 before these
changes; ``python scripts/probe_phantom.py``).

Ground truth: ``regions`` (0 background, 1 enhancing tumour, 2 necrotic core / cyst, 3 oedema)
and the binary ``mask`` = enhancing + necrotic (regions 1 and 2), **without oedema**: oedema is
reactive brain tissue, not tumour, and on T1-CE (the seed dataset's contrast) it is only faintly
hypointense with no visible edge, so it cannot be delineated on these images (BraTS's "tumour
core" region excludes it for the same reason). ``brain`` is the intracranial volume (brain,
CSF spaces and the sella): every tumour voxel lies inside it.

Class balance: with ``tumour="random"`` 30 % of slices have no tumour; the others are glioma
(47 %), pituitary (30 %) and meningioma (23 %), the proportions of the seed's dataset (1426 / 930
/ 708 slices).

Size distribution (deliberate: CALF chooses its loss from the skewness S and excess kurtosis K of
the per-image tumour areas). The 3D radius is log-normal per kind (``tumour.RADIUS_MM``; medians
24 / 20 / 17 mm for meningioma / glioma / pituitary, sigma 0.3–0.35), the slice cuts it at a
uniform offset within ±0.7 R of its centre, and a cross-section larger than ``MAX_FRACTION``
(25 %) of the intracranial area is shrunk. Measured over ``split_seeds("train", 1000)`` at 256²,
``plane="random"``: 27.3 % empty slices; tumour area 4 to 5046 pixels (0.02 % to 25.0 % of the
intracranial area; median 5.3 %, 90th percentile 15.4 %); over all 1000 areas (zeros included)
S = 1.42, K = 2.21 (scipy ``skew`` / ``kurtosis``), over the non-empty ones S = 1.39, K = 2.16:
right-skewed (S ≥ 1), the branch the seed's CALF run points to (BCE / ln 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

from napari_segloss.data.fields import SmoothField
from napari_segloss.data.head import HeadLook, draw_head, head_intensity
from napari_segloss.data.mr import acquire
from napari_segloss.data.template import Template, load_template
from napari_segloss.data.tumour import (
    TUMOUR_KINDS,
    TumourSpec,
    displace,
    draw_tumour,
    dural_tail,
    paint,
    reach_mm,
    shrink,
    tumour_maps,
)

PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
#: share of tumour-free slices drawn by ``tumour="random"``
EMPTY_SHARE = 0.30
#: relative frequency of the kinds among slices with a tumour (the seed dataset's proportions)
KIND_SHARES: dict[str, float] = {"meningioma": 708 / 3064, "glioma": 1426 / 3064, "pituitary": 930 / 3064}
#: largest share of the intracranial area a tumour may cover in a 2D slice
MAX_FRACTION = 0.25
#: first seed of each split; splits hold up to 10 million seeds each and never overlap
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 10_000_000, "test": 20_000_000}
_SPLIT_SIZE = 10_000_000

# image column and row directions (subject mm) per plane, radiological display: the subject's
# right on the image's left, anterior up (axial), superior up (coronal, sagittal), face left (sagittal)
_PLANE_AXES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], int]] = {
    "axial": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), 2),
    "coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), 1),
    "sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0), 0),
}
# range of tumour-free slice positions along the plane normal (template mm)
# template T1 levels (WM units) of: nothing, CSF, grey matter, white matter, brightest
_TEMPLATE_LEVELS = [0.0, 0.2, 0.76, 1.0, 1.2]
_SLICE_RANGE: dict[str, tuple[float, float]] = {"axial": (-28.0, 62.0), "coronal": (-85.0, 45.0),
                                                "sagittal": (-58.0, 58.0)}


_F = TypeVar("_F", bound=Callable[..., Any])


@lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()


def _one_blas_thread(func: _F) -> _F:
    """Run ``func`` with one BLAS thread: its matrix products are small, and threaded BLAS made
    a slice 3x more expensive in CPU time (spin-waiting threads) on a shared 2-core machine."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _threadpools().limit(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class SyntheticSample:
    """One generated scan.

    Attributes:
        image: uint16, (H, W) slice or (D, H, W) volume (axial slices, inferior → superior).
        mask: bool, same shape: the tumour the checkpoints segment (enhancing + necrotic core).
        regions: uint8, same shape: 0 background, 1 enhancing tumour, 2 necrotic core, 3 oedema.
        brain: bool, same shape: intracranial volume (brain, CSF spaces, sella).
        kind: "meningioma" | "glioma" | "pituitary" | "none".
        spacing: mm per pixel for each axis of ``image``.
        plane: "axial" | "coronal" | "sagittal".
        seed: the seed it was generated from.
        info: generation parameters (tumour radius and centre in mm, SNR, field of view).
    """

    image: np.ndarray
    mask: np.ndarray
    regions: np.ndarray
    brain: np.ndarray
    kind: str
    spacing: tuple[float, ...]
    plane: str
    seed: int = -1
    info: dict[str, Any] = field(default_factory=dict)


def split_seeds(split: str, n: int, base_seed: int = 0) -> list[int]:
    """``n`` seeds of a split: train, val and test use fixed, disjoint ranges of 10 million seeds.

    ``base_seed`` shifts within the split's range (e.g. a second disjoint training set).
    """
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_OFFSETS)}")
    if n < 0 or base_seed < 0 or base_seed + n > _SPLIT_SIZE:
        raise ValueError(f"need 0 <= base_seed and base_seed + n <= {_SPLIT_SIZE}, got {base_seed} + {n}")
    start = SPLIT_OFFSETS[split] + base_seed
    return list(range(start, start + n))


@dataclass(frozen=True)
class _Subject:
    """Per-subject anatomy and scanner: subject mm → template mm and appearance parameters."""

    matrix: np.ndarray
    shift: np.ndarray
    centre: np.ndarray
    elastic_mm: float
    grey: float
    csf: float
    texture: float
    head: HeadLook
    bias: float
    wm_level: float
    snr: float
    blur_px: float

    def to_template(self, points: np.ndarray) -> np.ndarray:
        """(3, ...) subject mm → (3, ...) template mm."""
        flat = points.reshape(3, -1) - self.centre.astype(np.float32)[:, None]
        out = np.empty_like(flat)
        for i in range(3):  # 3x3 by hand: a BLAS call here would spawn threads for nothing
            out[i] = flat[0] * np.float32(self.matrix[i, 0])
            out[i] += flat[1] * np.float32(self.matrix[i, 1])
            out[i] += flat[2] * np.float32(self.matrix[i, 2])
            out[i] += np.float32(self.centre[i] + self.shift[i])
        return out.reshape(points.shape)

    def to_subject(self, point: np.ndarray) -> np.ndarray:
        return self.centre + np.linalg.solve(self.matrix, point - self.centre - self.shift)


def _euler(angles: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = c
        r[i, j], r[j, i] = -s, s
        out = out @ r
    return out


def _draw_subject(rng: np.random.Generator, template: Template) -> _Subject:
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * np.array([7.0, 7.0, 10.0]))
    scale = rng.uniform(0.92, 1.08) * rng.uniform(0.95, 1.05, 3)
    return _Subject(
        matrix=_euler(angles) @ np.diag(1.0 / scale), shift=rng.uniform(-3, 3, 3), centre=template.centre,
        elastic_mm=rng.uniform(1.5, 3.5), grey=rng.uniform(0.85, 0.95), csf=rng.uniform(0.12, 0.3),
        texture=rng.uniform(0.02, 0.05),
        head=draw_head(rng), bias=rng.uniform(0.15, 0.25), wm_level=rng.uniform(600, 2000),
        snr=rng.uniform(12, 40), blur_px=rng.uniform(0.35, 0.7),
    )


@dataclass(frozen=True)
class _Fields:
    """Random fields of one sample: ``smooth`` = elastic displacement (3) + skull thickness (1)."""

    smooth: SmoothField
    bias: SmoothField
    fine: SmoothField
    coarse: SmoothField
    lobes: SmoothField | None


def _draw_fields(rng: np.random.Generator, coords: list[np.ndarray], spec: TumourSpec | None) -> _Fields:
    extent = [(float(c.min()), float(c.max())) for c in coords]
    return _Fields(
        smooth=SmoothField(rng, extent, 35.0, 4), bias=SmoothField(rng, extent, 90.0, 1),
        fine=SmoothField(rng, extent, 2.5, 1), coarse=SmoothField(rng, extent, 8.0, 1),
        lobes=None if spec is None else SmoothField(rng, extent, max(0.45 * spec.radius, 3.0), 2),
    )


def _box(inside: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of a boolean array as slices, or None when it is empty."""
    if not inside.any():
        return None
    box = []
    for axis in range(inside.ndim):
        hit = np.nonzero(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))[0]
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _render(
    template: Template,
    subject: _Subject,
    spec: TumourSpec | None,
    fields: _Fields,
    origin: np.ndarray,
    vectors: list[np.ndarray],
    coords: list[np.ndarray],
    skull: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noiseless image (WM units, bias applied), regions and intracranial mask on a grid.

    The grid point ``k`` is ``origin + sum_i coords[i][k_i] * vectors[i]`` (subject mm); all
    per-point arrays are channel-first float32 ``(3, n0, n1, ...)``. Without ``skull`` everything
    outside the intracranial volume is air, like a skull-stripped scan.
    """
    shape = tuple(len(c) for c in coords)
    ndim = len(shape)
    points = np.empty((3, *shape), np.float32)
    points[:] = origin.astype(np.float32).reshape((3,) + (1,) * ndim)
    for axis, (c, v) in enumerate(zip(coords, vectors)):
        along = [1] * ndim
        along[axis] = -1
        points += v.astype(np.float32).reshape((3,) + (1,) * ndim) * c.astype(np.float32).reshape(along)
    smooth = fields.smooth(*coords)
    points += smooth[:3] * np.float32(subject.elastic_mm)
    icv_points = subject.to_template(points)
    inside_mm = template.sample_icv(icv_points)

    tissue_points = points
    box_t = None
    if spec is not None:
        offset = points - spec.centre.astype(np.float32).reshape((3,) + (1,) * ndim)
        r2 = np.einsum("i...,i...->...", offset, offset)
        reach_t, reach_m = reach_mm(spec)
        box_m, box_t = _box(r2 < reach_m**2), _box(r2 < reach_t**2)
        if box_m is not None:
            tissue_points = points.copy()
            tissue_points[(slice(None), *box_m)] = displace(points[(slice(None), *box_m)], spec)
    brain_sel = inside_mm > -1.0
    tissue = np.zeros(shape, np.float32)
    tissue[brain_sel] = template.sample_t1(subject.to_template(tissue_points)[:, brain_sel])

    fine = fields.fine(*coords)[0]
    coarse = fields.coarse(*coords)[0]
    out_sel = (inside_mm < 1.0) if skull else np.zeros(shape, bool)
    image = np.zeros(shape, np.float32)
    image[out_sel] = head_intensity(
        -inside_mm[out_sel], template.sample_head(icv_points[:, out_sel]), subject.head,
        smooth[3][out_sel], fine[out_sel], coarse[out_sel],
    )
    # T1 contrast of this scan: template CSF / grey / white levels mapped to the subject's
    brain = np.interp(tissue, _TEMPLATE_LEVELS, [0.0, subject.csf, subject.grey, 1.0, 1.2]).astype(np.float32)
    brain *= 1.0 + np.float32(subject.texture) * fine
    # enhancing cortical veins: zero crossings of a smooth field, in the CSF of the sulci
    veins = np.exp(-np.square(coarse / np.float32(0.08))) * (tissue < 0.5) * (inside_mm < 10.0)
    brain += (0.9 - brain) * veins * np.float32(0.7)
    image += (brain - image) * np.clip(inside_mm / 0.7 + 0.5, 0.0, 1.0)
    inside = inside_mm > 0
    regions = np.zeros(shape, np.uint8)
    if box_t is not None:
        sub = (slice(None), *box_t)
        maps = tumour_maps(points[sub], spec, fields.lobes(*(c[b] for c, b in zip(coords, box_t))),
                           inside[box_t], tissue[box_t])
        view = image[box_t]
        paint(view, maps, spec, fine[box_t])
        view += (0.8 * spec.brightness - view) * dural_tail(points[sub], -inside_mm[box_t], spec)
        regions[box_t] = maps.regions
    image *= np.exp(np.float32(subject.bias) * fields.bias(*coords)[0])
    return image, regions, inside


def _resolve_kind(rng: np.random.Generator, tumour: str | None, empty_share: float) -> str | None:
    if tumour is None or tumour == "none":
        return None
    if tumour == "random":
        kinds = list(KIND_SHARES)
        if rng.random() < empty_share:
            return None
        return str(rng.choice(kinds, p=np.array(list(KIND_SHARES.values()))))
    if tumour not in TUMOUR_KINDS:
        raise ValueError(f"unknown tumour {tumour!r}; valid: random, none, {', '.join(TUMOUR_KINDS)}")
    return tumour


def _size2d(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    if int(h) < 8 or int(w) < 8:
        raise ValueError(f"size must be at least 8 pixels per axis, got {size!r}")
    return int(h), int(w)


@_one_blas_thread
def generate_slice(
    seed: int,
    size: int | tuple[int, int] = 256,
    *,
    plane: str = "axial",
    tumour: str | None = "random",
    skull: bool = True,
) -> SyntheticSample:
    """One synthetic T1-CE slice.

    Args:
        seed: the same seed (and arguments) always gives the same sample.
        size: output (H, W) in pixels (an int for square); the field of view is 235–270 mm
            across the larger side, so the pixel size is about 1 mm at 256.
        plane: "axial", "coronal", "sagittal", or "random" (one of the three, drawn from the seed).
        tumour: "random" (30 % none, else a kind in the seed dataset's proportions), a kind
            ("meningioma", "glioma", "pituitary"), or None / "none" for a healthy slice.
        skull: draw the synthetic skull, scalp and neck; False gives a skull-stripped look.
    Returns:
        a :class:`SyntheticSample` with (H, W) arrays and ``spacing`` (row mm, column mm).
    """
    rng = np.random.default_rng(seed)
    h, w = _size2d(size)
    if plane == "random":
        plane = PLANES[int(rng.integers(3))]
    if plane not in _PLANE_AXES:
        raise ValueError(f"unknown plane {plane!r}; valid: random, {', '.join(PLANES)}")
    kind = _resolve_kind(rng, tumour, EMPTY_SHARE)
    template = load_template()
    subject = _draw_subject(rng, template)
    spacing = rng.uniform(235.0, 270.0) / max(h, w)
    col, row, normal_axis = _PLANE_AXES[plane]
    vectors = [np.array(row), np.array(col)]
    coords = [(np.arange(h) - (h - 1) / 2) * spacing, (np.arange(w) - (w - 1) / 2) * spacing]
    origin = subject.to_subject(template.centre)
    origin[[a for a in range(3) if a != normal_axis]] += rng.uniform(-8, 8, 2)
    spec = None if kind is None else draw_tumour(rng, kind, template, subject.to_subject)
    if spec is None:
        offset = 0.0
        origin[normal_axis] = rng.uniform(*_SLICE_RANGE[plane])
    else:
        offset = rng.uniform(-0.7, 0.7) * spec.radius
        origin[normal_axis] = spec.centre[normal_axis] + offset
    fields = _draw_fields(rng, coords, spec)
    for _ in range(4):
        image, regions, inside = _render(template, subject, spec, fields, origin, vectors, coords, skull)
        if spec is None:
            break
        tumour_px = int(np.count_nonzero((regions == 1) | (regions == 2)))
        if tumour_px == 0 and offset != 0.0:
            # the cut missed the tumour (e.g. above a convexity meningioma): cut through its centre
            offset = 0.0
        elif tumour_px > MAX_FRACTION * max(int(np.count_nonzero(inside)), 1):
            # too large for this slice: shrink it to ~80 % of the limit
            factor = float(np.sqrt(0.8 * MAX_FRACTION * np.count_nonzero(inside) / tumour_px))
            spec, offset = shrink(spec, factor), offset * factor
        else:
            break
        origin[normal_axis] = spec.centre[normal_axis] + offset
    out = acquire(image, rng, blur_mm=(subject.blur_px * spacing,) * 2, spacing=(spacing, spacing),
                  wm_level=subject.wm_level, snr=subject.snr)
    return _sample(out, regions, inside, spec, (spacing, spacing), plane, seed, subject, offset)


@_one_blas_thread
def generate_volume(
    seed: int,
    shape: tuple[int, int, int] = (64, 256, 256),
    *,
    tumour: str | None = "random",
    skull: bool = True,
) -> SyntheticSample:
    """One synthetic T1-CE volume of axial slices, ordered inferior → superior.

    Args:
        seed: the same seed (and arguments) always gives the same volume.
        shape: (D, H, W); the slices span 130–150 mm, the in-plane field of view 235–270 mm.
        tumour: "random" (one of the three kinds in the seed dataset's proportions; the slices
            away from it are the tumour-free ones), a kind, or None / "none".
        skull: draw the synthetic skull, scalp and neck; False gives a skull-stripped look.
    Returns:
        a :class:`SyntheticSample` with (D, H, W) arrays and ``spacing`` (slice, row, column) mm.
    """
    rng = np.random.default_rng(seed)
    d, h, w = (int(s) for s in shape)
    if d < 1 or h < 8 or w < 8:
        raise ValueError(f"shape must be (D >= 1, H >= 8, W >= 8), got {shape!r}")
    kind = _resolve_kind(rng, tumour, 0.0)
    template = load_template()
    subject = _draw_subject(rng, template)
    spacing = rng.uniform(235.0, 270.0) / max(h, w)
    dz = rng.uniform(130.0, 150.0) / d
    col, row, _ = _PLANE_AXES["axial"]
    vectors = [np.array([0.0, 0.0, 1.0]), np.array(row), np.array(col)]
    coords = [(np.arange(d) - (d - 1) / 2) * dz, (np.arange(h) - (h - 1) / 2) * spacing,
              (np.arange(w) - (w - 1) / 2) * spacing]
    origin = subject.to_subject(template.centre) + np.array([*rng.uniform(-8, 8, 2), rng.uniform(-5, 5)])
    spec = None if kind is None else draw_tumour(rng, kind, template, subject.to_subject)
    if spec is not None:
        # shift the stack by less than a slice so that one slice cuts through the tumour's centre
        # (thick slices would otherwise step over a small pituitary adenoma)
        rel = spec.centre[2] - origin[2]
        origin[2] += rel - coords[0][int(np.argmin(np.abs(coords[0] - rel)))]
    fields = _draw_fields(rng, coords, spec)
    image = np.empty((d, h, w), np.float32)
    regions = np.empty((d, h, w), np.uint8)
    inside = np.empty((d, h, w), bool)
    for start in range(0, d, 8):  # slabs keep the per-point temporaries small
        part = slice(start, min(start + 8, d))
        image[part], regions[part], inside[part] = _render(
            template, subject, spec, fields, origin, vectors, [coords[0][part], coords[1], coords[2]], skull
        )
    blur = (max(0.4 * dz, subject.blur_px * spacing), subject.blur_px * spacing, subject.blur_px * spacing)
    out = acquire(image, rng, blur_mm=blur, spacing=(dz, spacing, spacing), wm_level=subject.wm_level,
                  snr=subject.snr)
    return _sample(out, regions, inside, spec, (dz, spacing, spacing), "axial", seed, subject, 0.0)


def _sample(
    image: np.ndarray,
    regions: np.ndarray,
    inside: np.ndarray,
    spec: TumourSpec | None,
    spacing: tuple[float, ...],
    plane: str,
    seed: int,
    subject: _Subject,
    offset: float,
) -> SyntheticSample:
    mask = (regions == 1) | (regions == 2)
    kind = "none" if spec is None or not mask.any() else spec.kind
    info: dict[str, Any] = {"snr": round(subject.snr, 2), "fov_mm": round(spacing[-1] * image.shape[-1], 1)}
    if spec is not None:
        info.update(radius_mm=round(spec.radius, 2), centre_mm=[round(float(c), 2) for c in spec.centre],
                    slice_offset_mm=round(offset, 2))
    return SyntheticSample(image=image, mask=mask, regions=regions, brain=inside, kind=kind,
                           spacing=tuple(float(s) for s in spacing), plane=plane, seed=int(seed), info=info)
