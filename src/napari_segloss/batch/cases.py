"""Read one batch result back (image, ground truth, predicted mask) to inspect it, e.g. in napari.

The image and mask come from the batch input (a ZIP input is re-opened and only that item's
members are extracted, safely, into a temporary folder that is removed afterwards); the predicted
mask comes from the result ZIP.
"""

from __future__ import annotations


import io
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from napari_segloss.batch.archive import safe_extract
from napari_segloss.batch.pairing import Item
from napari_segloss.batch.runner import BatchResult, Case
from napari_segloss.batch.samples import Sample, read_sample


@dataclass
class CaseData:
    """A case in memory: the ``case``, its ``sample`` (image, truth, spacing) and the bool
    ``prediction`` mask of the image's spatial shape, as written to the result ZIP."""

    case: Case
    sample: Sample
    prediction: np.ndarray


def _decode_mask(payload: bytes, member: str) -> np.ndarray:
    if member.endswith(".tif"):
        import tifffile

        return tifffile.imread(io.BytesIO(payload)) != 0
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image) != 0


def _read_from_zip(result: BatchResult, item: Item) -> Sample:
    wanted = [p for p in (item.source, item.mask_source) if p]

    def selected(name: str) -> bool:
        name = name.replace("\\", "/")
        return any(name == p or (p.endswith("/") and name.startswith(p)) for p in wanted)

    workdir = Path(tempfile.mkdtemp(prefix="napari-segloss-case-"))
    try:
        safe_extract(result.input, workdir, members=selected)
        local = replace(
            item,
            image=workdir / item.source.rstrip("/"),
            mask=workdir / item.mask_source.rstrip("/") if item.mask_source else None,
        )
        return read_sample(local)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def load_case(result: BatchResult, case: Case) -> CaseData:
    """Image, ground truth and predicted mask of ``case`` (from :meth:`BatchResult.worst`).

    Raises ``KeyError`` when the case is not part of ``result``, ``OSError``/``ValueError`` when
    the input or the result ZIP changed since the run.
    """
    item = next((i for i in result.items if i.name == case.item), None)
    if item is None:
        raise KeyError(f"{case.item!r} is not an item of this batch")
    sample = read_sample(item) if result.input.is_dir() else _read_from_zip(result, item)
    member = case.members["pred_mask"]
    with zipfile.ZipFile(result.out) as archive:
        prediction = _decode_mask(archive.read(member), member)
    return CaseData(case, sample, prediction)
