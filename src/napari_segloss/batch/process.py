"""The per-batch work function: every checkpoint over a few samples, with metrics and renderings.

:func:`process_chunk` is what the runner calls locally and what dask workers run; it is a
module-level function of picklable arguments. Checkpoints are named by path and loaded once per
chunk as a :class:`~napari_segloss.inference.Segmenter` (the checkpoint and CPU-graph caches are
per process, so each worker process reads each checkpoint once, however many chunks it runs). 2D
samples of equal shape share forward passes; volumes go through :func:`napari_segloss.inference.predict` (slice batches). A sample or
checkpoint that fails (any exception, ``BaseException`` panics of native code included, but not
:data:`~napari_segloss.batch.errors.FATAL` ones) is reported in :attr:`ItemOutput.errors`; the
others go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_segloss import metrics, overlays
from napari_segloss.batch.encode import png_bytes, thumbnail_png, tiff_bytes
from napari_segloss.batch.errors import FATAL, describe
from napari_segloss.batch.samples import Sample
from napari_segloss.derived import Derived, derive
from napari_segloss.inference import InferenceCancelled, Segmenter, predict, predict_many
from napari_segloss.io.seg import SegmentResult, seg_bytes
from napari_segloss.spacing import known_spacing, spacing_text

#: the outputs written per sample and checkpoint (the difference overlay needs ground truth)
OUTPUT_KINDS = ("pred_mask", "heatmap", "contours", "difference")
#: the columns of a metrics.csv row before the metrics (``metrics.METRIC_KEYS``)
ROW_COLUMNS = ("image", "checkpoint", "loss", "family", "has_truth", "shape", "spacing_mm", "scaling", "threshold")


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint as the workers see it: ``path`` of its card plus what the report shows."""

    name: str
    loss: str
    family: str
    path: str
    weights_sha256: str = ""


@dataclass(frozen=True)
class Job:
    """Settings shared by every chunk: checkpoints, device, mask ``threshold`` in [0, 1],
    NSD ``tolerance_mm``, the thumbnail size in pixels and whether each image is brought to the
    checkpoint's training scale (``predict(resample=True)``, the default: its pixel size when the
    file records one, else its training field of view)."""

    checkpoints: tuple[CheckpointRef, ...]
    device: str = "auto"
    threshold: float = 0.5
    tolerance_mm: float = 1.0
    thumbnail_px: int = 160
    resample: bool = True


@dataclass
class ItemOutput:
    """Results for one sample.

    Attributes:
        name: the item name.
        files: ZIP member name -> encoded PNG/TIFF bytes (``cases/<name>/<checkpoint>_<kind>.png``).
        rows: one metrics.csv row per checkpoint that succeeded.
        thumbnails: checkpoint name -> small PNG (difference overlay, or contours without truth).
        errors: checkpoint name -> reason, for the checkpoints that failed on this sample.
    """

    name: str
    files: dict[str, bytes] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    thumbnails: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def member_name(item: str, checkpoint: str, kind: str, volume: bool) -> str:
    """ZIP member of one output: ``cases/<item>/<checkpoint>_<kind>.png`` (``.tif`` for volumes)."""
    return f"cases/{item}/{checkpoint}_{kind}.{'tif' if volume else 'png'}"


def seg_member_name(item: str, checkpoint: str) -> str:
    """ZIP member of a DICOM item's SEG (series with patient geometry): ``cases/<item>/<checkpoint>_seg.dcm``."""
    return f"cases/{item}/{checkpoint}_seg.dcm"


def _probabilities(
    samples: Sequence[Sample], segmenter: Segmenter, job: Job, cancel: Callable[[], bool] | None
) -> list[np.ndarray | BaseException]:
    """Probabilities of each sample (or the exception that stopped it).

    :func:`~napari_segloss.inference.predict_many` over the samples; when that batch fails (device
    out of memory, one odd image), again one by one so that the error is attributed to its sample.
    Images of unknown pixel size share batches (each is brought to the checkpoint's training field
    of view); with ``job.resample`` an image of known pixel size runs on its own (its spacing
    decides its resampling).
    """
    if job.resample and any(s.spacing_known for s in samples):  # per-image spacing: no shared batch
        return [_one_probability(s, segmenter, job, cancel) for s in samples]
    try:
        return list(predict_many([s.image for s in samples], segmenter, resample=job.resample, cancel=cancel))
    except (InferenceCancelled, *FATAL):
        raise
    except BaseException as exc:  # noqa: BLE001 - one checkpoint or sample failing must not stop the batch
        if len(samples) == 1:
            return [exc]
    return [_one_probability(s, segmenter, job, cancel) for s in samples]


def _one_probability(
    sample: Sample, segmenter: Segmenter, job: Job, cancel: Callable[[], bool] | None
) -> np.ndarray | BaseException:
    """One sample's probabilities, or the exception that stopped it (cancelling still raises)."""
    try:
        spacing = sample.spacing if sample.spacing_known else None
        return predict(sample.image, segmenter, spacing=spacing, resample=job.resample, cancel=cancel).probability
    except (InferenceCancelled, *FATAL):
        raise
    except BaseException as exc:  # noqa: BLE001 - one checkpoint or sample failing must not stop the batch
        return exc


def _metrics_row(sample: Sample, ref: CheckpointRef, segmenter: Segmenter, derived: Derived, job: Job) -> dict[str, Any]:
    spacing = known_spacing(sample.spacing, sample.spacing_known)  # None: sizes in pixels
    in_plane = tuple(sample.spatial_shape[-2:])
    identity = (
        sample.name,
        ref.name,
        ref.loss,
        ref.family,
        sample.truth is not None,
        "x".join(str(n) for n in sample.spatial_shape),
        spacing_text(spacing),
        segmenter.scaling(in_plane, spacing, job.resample).describe(),  # type: ignore[arg-type]
        job.threshold,
    )
    row: dict[str, Any] = dict(zip(ROW_COLUMNS, identity))
    if derived.metrics is not None:
        values = derived.metrics
    else:
        values = {key: math.nan for key in metrics.METRIC_KEYS}
        values["volume_pred"] = metrics.volume(derived.mask != 0, spacing)
    row.update({key: values[key] for key in metrics.METRIC_KEYS})
    return row


def _thumbnail_slice(sample: Sample, mask: np.ndarray) -> int:
    """The slice of a volume with the most ground truth (else prediction) voxels."""
    reference = sample.truth if sample.truth is not None and sample.truth.any() else mask
    return int(np.argmax(reference.reshape(reference.shape[0], -1).sum(axis=1)))


def _outputs(sample: Sample, ref: CheckpointRef, segmenter: Segmenter, probability: np.ndarray, job: Job,
             out: ItemOutput) -> None:
    derived = derive(probability, sample.truth, known_spacing(sample.spacing, sample.spacing_known), job.threshold,
                     tolerance_mm=job.tolerance_mm, outline=False)  # the renderings draw their own outlines
    mask = derived.mask != 0
    volume = mask.ndim == 3
    rendered = {
        "pred_mask": mask,
        "heatmap": overlays.render_heatmap(sample.image, probability),
        "contours": overlays.render_contours(sample.image, mask, sample.truth),
    }
    if derived.difference is not None:
        rendered["difference"] = overlays.render_difference(sample.image, derived.difference)
    files = {
        member_name(sample.name, ref.name, kind, volume): tiff_bytes(array, sample.spacing) if volume else png_bytes(array)
        for kind, array in rendered.items()
    }
    if sample.metadata.get("format") == "dicom" and sample.metadata.get("affine_lps") is not None:
        result = SegmentResult(ref.name, ref.loss, mask, probability, ref.weights_sha256, job.threshold)
        files[seg_member_name(sample.name, ref.name)] = seg_bytes(sample.metadata, [result], where=sample.name)
    row = _metrics_row(sample, ref, segmenter, derived, job)
    preview = rendered["difference" if sample.truth is not None else "contours"]
    if volume:
        preview = preview[_thumbnail_slice(sample, mask)]
    out.files.update(files)
    out.rows.append(row)
    out.thumbnails[ref.name] = thumbnail_png(preview, job.thumbnail_px)


def process_chunk(samples: Sequence[Sample], job: Job, cancel: Callable[[], bool] | None = None) -> list[ItemOutput]:
    """Run every checkpoint of ``job`` over ``samples`` and build each sample's outputs.

    Args:
        samples: 2D samples of one shape (batched together) or a single volume.
        job: checkpoints and settings.
        cancel: checked by ``predict`` between slice batches of a volume (local runs only).
    Returns:
        one :class:`ItemOutput` per sample, in order.
    """
    outputs = [ItemOutput(sample.name) for sample in samples]
    for ref in job.checkpoints:
        try:
            segmenter = Segmenter.load(ref.path, device=job.device)
        except FATAL:
            raise
        except BaseException as exc:  # noqa: BLE001 - a checkpoint that cannot be loaded fails its items only
            for out in outputs:
                out.errors[ref.name] = describe(exc)
            continue
        for sample, probability, out in zip(samples, _probabilities(samples, segmenter, job, cancel), outputs):
            if isinstance(probability, BaseException):
                out.errors[ref.name] = describe(probability)
                continue
            try:
                _outputs(sample, ref, segmenter, probability, job, out)
            except FATAL:
                raise
            except BaseException as exc:  # noqa: BLE001 - a bad sample must not stop the others
                out.errors[ref.name] = describe(exc)
    return outputs
