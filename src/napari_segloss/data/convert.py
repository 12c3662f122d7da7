"""Convert Jun Cheng's figshare brain-tumour dataset into the labelled-folder layout.

Two sources are read (:func:`convert_figshare` tells them apart):

* **the original figshare release** (https://doi.org/10.6084/m9.figshare.1512427): files
  ``N.mat`` (``N`` = 1..3064, in any sub-folders of the source) holding a struct ``cjdata`` with
  ``image`` (int16, 512x512 or 256x256), ``tumorMask`` (logical, same size), ``label`` (1
  meningioma, 2 glioma, 3 pituitary), ``PID`` (patient id, a char array) and ``tumorBorder``
  (``[x1, y1, x2, y2, ...]``, MATLAB's 1-based column/row coordinates of the drawn border). The
  files are MATLAB v7.3, i.e. HDF5 (read with h5py; MATLAB stores arrays column-major, so h5py
  returns every matrix transposed and it is transposed back here); v5 files are read with SciPy.
  The record's ``cvind.mat`` (one fold number 1-5 per file index, v5 or v7.3) gives the folds.
* **the common community conversion**: ``images/N.png`` + ``masks/N_mask.png`` (pairs found as
  batch mode pairs them, :func:`napari_segloss.batch.pairing.discover`), with the folds from
  ``cvind.mat`` and/or a CSV table (:func:`read_table`) carrying folds, tumour types and patient
  ids. Images without a mask are left out and listed in :attr:`Conversion.skipped`.

The output is the layout :mod:`napari_segloss.data.figshare` reads and
:func:`napari_segloss.train.data.fold_splits` trains on::

    images/figshare_NNNN.png   grey, 8-bit, min-max scaled per slice (as the team's copy)
    masks/figshare_NNNN.png    tumour mask, 0 / 255
    labels.csv                 name, fold, tumour_type, patient, height, width, pixel_mm,
                               mask_pixels (+ border_dice for .mat sources)
    dataset.json               the dataset's identity (:data:`~napari_segloss.data.figshare.DATASET`)

``NNNN`` is the original file index (zero-padded to 4 digits). ``height``/``width`` are the
original size; ``pixel_mm`` is the stored image's pixel size in mm (0.49 mm for the 512x512
originals, per the figshare README; ``unknown`` for the others unless a table gives it), so
``size=256`` (box-averaging, PIL's ``BOX`` filter as the team's copy was made; masks averaged and
kept where at least half tumour) doubles it. ``mask_pixels`` counts the stored mask's pixels;
``border_dice`` is the Dice overlap of the stored ``tumorMask`` with the rasterised
``tumorBorder`` polygon at the original size (a check of orientation and of the mask). The output
folder is written atomically (:mod:`napari_segloss.outputs`) and the source is never modified.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloss.data.figshare import DATASET, DESCRIPTION, LABELS, NATIVE_PIXEL_MM, TUMOUR_TYPES

#: side (pixels) of the originals whose pixel size the figshare README states (NATIVE_PIXEL_MM)
NATIVE_SIDE = 512
#: the struct every figshare ``.mat`` file holds
STRUCT = "cjdata"
#: name of the folds variable in the record's ``cvind.mat``
FOLDS_VARIABLE = "cvind"


class ConversionError(ValueError):
    """A source cannot be converted; the message is one line and names the file."""


@dataclass(frozen=True)
class FigshareSlice:
    """One slice of the figshare release, in numpy (row, column) order.

    Attributes:
        index: the file index ``N`` of ``N.mat``.
        image: ``(H, W)`` intensities as stored (int16 in the release).
        mask: bool ``(H, W)`` tumour mask.
        label: 1 meningioma, 2 glioma, 3 pituitary.
        patient: patient id (``""`` when the file has none).
        border: float ``(K, 2)`` border points as 0-based (row, column) pixel coordinates.
    """

    index: int
    image: np.ndarray
    mask: np.ndarray
    label: int
    patient: str
    border: np.ndarray


@dataclass
class Conversion:
    """What :func:`convert_figshare` wrote.

    Attributes:
        out: the output folder.
        source: ``"mat"`` (figshare ``.mat`` files) or ``"png"`` (image/mask pairs).
        rows: the rows of ``labels.csv``.
        shapes: ``Counter`` of the stored ``(height, width)``; more than one size means
            :func:`~napari_segloss.train.data.fold_splits` refuses the folder (convert with ``size``).
        skipped: ``"<source path>: <reason>"`` for each input left out (an image without a mask).
        mixed_patients: patient ids found in more than one fold (folds should be patient-disjoint).
    """

    out: Path
    source: str
    rows: list[dict[str, Any]]
    shapes: Counter = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    mixed_patients: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Lines for the user: what was written, per fold and tumour type, and every caveat."""
        def counts(key: str) -> str:
            return ", ".join(f"{k} {n}" for k, n in sorted(Counter(str(r[key]) for r in self.rows).items()))

        sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sorted(self.shapes.items(), reverse=True))
        lines = [f"wrote {len(self.rows)} slices to {self.out}", f"  folds: {counts('fold')}",
                 f"  tumour types: {counts('tumour_type')}", f"  stored sizes: {sizes}"]
        if len(self.shapes) > 1:
            lines.append("  note: training needs one size; convert again with --size 256")
        if self.skipped:
            lines.append(f"  left out {len(self.skipped)} file(s): " + "; ".join(self.skipped[:3])
                         + ("; ..." if len(self.skipped) > 3 else ""))
        if self.mixed_patients:
            lines.append(f"  warning: {len(self.mixed_patients)} patient(s) in more than one fold (first: "
                         f"{self.mixed_patients[0]}): the folds are not patient-disjoint")
        return lines


def _index(stem: str) -> int | None:
    """The figshare file index of a stem (``"17"``, ``"figshare_0017"``), None if it is none."""
    match = re.fullmatch(r"(?:figshare_)?0*([1-9][0-9]*)", stem.strip())
    return int(match.group(1)) if match else None


# --- reading the .mat release ---------------------------------------------------------------

def _h5_value(node: Any) -> np.ndarray:
    """A MATLAB v7.3 dataset as numpy, transposed back to MATLAB's (row, column) order; an empty
    MATLAB array (stored as its dimensions with attribute ``MATLAB_empty``) is an empty array."""
    if node.attrs.get("MATLAB_empty", 0):
        return np.zeros((0,))
    return np.asarray(node[()]).T


def _read_v73(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        if STRUCT not in handle or not isinstance(handle[STRUCT], h5py.Group):
            raise ConversionError(f"{path}: no struct '{STRUCT}' (not a file of the figshare brain tumour dataset)")
        group = handle[STRUCT]
        return {key: _h5_value(group[key]) for key in group if isinstance(group[key], h5py.Dataset)}


def _read_v5(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    content = loadmat(path, squeeze_me=True, struct_as_record=False)
    struct = content.get(STRUCT)
    if struct is None or not hasattr(struct, "_fieldnames"):
        raise ConversionError(f"{path}: no struct '{STRUCT}' (not a file of the figshare brain tumour dataset)")
    return {key: np.asarray(getattr(struct, key)) for key in struct._fieldnames}


def _text(codes: np.ndarray) -> str:
    """A MATLAB char array as text: v7.3 stores it as uint16 character codes, v5 as a string."""
    if codes.dtype.kind in "US":
        return "".join(str(v) for v in codes.ravel()).strip()
    return "".join(chr(int(c)) for c in codes.ravel() if int(c)).strip()


def read_mat(path: str | os.PathLike, index: int | None = None) -> FigshareSlice:
    """Read one figshare ``N.mat`` file (MATLAB v7.3/HDF5 with h5py, else v5 with SciPy).

    Args:
        path: the file.
        index: its file index (default: the stem, ``N``).
    Raises:
        ConversionError: the file cannot be read, lacks a field, or its mask and image differ in size.
    """
    import h5py

    path = Path(path)
    number = index if index is not None else _index(path.stem)
    if number is None:
        raise ConversionError(f"{path}: the name is not a figshare file index (N.mat)")
    try:
        fields = _read_v73(path) if h5py.is_hdf5(path) else _read_v5(path)
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py/SciPy raise many types for damaged files
        raise ConversionError(f"{path}: cannot read the .mat file ({type(exc).__name__}: {exc})") from None
    missing = [key for key in ("image", "tumorMask", "label") if key not in fields]
    if missing:
        raise ConversionError(f"{path}: {STRUCT} has no field(s) {', '.join(missing)}")
    image, mask = fields["image"], fields["tumorMask"]
    if image.ndim != 2 or image.shape != mask.shape:
        raise ConversionError(f"{path}: image {image.shape} and tumorMask {mask.shape} are not one 2-D size")
    value = np.asarray(fields["label"]).ravel()
    label = int(value[0]) if value.size == 1 and value.dtype.kind in "iuf" and np.isfinite(value[0]) else None
    if label not in TUMOUR_TYPES:
        raise ConversionError(f"{path}: label {value.tolist()} is not one of {sorted(TUMOUR_TYPES)}")
    border = np.asarray(fields.get("tumorBorder", np.zeros(0)), dtype=np.float64).ravel()
    points = border[: border.size // 2 * 2].reshape(-1, 2)[:, ::-1] - 1.0  # (x, y) 1-based -> (row, col)
    return FigshareSlice(number, image, mask.astype(bool), label, _text(fields.get("PID", np.zeros(0))), points)


def read_folds(path: str | os.PathLike) -> np.ndarray:
    """The fold of every file index from the record's ``cvind.mat`` (v5 or v7.3).

    Returns:
        int ``(N,)``: element ``i`` is the fold of file ``i + 1``.
    Raises:
        ConversionError: unreadable, no single numeric vector (``cvind`` or the file's only
            variable), or a value that is not a whole number >= 1.
    """
    import h5py

    path = Path(path)
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as handle:
                found = {k: _h5_value(handle[k]) for k in handle if isinstance(handle[k], h5py.Dataset)}
        else:
            from scipy.io import loadmat

            found = {k: np.asarray(v) for k, v in loadmat(path).items() if not k.startswith("__")}
    except Exception as exc:  # noqa: BLE001 - damaged or foreign files
        raise ConversionError(f"{path}: cannot read the folds file ({type(exc).__name__}: {exc})") from None
    values = found.get(FOLDS_VARIABLE, next(iter(found.values())) if len(found) == 1 else None)
    if values is None or values.dtype.kind not in "iuf" or values.size == 0:
        raise ConversionError(f"{path}: expected one numeric vector '{FOLDS_VARIABLE}', found {sorted(found) or 'nothing'}")
    folds = values.astype(np.float64).ravel()
    if not np.all(np.isfinite(folds) & (folds >= 1) & (folds == np.round(folds))):
        raise ConversionError(f"{path}: folds must be whole numbers >= 1")
    return folds.astype(int)


# --- reading the PNG conversion -----------------------------------------------------------

_KEY_COLUMNS = ("name", "file", "filename", "image", "index", "id")
_TYPE_COLUMNS = ("tumour_type", "tumor_type", "label_name", "label", "class")
_PATIENT_COLUMNS = ("patient", "pid", "patient_id")


def _column(fields: Sequence[str], choices: Sequence[str]) -> str | None:
    lowered = {name.strip().lower(): name for name in fields}
    return next((lowered[c] for c in choices if c in lowered), None)


def _tumour_type(text: str, where: str) -> str:
    value = text.strip().lower().replace("pituitary tumor", "pituitary").replace("pituitary tumour", "pituitary")
    if value in ("", "unknown"):
        return "unknown"
    number = _index(value)
    if number in TUMOUR_TYPES:
        return TUMOUR_TYPES[number]
    if value in TUMOUR_TYPES.values():
        return value
    raise ConversionError(f"{where}: tumour type {text!r} is not 1, 2, 3 or one of {sorted(TUMOUR_TYPES.values())}")


def read_table(path: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Per-slice facts from a CSV table of a PNG conversion, keyed by file index.

    The slice is named by the first of the columns ``name``, ``file``, ``filename``, ``image``,
    ``index``, ``id`` (``17``, ``17.png``, ``images/17.png`` or ``figshare_0017``). Optional
    columns: ``fold``; the tumour type as ``tumour_type``/``tumor_type``/``label_name``/``label``/
    ``class`` (1/2/3 or meningioma/glioma/pituitary); ``patient``/``PID``/``patient_id``;
    ``pixel_mm`` (of the image as given). Column names are matched without regard to case.

    Returns:
        index -> a dict with any of ``fold`` (int), ``tumour_type``, ``patient``, ``pixel_mm``.
    Raises:
        ConversionError: unreadable, no key column, a key that is not a file index, a bad fold or
            tumour type, or an index listed twice.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = list(reader.fieldnames or ())
            table = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConversionError(f"{path}: cannot read the table ({exc})") from None
    key = _column(fields, _KEY_COLUMNS)
    if key is None:
        raise ConversionError(f"{path}: no column naming the slices (one of {', '.join(_KEY_COLUMNS)})")
    fold_col = _column(fields, ("fold",))
    type_col = _column(fields, _TYPE_COLUMNS)
    patient_col = _column(fields, _PATIENT_COLUMNS)
    pixel_col = _column(fields, ("pixel_mm",))
    facts: dict[int, dict[str, Any]] = {}
    for line, row in enumerate(table, start=2):
        where = f"{path}, line {line}"
        raw = str(row.get(key) or "")
        number = _index(Path(raw.replace("\\", "/")).name.split(".")[0])
        if number is None:
            raise ConversionError(f"{where}: {raw!r} is not a figshare file index")
        if number in facts:
            raise ConversionError(f"{where}: slice {number} is listed twice")
        entry: dict[str, Any] = {}
        if fold_col and (row.get(fold_col) or "").strip():
            fold = _index(row[fold_col])
            if fold is None:
                raise ConversionError(f"{where}: fold {row[fold_col]!r} is not a whole number >= 1")
            entry["fold"] = fold
        if type_col:
            entry["tumour_type"] = _tumour_type(row.get(type_col) or "", where)
        if patient_col and (row.get(patient_col) or "").strip():
            entry["patient"] = row[patient_col].strip()
        if pixel_col and (row.get(pixel_col) or "").strip() not in ("", "unknown"):
            try:
                entry["pixel_mm"] = float(row[pixel_col])
            except ValueError:
                raise ConversionError(f"{where}: pixel_mm {row[pixel_col]!r} is not a number") from None
        facts[number] = entry
    return facts


# --- pixels -------------------------------------------------------------------------------

def minmax_uint8(image: np.ndarray) -> np.ndarray:
    """Scale one slice's intensities to 0..255 by its own minimum and maximum (rounded), uint8;
    a constant slice becomes 0."""
    data = np.asarray(image, dtype=np.float64)
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    return np.clip(np.rint((data - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def box_average(image: np.ndarray, mask: np.ndarray, size: int, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Box-average a uint8 ``(H, W)`` slice and its bool mask to ``size x size`` (PIL ``BOX``).

    The mask keeps a pixel where at least half of its box is tumour. ``H`` and ``W`` must be the
    same whole multiple of ``size`` (no upsampling, no distortion).

    Raises:
        ConversionError: the slice is not such a multiple (``where`` names it).
    """
    from PIL import Image

    height, width = image.shape
    if height % size or width % size or height // size != width // size:
        raise ConversionError(f"{where}: a {height}x{width} slice cannot be box-averaged to {size}x{size} "
                              "(needs one whole factor on both axes)")
    if height == size:
        return image, mask
    small = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))
    tumour = np.asarray(Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).resize((size, size), Image.Resampling.BOX))
    return small, tumour >= 128


def border_dice(border: np.ndarray, mask: np.ndarray) -> float | None:
    """Dice of ``mask`` with the filled polygon of ``border`` (0-based (row, col) points); None
    when the border has fewer than 3 points or both are empty."""
    from skimage.draw import polygon2mask

    from napari_segloss.metrics import fbeta

    if len(border) < 3:
        return None
    dice = fbeta(polygon2mask(mask.shape, border), mask)
    return round(dice, 4) if math.isfinite(dice) else None


# --- the conversion -----------------------------------------------------------------------

def _mat_sources(src: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(src.rglob("*.mat")):
        number = _index(path.stem)
        if number is None:  # cvind.mat, label.mat and other companions
            continue
        if number in found:
            raise ConversionError(f"{src}: two files for slice {number}: {found[number]} and {path}")
        found[number] = path
    return found


def _auto_folds(src: Path) -> Path | None:
    candidates = sorted(p for p in src.rglob("*.mat") if p.stem.lower().startswith(FOLDS_VARIABLE))
    if len(candidates) > 1:
        raise ConversionError(f"{src}: several folds files ({', '.join(p.name for p in candidates)}); choose one with --folds")
    return candidates[0] if candidates else None


@dataclass
class _Slice:
    """One converted slice before it is written (uint8 image and bool mask at the stored size)."""

    index: int
    image: np.ndarray
    mask: np.ndarray
    original: tuple[int, int]
    pixel_mm: float | None
    tumour_type: str
    patient: str
    fold: int | None
    source: str
    border_dice: float | None = None


def _native_mm(shape: tuple[int, ...]) -> float | None:
    return NATIVE_PIXEL_MM if tuple(shape) == (NATIVE_SIDE, NATIVE_SIDE) else None


def _fold(folds: np.ndarray | None, number: int, where: Path) -> int | None:
    if folds is None:
        return None
    if number > len(folds):
        raise ConversionError(f"{where}: slice {number} has no fold (the folds file lists {len(folds)} slices)")
    return int(folds[number - 1])


def _from_mat(files: Mapping[int, Path], folds: np.ndarray | None) -> Iterator[_Slice]:
    for number, path in sorted(files.items()):
        cj = read_mat(path, number)
        yield _Slice(number, minmax_uint8(cj.image), cj.mask, tuple(cj.image.shape), _native_mm(cj.image.shape),
                     TUMOUR_TYPES[cj.label], cj.patient, _fold(folds, number, path), str(path),
                     border_dice(cj.border, cj.mask))


def _png_pairs(src: Path) -> tuple[list[tuple[int, Path, Path]], list[str]]:
    """(index, image, mask) of every pair below ``src`` and the unpaired files left out."""
    from napari_segloss.batch.pairing import discover

    found = discover(src)
    skipped = [f"{e.path}: {e.reason}" for e in found.entries if e.status == "unpaired"]
    pairs: dict[int, tuple[int, Path, Path]] = {}
    for item in found.items:
        if item.mask is None:
            continue
        number = _index(item.image.stem)
        if number is None:
            raise ConversionError(f"{item.image}: the name is not a figshare file index (N.png)")
        if number in pairs:
            raise ConversionError(f"{src}: two images for slice {number}: {pairs[number][1]} and {item.image}")
        pairs[number] = (number, item.image, item.mask)
    if not pairs:
        raise ConversionError(f"{src}: no figshare .mat files and no image/mask pairs (images/N.png + masks/N_mask.png)")
    return sorted(pairs.values()), skipped


def _from_png(pairs: Sequence[tuple[int, Path, Path]], folds: np.ndarray | None,
              facts: Mapping[int, Mapping[str, Any]]) -> Iterator[_Slice]:
    from napari_segloss.io import ScanReadError, read_scans
    from napari_segloss.preprocess import to_grayscale

    for number, image_path, mask_path in pairs:
        try:
            image, mask = read_scans(image_path)[0], read_scans(mask_path)[0]
        except ScanReadError as exc:
            raise ConversionError(str(exc)) from None
        grey, tumour = to_grayscale(image.data, rgb=image.rgb), to_grayscale(mask.data, rgb=mask.rgb) > 0
        if grey.ndim != 2 or grey.shape != tumour.shape:
            raise ConversionError(f"{mask_path}: mask {tumour.shape} and image {grey.shape} are not one 2-D size")
        known = facts.get(number, {})
        fold = _fold(folds, number, image_path) if folds is not None else known.get("fold")
        yield _Slice(number, minmax_uint8(grey), tumour, tuple(grey.shape), known.get("pixel_mm", _native_mm(grey.shape)),
                     known.get("tumour_type", "unknown"), known.get("patient", ""), fold, str(image_path))


def _stored(item: _Slice, size: int | None) -> _Slice:
    """``item`` box-averaged to ``size x size`` (pixel size scaled by the factor); unchanged for None."""
    if size is None:
        return item
    item.image, item.mask = box_average(item.image, item.mask, size, item.source)
    if item.pixel_mm:
        item.pixel_mm *= item.original[0] / size
    return item


def _row(item: _Slice, with_border: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": f"figshare_{item.index:04d}", "fold": item.fold, "tumour_type": item.tumour_type,
        "patient": item.patient, "height": item.original[0], "width": item.original[1],
        "pixel_mm": round(item.pixel_mm, 4) if item.pixel_mm else "unknown", "mask_pixels": int(item.mask.sum()),
    }
    if with_border:
        row["border_dice"] = "" if item.border_dice is None else item.border_dice
    return row


def _mixed_patients(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    folds: dict[str, set[int]] = {}
    for row in rows:
        if row["patient"]:
            folds.setdefault(row["patient"], set()).add(row["fold"])
    return sorted(p for p, f in folds.items() if len(f) > 1)


def convert_figshare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int | None = None,
    folds: str | os.PathLike | None = None,
    table: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Conversion:
    """Convert the figshare release (``N.mat``) or a PNG conversion of it into a labelled folder.

    Args:
        src: folder holding the ``N.mat`` files (any depth), or ``images/N.png`` +
            ``masks/N_mask.png`` (the source is recognised by the ``.mat`` files).
        out: the output folder (it must not exist, or be empty, or, with ``overwrite``, be a
            previous result of this tool; never inside ``src``).
        size: box-average every slice to ``size x size`` (e.g. 256: the 512x512 originals at
            0.98 mm); None keeps the original sizes (the release mixes 512x512 and 256x256,
            which training refuses: see :attr:`Conversion.shapes`).
        folds: the record's ``cvind.mat``; default: a ``cvind*.mat`` found in ``src``. For a PNG
            source a ``table`` may give the folds instead (``folds`` wins).
        table: PNG sources only: a CSV table of folds, tumour types, patient ids
            (:func:`read_table`).
        overwrite: replace a previous result of this tool at ``out``.
        progress: called with ``(done, total)`` after each slice.
    Returns:
        the :class:`Conversion`.
    Raises:
        ConversionError: a source problem (one line naming the file); nothing is written then.
        napari_segloss.outputs.OutputError: ``out`` may not or cannot be written.

    Examples:
        >>> convert_figshare("brainTumorDataPublic", "figshare256", size=256)  # doctest: +SKIP
    """
    from napari_segloss.io import write_array, write_csv
    from napari_segloss.outputs import claim, writing

    source = Path(src)
    if not source.is_dir():
        raise ConversionError(f"{source}: not a folder (expected the figshare N.mat files or images/ + masks/)")
    if size is not None and size < 1:
        raise ConversionError(f"size must be a whole number >= 1, got {size}")
    target = claim(out, folder=True, inputs=[p for p in (source, folds, table) if p is not None], overwrite=overwrite)
    files = _mat_sources(source)
    if files and table is not None:
        raise ConversionError(f"{table}: the .mat files carry tumour types and patients; a table is for PNG sources")
    folds_path = Path(folds) if folds is not None else _auto_folds(source)
    fold_of = read_folds(folds_path) if folds_path is not None else None
    facts = read_table(table) if table is not None else {}
    if fold_of is None and not any("fold" in f for f in facts.values()):
        raise ConversionError(f"{source}: no folds; give the figshare record's cvind.mat (--folds) or, for PNG "
                              "sources, a table with a fold column (--table)")
    if files:
        kind, skipped, total, slices = "mat", [], len(files), _from_mat(files, fold_of)
    else:
        pairs, skipped = _png_pairs(source)
        kind, total, slices = "png", len(pairs), _from_png(pairs, fold_of, facts)
    rows: list[dict[str, Any]] = []
    shapes: Counter = Counter()
    with writing(target) as tmp:
        for item in slices:
            if item.fold is None:
                raise ConversionError(f"{item.source}: the table gives no fold for this slice (give --folds "
                                      "cvind.mat or a fold for every slice)")
            item = _stored(item, size)
            rows.append(_row(item, kind == "mat"))
            shapes[item.image.shape] += 1
            write_array(tmp / "images" / f"{rows[-1]['name']}.png", item.image)
            write_array(tmp / "masks" / f"{rows[-1]['name']}.png", item.mask)
            if progress:
                progress(len(rows), total)
        write_csv(tmp / LABELS, rows)
        dataset = {**DATASET, "conversion": {
            "from": "figshare .mat files" if kind == "mat" else "PNG pairs (images/N.png + masks/N_mask.png)",
            "size": f"{size}x{size} (box-averaged)" if size else "original",
            "folds": "cvind.mat of the figshare record" if fold_of is not None else "the table's fold column",
        }}
        (tmp / DESCRIPTION).write_text(json.dumps(dataset, indent=1), encoding="utf-8")
    return Conversion(target.path, kind, rows, shapes, skipped, _mixed_patients(rows))
