"""Synthetic skull and scalp around the skull-stripped template, as T1-CE intensities (WM units).

Layers outward from the intracranial surface: enhancing dura (1 mm), skull (dark inner and outer
tables, fatty diploe), then soft tissue by depth below the head surface: skin, subcutaneous fat
(brighter than white matter on T1), muscle. Below the brain the head continues as a column of
soft tissue with fat and air pockets (skull base, face, neck), so coronal and sagittal slices are
not cut off under the brainstem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HeadLook:
    """Per-subject head parameters; intensities in white-matter units, thicknesses in mm."""

    dura: float
    bone: float
    marrow: float
    fat: float
    muscle: float
    skin: float
    skull_mm: float
    fat_mm: float
    scalp_shift_mm: float


def draw_head(rng: np.random.Generator) -> HeadLook:
    """Random head appearance for one subject."""
    return HeadLook(
        dura=rng.uniform(0.15, 0.35), bone=rng.uniform(0.03, 0.08), marrow=rng.uniform(0.6, 1.07),
        fat=rng.uniform(1.9, 2.4), muscle=rng.uniform(0.35, 0.5), skin=rng.uniform(0.5, 0.7),
        skull_mm=rng.uniform(5.0, 8.0), fat_mm=rng.uniform(2.0, 5.0), scalp_shift_mm=rng.uniform(-2.0, 3.0),
    )


def _step(x: np.ndarray, width: float) -> np.ndarray:
    return np.clip(x / width + 0.5, 0.0, 1.0)


def head_intensity(
    outside_mm: np.ndarray,
    head_mm: np.ndarray,
    look: HeadLook,
    thickness: np.ndarray,
    texture: np.ndarray,
    pockets: np.ndarray,
) -> np.ndarray:
    """T1-CE intensity (WM units) of the tissues outside the intracranial volume.

    Args:
        outside_mm: distance outside the intracranial surface (mm; ≤ 0 inside).
        head_mm: signed distance inside the head surface (mm; < 0 in air).
        thickness: unit-variance smooth field modulating skull thickness (±25 %).
        texture: unit-variance fine field (marrow and soft-tissue texture).
        pockets: unit-variance coarse field (fat and air pockets in deep soft tissue).
    All arrays share one shape; returns float32 of that shape.
    """
    x = outside_mm - 1.0  # beyond the dura
    skull = np.maximum(look.skull_mm * (1.0 + 0.25 * thickness), 2.5)
    frac = x / skull
    diploe = _step(frac - 0.25, 0.12) * _step(0.75 - frac, 0.12)
    bone = look.bone + (look.marrow * (1.0 + 0.2 * texture) - look.bone) * diploe
    in_bone = _step(x, 0.6) * _step(skull - x, 0.6)
    h = head_mm + look.scalp_shift_mm
    soft = look.skin + (look.fat - look.skin) * _step(h - 1.2, 0.6)
    soft += (look.muscle * (1.0 + 0.15 * texture) - look.fat) * _step(h - 1.2 - look.fat_mm, 1.0)
    # deep soft tissue (skull base, face): fat and air pockets where the coarse texture is extreme
    deep = _step(x - skull - 6.0, 4.0)
    soft += deep * ((0.85 * look.fat - soft) * _step(pockets - 1.6, 0.4) - soft * 0.9 * _step(-pockets - 2.0, 0.3))
    dura = _step(-x, 0.5)
    value = dura * look.dura + (1.0 - dura) * (in_bone * bone + (1.0 - in_bone) * soft)
    return (value * _step(h, 0.8)).astype(np.float32)
