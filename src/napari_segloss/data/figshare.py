"""Jun Cheng's figshare brain-tumour dataset: what it is, its labelled-folder layout, and folds.

The labelled-folder layout every real-data function reads (``images/<name>.png``,
``masks/<name>.png`` and ``labels.csv`` with at least ``name`` and ``fold`` columns; optional
``tumour_type``, ``patient`` and ``pixel_mm``, or ``pixel_mm_256`` in the team's copy) is the one the team's copy in ``shared/data/figshare`` has
and the one :mod:`napari_segloss.data.convert` writes. A ``dataset.json`` beside ``labels.csv``
names the dataset, its licence and citation; a folder without one whose slices are named
``figshare_NNNN`` is Cheng's dataset (:data:`DATASET`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the dataset's identity, licence and the two citations its README asks for
DATASET: dict[str, Any] = {
    "name": "Cheng brain tumour dataset (figshare), T1-weighted contrast-enhanced MRI",
    "licence": "CC BY 4.0",
    "url": "https://doi.org/10.6084/m9.figshare.1512427",
    "citation": [
        "Jun Cheng, brain tumor dataset, figshare, 2017. https://doi.org/10.6084/m9.figshare.1512427",
        "Cheng J. et al., Enhanced Performance of Brain Tumor Classification via Tumor Region Augmentation "
        "and Partition, PLoS ONE 10(10): e0140381, 2015.",
    ],
    "folds": "the author's five patient-disjoint cross-validation folds (cvind)",
}
#: tumour types in the dataset's ``label`` field (1, 2, 3)
TUMOUR_TYPES = {1: "meningioma", 2: "glioma", 3: "pituitary"}
#: pixel size (mm) of the original 512x512 slices, from the figshare README
NATIVE_PIXEL_MM = 0.49
LABELS = "labels.csv"
DESCRIPTION = "dataset.json"


@dataclass(frozen=True)
class LabelledSlice:
    """One row of ``labels.csv``.

    Attributes:
        name: file stem of the image and the mask.
        fold: patient-disjoint fold number.
        tumour_type: ``"meningioma" | "glioma" | "pituitary"`` or ``"unknown"``.
        pixel_mm: pixel size in mm of the stored image, or None when unknown.
        patient: patient id when the folder records one ("" otherwise).
    """

    name: str
    fold: int
    tumour_type: str
    pixel_mm: float | None
    patient: str = ""


def _pixel_mm(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "", "unknown") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def read_labels(folder: str | Path) -> list[LabelledSlice]:
    """The rows of ``folder/labels.csv`` (``name`` and ``fold`` required).

    Raises ``ValueError`` naming the file when the table lacks those columns or a fold is not
    an integer.
    """
    path = Path(folder) / LABELS
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "fold"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                fold = int(row["fold"])
            except ValueError:
                raise ValueError(f"{path}, line {line}: fold {row['fold']!r} is not an integer") from None
            pixel = row.get("pixel_mm") or row.get("pixel_mm_256")
            rows.append(LabelledSlice(row["name"], fold, row.get("tumour_type") or "unknown", _pixel_mm(pixel),
                                      row.get("patient", "") or ""))
    return rows


def is_labelled_folder(folder: str | Path) -> bool:
    """True when ``folder`` has ``labels.csv``, ``images/`` and ``masks/``."""
    folder = Path(folder)
    return (folder / LABELS).is_file() and (folder / "images").is_dir() and (folder / "masks").is_dir()


def describe(folder: str | Path, rows: list[LabelledSlice]) -> dict[str, Any]:
    """The dataset's identity for a model card: ``dataset.json`` if present, else :data:`DATASET`
    for Cheng's slices, else just the folder's name (never a machine path)."""
    folder = Path(folder)
    if (folder / DESCRIPTION).is_file():
        return dict(json.loads((folder / DESCRIPTION).read_text(encoding="utf-8")))
    if rows and all(r.name.startswith("figshare_") for r in rows):
        return dict(DATASET)
    return {"name": folder.name}
