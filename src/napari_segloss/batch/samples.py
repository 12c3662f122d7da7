"""Read one batch item into memory (image, ground truth, spacing) and group items into batches.

Only the items of the batches in flight are in memory at any time: :func:`read_sample` is
called lazily by the runner, and :func:`chunked` keeps at most one batch of 2D images.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from napari_segloss.batch.pairing import Item
from napari_segloss.inference import batch_size_for
from napari_segloss.io import Scan, ScanReadError, formats, read_scans
from napari_segloss.io.raster import as_labels


class ItemError(ValueError):
    """One item cannot be processed (unreadable file, mask of another shape, ...)."""


@dataclass
class Sample:
    """An item in memory.

    Attributes:
        name: the item's output name.
        image: ``(H, W)``, ``(Z, H, W)`` or either with a trailing RGB(A) axis, as read.
        truth: bool ground truth of the image's spatial shape, or None.
        spacing: mm per spatial axis (numpy order); 1.0 per axis when unknown.
        rgb: whether ``image`` has a trailing colour axis.
        spacing_known: False when the file records no pixel size (``Scan.spacing_known``).
        metadata: the image scan's metadata (a DICOM series' ``dicom_sources`` and
            ``affine_lps`` give each checkpoint's DICOM SEG).
    """

    name: str
    image: np.ndarray
    truth: np.ndarray | None
    spacing: tuple[float, ...]
    rgb: bool
    spacing_known: bool = True
    metadata: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(H, W)`` or ``(Z, H, W)``."""
        return tuple(self.image.shape[: len(self.spacing)])


@dataclass(frozen=True)
class Failure:
    """An item that could not be read or processed, with the ``reason``."""

    item: Item
    reason: str


def _one_scan(path, what: str, series: str | None = None) -> Scan:
    try:
        if series is not None:
            scans = formats.get("dicom-folder").read(path, series_uid=series)
        else:
            scans = read_scans(path)
    except ScanReadError as exc:
        raise ItemError(str(exc)) from None
    if len(scans) != 1:
        names = ", ".join(s.name for s in scans[:3])
        raise ItemError(f"{path}: the {what} holds {len(scans)} images ({names}); a batch item must hold one")
    return scans[0]


def read_sample(item: Item) -> Sample:
    """Read ``item``'s image and mask (non-zero = foreground; JPEG masks thresholded at half range).

    Raises :class:`ItemError` for unreadable files, several series in one unit, or a mask whose
    shape differs from the image's spatial shape.
    """
    scan = _one_scan(item.image, "image", item.series)
    truth = None
    if item.mask is not None:
        mask_scan = _one_scan(item.mask, "mask")
        truth = as_labels(mask_scan.data, lossy=formats.is_lossy(item.mask), rgb=mask_scan.rgb) != 0
        shape = tuple(scan.data.shape[: len(scan.spacing)])
        if truth.shape != shape:
            raise ItemError(f"mask {item.mask_source} has shape {truth.shape}, image {item.source} has {shape}")
    return Sample(item.name, scan.data, truth, tuple(scan.spacing), scan.rgb, scan.spacing_known, scan.metadata)


def batch_key(sample: Sample) -> tuple | None:
    """Samples with equal keys can share a forward pass: 2D, same shape and channel layout.
    None for volumes (they are batched slice-wise by :func:`napari_segloss.inference.predict`)."""
    if len(sample.spacing) != 2:
        return None
    return sample.image.shape


def chunked(samples: Iterable[Sample | Failure], max_batch: int | None = None) -> Iterator[list[Sample] | Failure]:
    """Group consecutive 2D samples of one :func:`batch_key` into lists of at most the batch size
    :func:`napari_segloss.inference.batch_size_for` gives for their shape (or ``max_batch``).

    Volumes come alone; failures are passed through in order.
    """
    current: list[Sample] = []
    for sample in samples:
        if isinstance(sample, Failure):
            if current:
                yield current
                current = []
            yield sample
            continue
        key = batch_key(sample)
        if current and (key is None or key != batch_key(current[0])):
            yield current
            current = []
        current.append(sample)
        limit = 1 if key is None else (max_batch or batch_size_for(*sample.spatial_shape))
        if len(current) >= limit:
            yield current
            current = []
    if current:
        yield current
