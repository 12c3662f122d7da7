"""Training data: the pre-rendered synthetic splits, folders of image/mask pairs, augmentation.

Every loss trains on the same arrays: the synthetic slices are rendered once (``size x size``,
optionally block-averaged down by an integer ``factor``, which multiplies the pixel spacing in mm
by ``factor``) into a cache file ``synthetic/synthetic_<hash>.npz`` under
:func:`napari_segloss.paths.user_cache_dir` whose hash covers the
generator's files and every rendering parameter. Images are normalised with the checkpoint
card's ``normalization`` spec (:func:`napari_segloss.preprocess.normalize`) per slice, exactly as
at inference.

Augmentation (:class:`Augment`, random crop included) is one recipe for every loss and is driven
only by the numpy generator it is given, so a run is deterministic on CPU given its seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from napari_segloss.paths import user_cache_dir
from napari_segloss.preprocess import DEFAULT_NORMALIZATION, normalize, to_grayscale

#: file suffixes accepted in a folder dataset
from napari_segloss.io.formats import SUFFIXES as IMAGE_SUFFIXES  # noqa: E402 - the format registry's
#: tumour-free slices have this kind
NO_TUMOUR = "none"


@dataclass
class SliceSet:
    """A stack of 2-D training/evaluation slices at the network's input size.

    Attributes:
        images: float32 ``(N, H, W)`` normalised intensities (about [0, 1]).
        masks: bool ``(N, H, W)`` binary tumour masks.
        spacing: float ``(N, 2)`` pixel spacing in mm (row, column) after resampling.
        kinds: tumour kind per slice (``"meningioma" | "glioma" | "pituitary" | "none"``, or
            ``"unknown"`` for folder data with a non-empty mask).
        names: an identifier per slice (``"seed<N>"`` or the file stem).
    """

    images: np.ndarray
    masks: np.ndarray
    spacing: np.ndarray
    kinds: list[str]
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def concat(self, other: SliceSet) -> SliceSet:
        """This set followed by ``other`` (same slice shape; a new :class:`SliceSet`)."""
        return SliceSet(np.concatenate([self.images, other.images]), np.concatenate([self.masks, other.masks]),
                        np.concatenate([self.spacing, other.spacing]), self.kinds + other.kinds,
                        self.names + other.names)

    def coarser(self, factor: int) -> SliceSet:
        """These slices with ``factor`` times larger pixels (``factor`` times fewer rows and
        columns, spacing times ``factor``): images resized as inference resizes a scan
        (:func:`napari_segloss.inference.resize_slices`), masks the same way thresholded at 0.5."""
        from napari_segloss.inference import resize_slices

        if factor == 1:
            return self
        size = (self.images.shape[-2] // factor, self.images.shape[-1] // factor)
        images = resize_slices(self.images[:, None], size)[:, 0]
        masks = resize_slices(self.masks[:, None].astype(np.float32), size)[:, 0] >= 0.5
        return SliceSet(images, masks, self.spacing * factor, list(self.kinds), list(self.names))

    def subset(self, index: Sequence[int] | np.ndarray) -> SliceSet:
        """The slices at ``index`` (a new :class:`SliceSet`)."""
        idx = np.asarray(index, dtype=np.int64)
        return SliceSet(
            self.images[idx], self.masks[idx], self.spacing[idx],
            [self.kinds[i] for i in idx], [self.names[i] for i in idx],
        )


@dataclass
class VolumeSet:
    """Whole 3-D test volumes, in-plane downsampled like the slices.

    Attributes:
        images: float32 ``(V, D, H, W)`` normalised per volume.
        masks: bool ``(V, D, H, W)``.
        spacing: ``(V, 3)`` voxel spacing in mm (slice, row, column).
        kinds: tumour kind per volume.
        names: ``"vol_seed<N>"`` per volume.
    """

    images: np.ndarray
    masks: np.ndarray
    spacing: np.ndarray
    kinds: list[str]
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class Splits:
    """Train / validation / test slices (optional test volumes and tumour-free test crops) plus how
    they were made."""

    train: SliceSet
    val: SliceSet
    test: SliceSet | None
    volumes: VolumeSet | None
    description: dict[str, Any] = field(default_factory=dict)
    #: tumour-free test images (e.g. :func:`negative_crops` of real tumour slices), or None
    negatives: SliceSet | None = None
    #: where the ``negatives`` were cut from: ``(test slice index, window)`` each, or None
    negative_windows: list[tuple[int, tuple[slice, slice]]] | None = None
    #: how many times larger the training slices' pixels are than those of val/test
    #: (:meth:`SliceSet.coarser`; 1 when all splits share one grid)
    train_factor: int = 1


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean downsampling of the last two axes by an integer ``factor`` (float32 out).

    Trailing rows/columns that do not fill a block are dropped.
    """
    arr = np.asarray(image, dtype=np.float32)
    if factor == 1:
        return arr
    h, w = arr.shape[-2] // factor, arr.shape[-1] // factor
    arr = arr[..., : h * factor, : w * factor]
    return arr.reshape(*arr.shape[:-2], h, factor, w, factor).mean(axis=(-3, -1))


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Downsample a binary mask by block means thresholded at 0.5 (area-preserving on average)."""
    return downsample(np.asarray(mask, dtype=np.float32), factor) >= 0.5


def _generator_fingerprint() -> str:
    """Hash of every file of the synthetic generator's package (code and template data)."""
    from napari_segloss.data import synthetic

    digest = hashlib.sha256()
    folder = Path(synthetic.__file__).parent
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _render_slices(seeds: Sequence[int], size: int, factor: int) -> dict[str, np.ndarray]:
    from napari_segloss.data.synthetic import generate_slice

    images, masks, spacing, kinds = [], [], [], []
    for seed in seeds:
        s = generate_slice(int(seed), size)
        images.append(np.round(downsample(s.image, factor)).astype(np.uint16))
        masks.append(downsample_mask(s.mask, factor))
        spacing.append([float(v) * factor for v in s.spacing[-2:]])
        kinds.append(s.kind if s.mask.any() else NO_TUMOUR)
    return {
        "images": np.stack(images), "masks": np.stack(masks),
        "spacing": np.asarray(spacing, dtype=np.float64), "kinds": np.asarray(kinds),
        "seeds": np.asarray(seeds, dtype=np.int64),
    }


def _render_volumes(seeds: Sequence[int], shape: tuple[int, int, int], factor: int) -> dict[str, np.ndarray]:
    from napari_segloss.data.synthetic import generate_volume

    images, masks, spacing, kinds = [], [], [], []
    for seed in seeds:
        v = generate_volume(int(seed), shape)
        images.append(np.round(downsample(v.image, factor)).astype(np.uint16))
        masks.append(downsample_mask(v.mask, factor))
        sz, sy, sx = (float(x) for x in v.spacing)
        spacing.append([sz, sy * factor, sx * factor])
        kinds.append(v.kind if v.mask.any() else NO_TUMOUR)
    return {
        "images": np.stack(images), "masks": np.stack(masks),
        "spacing": np.asarray(spacing, dtype=np.float64), "kinds": np.asarray(kinds),
        "seeds": np.asarray(seeds, dtype=np.int64),
    }


def _slice_set(raw: Mapping[str, np.ndarray], prefix: str, norm: Mapping[str, Any]) -> SliceSet:
    images = np.stack([normalize(im, norm) for im in raw[f"{prefix}_images"]]).astype(np.float32)
    return SliceSet(
        images, raw[f"{prefix}_masks"].astype(bool), raw[f"{prefix}_spacing"],
        [str(k) for k in raw[f"{prefix}_kinds"]], [f"seed{int(s)}" for s in raw[f"{prefix}_seeds"]],
    )


def synthetic_splits(
    n_train: int = 960,
    n_val: int = 64,
    n_test: int = 200,
    *,
    size: int = 256,
    factor: int = 1,
    n_volumes: int = 4,
    volume_shape: tuple[int, int, int] = (48, 256, 256),
    base_seed: int = 0,
    normalization: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> Splits:
    """The fixed synthetic train/val/test splits, rendered once and cached.

    Args:
        n_train, n_val, n_test: numbers of 2-D slices per split (seeds from
            :func:`napari_segloss.data.synthetic.split_seeds`, disjoint per split).
        size: rendering size (``size x size`` pixels) before downsampling.
        factor: integer downsampling factor (1 = none); the slices have ``size // factor``
            pixels and a pixel spacing ``factor`` times the generator's (mm).
        n_volumes: number of whole test volumes (seeds after the test slices' seeds).
        volume_shape: ``(D, H, W)`` rendering shape of each test volume (downsampled in-plane).
        base_seed: passed to ``split_seeds``.
        normalization: :func:`napari_segloss.preprocess.normalize` spec (default percentile).
        cache_dir: folder of the ``synthetic_<hash>.npz`` cache (default ``synthetic/`` under
            :func:`napari_segloss.paths.user_cache_dir`).
    Returns:
        :class:`Splits`; ``description`` records the parameters and the cache hash for the card.
    """
    from napari_segloss.data.synthetic import split_seeds

    norm = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
    params = {
        "generator": _generator_fingerprint(), "n_train": n_train, "n_val": n_val, "n_test": n_test,
        "size": size, "factor": factor, "n_volumes": n_volumes, "volume_shape": list(volume_shape),
        "base_seed": base_seed,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) if cache_dir else user_cache_dir() / "synthetic"
    path = folder / f"synthetic_{key}.npz"
    if not path.exists():
        arrays: dict[str, np.ndarray] = {}
        test_seeds = split_seeds("test", n_test + n_volumes, base_seed)
        for prefix, seeds in (("train", split_seeds("train", n_train, base_seed)),
                              ("val", split_seeds("val", n_val, base_seed)),
                              ("test", test_seeds[:n_test])):
            arrays.update({f"{prefix}_{k}": v for k, v in _render_slices(seeds, size, factor).items()})
        if n_volumes:
            vols = _render_volumes(test_seeds[n_test:], volume_shape, factor)
            arrays.update({f"vol_{k}": v for k, v in vols.items()})
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    with np.load(path) as raw:
        volumes = None
        if n_volumes:
            vol_images = np.stack([normalize(v, norm) for v in raw["vol_images"]]).astype(np.float32)
            volumes = VolumeSet(
                vol_images, raw["vol_masks"].astype(bool), raw["vol_spacing"],
                [str(k) for k in raw["vol_kinds"]], [f"vol_seed{int(s)}" for s in raw["vol_seeds"]],
            )
        splits = Splits(
            _slice_set(raw, "train", norm), _slice_set(raw, "val", norm), _slice_set(raw, "test", norm),
            volumes,
        )
    splits.description = {"source": "synthetic", "cache": path.name, "normalization": norm, **params}
    return splits


def _pair_files(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths paired as batch mode pairs them (:func:`napari_segloss.batch.pairing.discover`):
    ``x.ext`` + ``x_mask.ext`` (or ``_seg``, ``_label``) side by side, or ``images/`` + ``masks/``."""
    from napari_segloss.batch.pairing import discover

    pairs = [(item.image, item.mask) for item in discover(folder).items if item.mask is not None]
    if not pairs:
        raise ValueError(f"{folder}: no image/mask pairs (expected x.png + x_mask.png, or images/ + masks/)")
    return pairs


def _as_slices(scan: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """A Scan's data as grey ``(N, H, W)`` slices and the in-plane spacing (mm)."""
    spatial = len(scan.spacing)
    data = to_grayscale(scan.data, rgb=scan.data.ndim == spatial + 1)
    if data.ndim == 2:
        data = data[None]
    return data, (float(scan.spacing[-2]), float(scan.spacing[-1]))


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to ``shape`` (Gaussian anti-aliasing when shrinking), float32."""
    from skimage.transform import resize

    if tuple(image.shape) == tuple(shape):
        return image.astype(np.float32)
    return resize(image.astype(np.float32), shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def folder_splits(
    folder: str | Path,
    *,
    size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    normalization: Mapping[str, Any] | None = None,
) -> Splits:
    """Train/val splits from a folder of image/mask pairs (PNG, TIFF or DICOM).

    Each image is read with :func:`napari_segloss.io.read_scans`, made grey, normalised (a volume
    as a whole, exactly as :func:`napari_segloss.inference.predict` normalises it) and split into
    2-D slices. Slices keep their resolution (inference runs at
    the input's resolution too) unless their shapes differ: then every slice is resized to the
    most common shape, or to ``size x size`` when ``size`` is given (spacing rescaled). A mask is
    foreground where it is non-zero. A seeded permutation puts ``val_fraction`` of the slices (at
    least one) into validation; there is no test split.
    """
    from collections import Counter

    from napari_segloss.io import read_scans

    norm = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
    slices: list[tuple[np.ndarray, np.ndarray, tuple[float, float], str]] = []
    for image_path, mask_path in _pair_files(Path(folder)):
        img, sp = _as_slices(read_scans(image_path)[0])
        msk, _ = _as_slices(read_scans(mask_path)[0])
        if img.shape != msk.shape:
            raise ValueError(f"{mask_path}: mask shape {msk.shape} != image shape {img.shape}")
        scaled = normalize(img, norm)  # over the whole volume, as inference normalises it
        for i, (im, mk) in enumerate(zip(scaled, msk)):
            slices.append((im, mk > 0, sp, image_path.stem if len(img) == 1 else f"{image_path.stem}_{i}"))
    target = (size, size) if size else Counter(im.shape for im, *_ in slices).most_common(1)[0][0]
    images, masks, spacing, kinds, names = [], [], [], [], []
    for im, mk, sp, name in slices:
        scale = (im.shape[0] / target[0], im.shape[1] / target[1])
        images.append(_resize(im, target))
        masks.append(_resize(mk.astype(np.float32), target) >= 0.5)
        spacing.append([sp[0] * scale[0], sp[1] * scale[1]])
        kinds.append("unknown" if masks[-1].any() else NO_TUMOUR)
        names.append(name)
    full = SliceSet(np.stack(images), np.stack(masks), np.asarray(spacing), kinds, names)
    order = np.random.default_rng(seed).permutation(len(full))
    n_val = max(1, int(round(val_fraction * len(full)))) if len(full) > 1 else 0
    train, val = full.subset(order[n_val:]), full.subset(order[:n_val] if n_val else order)
    description = {"source": "folder", "path": str(Path(folder).resolve()), "n_train": len(train),
                   "n_val": len(val), "shape": list(target), "val_fraction": val_fraction, "normalization": norm}
    return Splits(train, val, None, None, description)


def _labelled_slice(folder: Path, row: Any, norm: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    from napari_segloss.io import read_scans

    img, _ = _as_slices(read_scans(folder / "images" / f"{row.name}.png")[0])
    msk, _ = _as_slices(read_scans(folder / "masks" / f"{row.name}.png")[0])
    if img.shape != msk.shape:
        raise ValueError(f"{folder / 'masks' / row.name}.png: mask shape {msk.shape} != image shape {img.shape}")
    return normalize(img[0], norm), msk[0] > 0


def _labelled_set(folder: Path, rows: Sequence[Any], norm: Mapping[str, Any], default_mm: float) -> SliceSet:
    pairs = [_labelled_slice(folder, row, norm) for row in rows]
    shapes = {im.shape for im, _ in pairs}
    if len(shapes) > 1:
        raise ValueError(f"{folder}: slices of different shapes {sorted(shapes)}; convert them to one size first")
    spacing = [[row.pixel_mm or default_mm] * 2 for row in rows]
    return SliceSet(np.stack([im for im, _ in pairs]).astype(np.float32), np.stack([mk for _, mk in pairs]),
                    np.asarray(spacing, dtype=np.float64), [row.tumour_type for row in rows],
                    [row.name for row in rows])


#: side (pixels) of the tumour-free crops and their least distance (mm) from the tumour
NEGATIVE_SIDE = 96
NEGATIVE_MARGIN_MM = 20.0


def negative_crop(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], *, side: int = NEGATIVE_SIDE,
                  margin_mm: float = NEGATIVE_MARGIN_MM, head_fraction: float = 0.7,
                  stride: int = 8) -> tuple[slice, slice] | None:
    """A ``side x side`` window of a tumour slice that shows head, not tumour; None if there is none.

    Every pixel of the window lies at least ``margin_mm`` from the tumour, and at least
    ``head_fraction`` of it is head (the filled largest component of ``image > 0.1`` on the
    normalised intensities); of the windows on a ``stride`` grid, the one with the most head
    wins (the first on a tie). Real data has no tumour-free slices; these crops are its
    negatives (the false-alarm rate of a checkpoint is the share of them with any predicted pixel).
    """
    height, width = mask.shape
    if height < side or width < side:
        return None
    labels, count = ndimage.label(image > 0.1)
    if not count:
        return None
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    head = ndimage.binary_fill_holes(labels == largest)
    near = ndimage.distance_transform_edt(~mask, sampling=tuple(float(v) for v in spacing)) < margin_mm
    sums = {}
    for name, field_ in (("head", head), ("near", near)):
        table = np.zeros((height + 1, width + 1))
        table[1:, 1:] = np.cumsum(np.cumsum(field_, axis=0), axis=1)
        sums[name] = table
    tops = np.arange(0, height - side + 1, stride)
    lefts = np.arange(0, width - side + 1, stride)
    t, lft = np.meshgrid(tops, lefts, indexing="ij")

    def window_sum(table: np.ndarray) -> np.ndarray:
        return table[t + side, lft + side] - table[t, lft + side] - table[t + side, lft] + table[t, lft]

    head_share = window_sum(sums["head"]) / side**2
    valid = (window_sum(sums["near"]) == 0) & (head_share >= head_fraction)
    if not valid.any():
        return None
    best = np.unravel_index(np.argmax(np.where(valid, head_share, -1.0)), valid.shape)
    top, left = int(tops[best[0]]), int(lefts[best[1]])
    return slice(top, top + side), slice(left, left + side)


def synthetic_negatives(n: int, size: int, normalization: Mapping[str, Any] | None = None) -> SliceSet:
    """``n`` tumour-free synthetic slices ``(n, size, size)`` (the phantom's training seeds, random
    planes), normalised like the training slices: the tumour-free examples real data lacks."""
    from napari_segloss.data.synthetic import generate_slice, split_seeds

    norm = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
    seeds = split_seeds("train", n)
    samples = [generate_slice(seed, size, tumour="none") for seed in seeds]
    return SliceSet(np.stack([normalize(s.image, norm) for s in samples]).astype(np.float32),
                    np.zeros((n, size, size), bool),
                    np.asarray([list(s.spacing[-2:]) for s in samples], dtype=np.float64).reshape(-1, 2),
                    [NO_TUMOUR] * n, [f"seed{seed}" for seed in seeds])


def negative_windows(split: SliceSet, **kwargs: Any) -> list[tuple[int, tuple[slice, slice]]]:
    """``(slice index, window)`` of every slice of ``split`` that has a :func:`negative_crop`, in
    slice order; keyword arguments go to :func:`negative_crop`."""
    windows = []
    for index, (image, mask, sp) in enumerate(zip(split.images, split.masks, split.spacing)):
        window = negative_crop(image, mask, sp, **kwargs)
        if window is not None:
            windows.append((index, window))
    return windows


def negative_crops(split: SliceSet, windows: Sequence[tuple[int, tuple[slice, slice]]] | None = None,
                   **kwargs: Any) -> SliceSet:
    """The crops of ``split`` at ``windows`` (default: its :func:`negative_windows`, keyword
    arguments going to :func:`negative_crop`); kind ``"none"``, name ``<slice>_negative``."""
    windows = negative_windows(split, **kwargs) if windows is None else windows
    images = [split.images[i][w] for i, w in windows]
    masks = [split.masks[i][w] for i, w in windows]
    spacing = [split.spacing[i] for i, _ in windows]
    names = [f"{split.names[i]}_negative" for i, _ in windows]
    side = int(kwargs.get("side", NEGATIVE_SIDE))
    return SliceSet(np.stack(images) if images else np.zeros((0, side, side), np.float32),
                    np.stack(masks) if masks else np.zeros((0, side, side), bool),
                    np.asarray(spacing, dtype=np.float64).reshape(-1, 2), [NO_TUMOUR] * len(images), names)


def fold_splits(
    folder: str | Path,
    *,
    train_folds: Sequence[int],
    val_folds: Sequence[int] = (),
    test_folds: Sequence[int] = (),
    val_fraction: float = 0.1,
    normalization: Mapping[str, Any] | None = None,
) -> Splits:
    """Train/val/test slices of a labelled folder (``images/``, ``masks/``, ``labels.csv`` with
    ``name`` and a patient-disjoint ``fold``; see :mod:`napari_segloss.data.figshare`).

    Validation is ``val_folds`` when given; otherwise the last ``val_fraction`` of every training
    fold's slices in name order (a block of consecutive slice numbers, which in Cheng's dataset
    keeps most patients on one side; the folds are the finest patient-disjoint unit it records).
    Slices keep their stored size and pixel size (``pixel_mm`` column; the median of the known
    ones where a row has none). The description names the dataset, folds and counts, never a path.
    """
    from napari_segloss.data.figshare import describe, read_labels

    folder = Path(folder)
    norm = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
    rows = sorted(read_labels(folder), key=lambda r: (r.fold, r.name))
    known = [r.pixel_mm for r in rows if r.pixel_mm]
    default_mm = float(np.median(known)) if known else 1.0
    overlap_folds = set(train_folds) & (set(val_folds) | set(test_folds))
    if overlap_folds or set(val_folds) & set(test_folds):
        raise ValueError(f"folds used twice across train/val/test: train {list(train_folds)}, "
                         f"val {list(val_folds)}, test {list(test_folds)}")
    train_rows, val_rows = [], []
    for fold in train_folds:
        in_fold = [r for r in rows if r.fold == fold]
        if not in_fold:
            raise ValueError(f"{folder}: no slices in fold {fold}")
        n_val = 0 if val_folds else max(1, int(round(val_fraction * len(in_fold))))
        train_rows += in_fold[: len(in_fold) - n_val]
        val_rows += in_fold[len(in_fold) - n_val:]
    val_rows += [r for r in rows if r.fold in set(val_folds)]
    test_rows = [r for r in rows if r.fold in set(test_folds)]
    train = _labelled_set(folder, train_rows, norm, default_mm)
    val = _labelled_set(folder, val_rows, norm, default_mm)
    test = _labelled_set(folder, test_rows, norm, default_mm) if test_rows else None
    windows = negative_windows(test) if test is not None else None
    negatives = negative_crops(test, windows) if test is not None else None
    description = {
        "source": "labelled folder", "dataset": describe(folder, rows),
        "folds": {"train": list(train_folds), "val": list(val_folds) or f"last {val_fraction:.0%} of each training fold",
                  "test": list(test_folds)},
        "counts": {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0,
                   "test_negatives": len(negatives) if negatives is not None else 0},
        "negatives": (f"{NEGATIVE_SIDE}x{NEGATIVE_SIDE}-pixel crops of the test slices, every pixel at least "
                      f"{NEGATIVE_MARGIN_MM:g} mm from the tumour, at least 70% head (train.data.negative_crop)"),
        "shape": list(train.images.shape[-2:]), "pixel_mm": default_mm,
        "n_unknown_pixel_size": len(rows) - len(known), "normalization": norm,
    }
    return Splits(train, val, test, None, description, negatives, windows)


@dataclass(frozen=True)
class Augment:
    """The one augmentation recipe shared by every loss (2-D slices), cropping included.

    Crop: a ``patch x patch`` window; with probability ``neg_crop`` (and a non-empty mask) it is
    centred anywhere on the slice such that no tumour pixel can fall inside it under any rotation
    and zoom drawn below (a tumour-free window, partly beyond the image edge where need be; the
    usual crop when 20 draws find none); else with probability ``fg_crop`` (and a non-empty mask)
    it is centred on a random tumour pixel (nnU-Net's foreground oversampling), otherwise on a
    uniform random position that keeps the window inside the image. ``neg_crop`` = 0 (the
    bundled recipe) draws exactly what it drew before the option existed. Geometric: rotation
    uniform in ``+-rotate_deg`` degrees and isotropic scale uniform in ``scale`` about the window centre
    (one bilinear resampling straight into the window; mask resampled bilinearly and thresholded
    at 0.5; zero outside the image), then a left-right flip with probability ``flip_p`` (brain
    anatomy is near-symmetric; up-down flips would create impossible anatomy).
    Intensity: gamma uniform in ``gamma``, then ``a * x + b`` with ``a`` in ``contrast`` and
    ``b`` in ``+-brightness``, then Gaussian noise of standard deviation uniform in ``[0, noise]``.
    """

    fg_crop: float = 0.33
    flip_p: float = 0.5
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (0.8, 1.25)
    contrast: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.05
    noise: float = 0.02
    neg_crop: float = 0.0

    def _tumour_free_centre(self, mask: np.ndarray, patch: tuple[int, int],
                            rng: np.random.Generator) -> np.ndarray | None:
        """A centre on the slice whose window holds no tumour pixel whatever the rotation and zoom
        (the window's reach: half its side x (cos + sin) of the largest angle / the smallest
        zoom), or None when 20 uniform draws found none."""
        angle = np.deg2rad(self.rotate_deg)
        reach = 0.5 * np.asarray(patch) * (np.cos(angle) + np.sin(angle)) / min(self.scale)
        rows, cols = np.nonzero(mask)
        for _ in range(20):
            centre = rng.uniform((0.0, 0.0), np.asarray(mask.shape, dtype=np.float64) - 1)
            if np.all((np.abs(rows - centre[0]) > reach[0]) | (np.abs(cols - centre[1]) > reach[1])):
                return centre
        return None

    def _centre(self, mask: np.ndarray, patch: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        if self.neg_crop and rng.random() < self.neg_crop and mask.any():
            centre = self._tumour_free_centre(mask, patch, rng)
            if centre is not None:
                return centre
        if rng.random() < self.fg_crop and mask.any():
            fg = np.argwhere(mask)
            return fg[rng.integers(len(fg))].astype(np.float64)
        low = (np.asarray(patch) - 1) / 2.0
        high = np.asarray(mask.shape) - 1 - low
        return np.array([rng.uniform(lo, hi) if hi > lo else (n - 1) / 2.0
                         for lo, hi, n in zip(low, high, mask.shape)])

    def _draw(self, mask: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
        """One sample's random parameters (the order of draws is part of the recipe)."""
        centre = self._centre(mask, shape, rng)
        flip = rng.random() < self.flip_p
        angle = np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg))
        zoom = rng.uniform(*self.scale)
        gamma = rng.uniform(*self.gamma)
        a, b = rng.uniform(*self.contrast), rng.uniform(-self.brightness, self.brightness)
        sigma = rng.uniform(0.0, self.noise)
        noise = rng.standard_normal(shape).astype(np.float32)
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        matrix = np.array([[cos, -sin], [sin, cos]])
        offset = centre - matrix @ ((np.asarray(shape) - 1) / 2.0)
        return {"matrix": matrix, "offset": offset, "flip": flip, "gamma": gamma, "a": a, "b": b,
                "sigma": sigma, "noise": noise}

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 patch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Augment one ``(H, W)`` float image and its bool mask into a ``(patch, patch)`` window
        (zero-padded where it leaves the image; the whole image when ``patch`` is None)."""
        shape = tuple(image.shape) if patch is None else (patch, patch)
        d = self._draw(mask, shape, rng)
        img = ndimage.affine_transform(image, d["matrix"], d["offset"], output_shape=shape, order=1, mode="constant")
        msk = ndimage.affine_transform(mask.astype(np.float32), d["matrix"], d["offset"], output_shape=shape,
                                       order=1, mode="constant") >= 0.5
        if d["flip"]:
            img, msk = img[:, ::-1], msk[:, ::-1]
        img = np.clip(img, 0.0, None) ** d["gamma"] * d["a"] + d["b"] + d["sigma"] * d["noise"]
        return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(msk)

    def batch(self, images: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
              patch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`__call__` for a stack of equal-sized slices in one resampling call.

        Args:
            images: float32 ``(B, H, W)``. masks: bool ``(B, H, W)``.
            rng: one generator for the batch (parameters are drawn sample after sample, in the
                order :meth:`__call__` draws them).
            patch: window side in pixels (None: the whole slice).
        Returns:
            ``(x, y)`` float32 tensors ``(B, 1, P, P)``: augmented images and 0/1 masks. The warp
            is :func:`torch.nn.functional.grid_sample` (bilinear, zero outside the image), which
            equals :meth:`__call__`'s SciPy resampling inside the image and differs only in the
            half pixel at its edge.
        """
        import torch.nn.functional as F

        height, width = images.shape[-2:]
        shape = (height, width) if patch is None else (patch, patch)
        draws = [self._draw(m, shape, rng) for m in masks]
        rows, cols = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64),
                                 indexing="ij")
        out = np.stack([rows.ravel(), cols.ravel()])
        grids = []
        for d in draws:
            src = d["matrix"] @ out + d["offset"][:, None]  # input (row, col) of every output pixel
            gy = 2.0 * src[0] / max(height - 1, 1) - 1.0
            gx = 2.0 * src[1] / max(width - 1, 1) - 1.0
            grids.append(np.stack([gx, gy], axis=-1).reshape(*shape, 2))
        source = torch.from_numpy(np.stack([images, masks.astype(np.float32)], axis=1).astype(np.float32))
        grid = torch.from_numpy(np.stack(grids).astype(np.float32))
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        flips = torch.tensor([d["flip"] for d in draws])
        warped[flips] = warped[flips].flip(-1)
        img, msk = warped[:, :1], (warped[:, 1:] >= 0.5).float()
        gamma = torch.tensor([d["gamma"] for d in draws], dtype=torch.float32).view(-1, 1, 1, 1)
        a = torch.tensor([d["a"] for d in draws], dtype=torch.float32).view(-1, 1, 1, 1)
        b = torch.tensor([d["b"] for d in draws], dtype=torch.float32).view(-1, 1, 1, 1)
        sigma = torch.tensor([d["sigma"] for d in draws], dtype=torch.float32).view(-1, 1, 1, 1)
        noise = torch.from_numpy(np.stack([d["noise"] for d in draws]))[:, None]
        img = img.clamp(min=0.0) ** gamma * a + b + sigma * noise
        return img.contiguous(), msk.contiguous()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (for the model card's recipe)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def epoch_batches(
    n: int, batch: int, seed: int, epoch: int, *, rank: int = 0, world: int = 1,
) -> Iterator[tuple[np.ndarray, np.random.Generator]]:
    """Batches of indices for one epoch, each with its own augmentation generator.

    The permutation and every batch's generator derive from ``(seed, epoch, batch number)``
    only, so an epoch is reproduced exactly after a resume. With ``world > 1`` each rank takes
    every ``world``-th index of each global batch of ``batch * world`` indices (DDP sharding).
    The incomplete last batch is dropped (``n // (batch * world)`` batches).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n)
    step = batch * world
    for k in range(n // step):
        chunk = order[k * step:(k + 1) * step][rank::world]
        yield chunk, np.random.default_rng([seed, epoch, k, rank])
