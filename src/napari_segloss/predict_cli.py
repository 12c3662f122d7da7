"""``napari-segloss predict`` (parser in :mod:`napari_segloss.cli`): run checkpoints on one scan,
write images and metrics, print a table.

Output folder layout (published by :mod:`napari_segloss.outputs`: written into a temporary
sibling folder and renamed into place at the end, so a failed run leaves nothing behind, and
``--overwrite`` replaces only a previous result of this command)::

    OUT/metrics.csv, OUT/metrics.json          one row / record per (scan, checkpoint)
    OUT/[<scan>/]<checkpoint>/prediction.png   2D: mask 0/255; heatmap, contours, difference
                                               as RGB renderings (difference only with --mask)
    OUT/[<scan>/]<checkpoint>/prediction.tif   3D: uint8 mask, float32 heatmap, uint8 contour
                                               and difference labels, with the voxel spacing
    OUT/[<scan>/]<checkpoint>/prediction.seg.dcm | prediction.nii.gz
                                               instead of prediction.png/.tif with --format
                                               dicom-seg | nifti (:mod:`napari_segloss.io.results`)
    OUT/[<scan>/]<checkpoint>/probability.seg.dcm
                                               --format dicom-seg --probability-seg: the
                                               probabilities as a FRACTIONAL SEG
    OUT/[<scan>/]comparison.seg.dcm            --format dicom-seg with several checkpoints:
                                               one BINARY SEG, one segment per checkpoint

``<scan>/`` appears only when IMAGE holds several scans (a DICOM folder with several series);
scans whose names sanitise alike get distinct folders (``T1_post``, ``T1_post_2``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_segloss import __version__, outputs
from napari_segloss.jsonable import jsonable
from napari_segloss.spacing import known_spacing, spacing_text
from napari_segloss.outputs import printable

if TYPE_CHECKING:
    from napari_segloss.derived import Derived


class PredictError(Exception):
    """A problem reported as one line (the CLI turns it into a non-zero exit)."""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "scan"


def _folder_names(names: list[str]) -> list[str]:
    """One distinct folder name per scan (case-insensitively: ``T1 post`` and ``T1_post`` give
    ``T1_post`` and ``T1_post_2``)."""
    taken: set[str] = set()
    folders = []
    for name in names:
        base = candidate = _safe_name(name)
        number = 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{base}_{number}"
        taken.add(candidate.casefold())
        folders.append(candidate)
    return folders


def _read(path: str, what: str) -> list:
    """The scans of ``path``; raises ``ScanReadError`` naming ``what`` (image or mask)."""
    from napari_segloss.io import ScanReadError, read_scans

    try:
        return read_scans(path)
    except ScanReadError as exc:
        raise ScanReadError(f"cannot read {what}: {exc}") from None


def _truth(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean ground truth from a mask file (any non-zero label; JPEG thresholded at half range)."""
    from napari_segloss.io import formats
    from napari_segloss.io.raster import as_labels

    scans = _read(path, "mask")
    if len(scans) != 1:
        raise PredictError(f"mask {path} holds {len(scans)} scans; expected one")
    scan = scans[0]
    labels = as_labels(scan.data, rgb=scan.rgb, lossy=formats.is_lossy(path))
    if labels.shape != shape:
        raise PredictError(f"mask shape {labels.shape} does not match image shape {shape}")
    return labels > 0


def _checkpoints(choice: str | None, device: Any) -> list:
    """The checkpoints ready to run (:class:`~napari_segloss.inference.Segmenter`, with ``card``
    and ``info``); raises ``CheckpointError`` for a missing or invalid one."""
    from napari_segloss.checkpoints import CheckpointError, default_checkpoint, list_checkpoints
    from napari_segloss.inference import Segmenter

    if choice is None:
        return [Segmenter.load(default_checkpoint().path, device=device)]
    if choice.lower() == "all":
        infos = list_checkpoints()
        if not infos:
            raise CheckpointError("no checkpoints found (see NAPARI_SEGLOSS_CHECKPOINTS)")
        return [Segmenter.load(info.path, device=device) for info in infos]
    return [Segmenter.load(choice, device=device)]


def _write_outputs(folder: Path, image: np.ndarray, prediction: Any, derived: Derived, truth: np.ndarray | None,
                   spacing: tuple[float, ...], result: Any = None, fmt: str = "png", metadata: Any = None,
                   probability_seg: bool = False) -> list[Path]:
    """Prediction, heatmap, contour and difference images of one run (PNG 2D, TIFF 3D; ``derived``:
    its :class:`~napari_segloss.derived.Derived` arrays); with ``fmt`` ``dicom-seg`` or ``nifti``
    the prediction is ``prediction.seg.dcm`` / ``.nii.gz`` (``result``: the
    :class:`~napari_segloss.io.seg.SegmentResult`, ``metadata``: the scan's), and with
    ``probability_seg`` (DICOM SEG only) the probabilities also ``probability.seg.dcm``."""
    from napari_segloss import overlays
    from napari_segloss.io.results import write_mask
    from napari_segloss.io.seg import write_seg
    from napari_segloss.io.writers import write_array, write_rgb_png

    folder.mkdir(parents=True)
    written = []
    mask = derived.mask != 0
    if fmt != "png":
        written.append(write_mask(folder / "prediction", fmt, metadata, spacing, result))
    if probability_seg:
        written.append(write_seg(folder / "probability.seg.dcm", metadata, [result], fractional=True))
    if mask.ndim == 2:
        if fmt == "png":
            written.append(write_array(folder / "prediction.png", mask))
        written.append(write_rgb_png(folder / "heatmap.png", overlays.render_heatmap(image, prediction.probability)))
        written.append(write_rgb_png(folder / "contours.png", overlays.render_contours(image, mask, truth)))
        if derived.difference is not None:
            written.append(write_rgb_png(folder / "difference.png", overlays.render_difference(image, derived.difference)))
        return written
    if fmt == "png":
        written.append(write_array(folder / "prediction.tif", derived.mask, spacing=spacing))
    written.append(write_array(folder / "heatmap.tif", overlays.heatmap(prediction.probability), spacing=spacing))
    written.append(write_array(folder / "contours.tif", derived.contour, spacing=spacing))
    if derived.difference is not None:
        written.append(write_array(folder / "difference.tif", derived.difference, spacing=spacing))
    return written


def _table(rows: list[dict[str, Any]], columns: list[str], ndim: int, spacing_known: bool) -> str:
    from napari_segloss.metrics import format_value

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if isinstance(value, str):
            return value
        if key == "seconds":
            return f"{value:.2f}"
        if key == "foreground_pct":
            return f"{value:.2f} %"
        return format_value(key, value, ndim=ndim, spacing_known=spacing_known)

    cells = [[cell(row, key) for key in columns] for row in rows]
    widths = [max(len(key), *(len(line[i]) for line in cells)) for i, key in enumerate(columns)]
    lines = ["  ".join(key.ljust(w) for key, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(text.ljust(w) for text, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``napari-segloss predict``.

    Raises :class:`PredictError` for bad options, ``ScanReadError`` for unreadable inputs,
    ``CheckpointError`` for a missing or invalid checkpoint and
    :class:`~napari_segloss.outputs.OutputError` when the output may not or cannot be written.
    """
    from tqdm import tqdm

    from napari_segloss import metrics
    from napari_segloss.derived import derive
    from napari_segloss.io.results import COMPARISON_SEG, SegmentResult, check_format
    from napari_segloss.io.seg import write_seg
    from napari_segloss.inference import predict
    from napari_segloss.models import resolve_device

    image_path = Path(args.image)
    out = Path(args.out) if args.out else Path.cwd() / f"{_safe_name(image_path.stem)}_segloss"
    inputs = [args.image] + ([args.mask] if args.mask else [])
    target = outputs.claim(out, folder=True, inputs=inputs, overwrite=args.overwrite)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise PredictError(str(exc)) from None

    scans = [s for s in _read(args.image, "image") if s.kind == "image"]
    if not scans:
        raise PredictError(f"{printable(args.image)} holds only masks, no image to segment")
    if args.mask and len(scans) > 1:
        raise PredictError(f"{printable(args.image)} holds {len(scans)} scans; --mask needs exactly one")
    names = [printable(s.name) for s in scans]
    folders = _folder_names(names) if len(scans) > 1 else [""]
    spatial = [s.data.shape[: len(s.spacing)] for s in scans]
    if args.probability_seg and args.format != "dicom-seg":
        raise PredictError(f"--probability-seg writes DICOM SEG files: add --format dicom-seg (got --format {args.format})")
    for scan, name in zip(scans, names):  # before any model runs: DICOM SEG of a PNG, a series without geometry
        try:
            check_format(args.format, scan.metadata, name)
        except ValueError as exc:
            raise PredictError(f"--format {args.format}: {exc}") from None
    truth = _truth(args.mask, spatial[0]) if args.mask else None
    loaded = _checkpoints(args.checkpoint, device)

    rows, records = [], []
    comparisons: dict[str, str] = {}  # scan name -> its comparison SEG (relative path)
    compare = args.format == "dicom-seg" and len(loaded) > 1
    total = sum(len(loaded) * (shape[0] if len(shape) == 3 else 1) for shape in spatial)
    with outputs.writing(target) as tmp:
        with tqdm(total=total, unit="slice", disable=None, file=sys.stderr, leave=False) as bar:
            for scan, name, folder, shape in zip(scans, names, folders, spatial):
                base = tmp / folder
                segments = []  # each checkpoint's mask, for the comparison SEG
                for checkpoint in loaded:
                    bar.set_description(checkpoint.card.name)
                    done = [0]

                    def step(count: int, _total: int, done: list[int] = done) -> None:
                        bar.update(count - done[0])
                        done[0] = count

                    try:
                        prediction = predict(scan.data, checkpoint, device=device,
                                             spacing=known_spacing(scan.spacing, scan.spacing_known),
                                             resample=args.resample, progress=step)
                    except ValueError as exc:
                        raise PredictError(f"{name}: {exc}") from None
                    known = known_spacing(scan.spacing, scan.spacing_known)  # None: sizes in pixels
                    derived = derive(prediction.probability, truth, known, args.threshold,
                                     outline=len(shape) == 3)  # 2D renders draw their own outlines
                    mask = derived.mask != 0
                    card = checkpoint.card
                    result = SegmentResult(card.name, card.loss, mask, prediction.probability, card.weights_sha256, args.threshold)
                    files = _write_outputs(base / card.name, scan.data, prediction, derived, truth, scan.spacing,
                                           result, args.format, scan.metadata, args.probability_seg)
                    if compare:  # the masks only: a volume's probabilities per checkpoint would add up
                        segments.append(dataclasses.replace(result, probability=None))
                    row: dict[str, Any] = {"scan": name, "checkpoint": checkpoint.card.name, "loss": checkpoint.card.loss, "family": checkpoint.info.family}
                    row["spacing_mm"] = spacing_text(known)
                    if derived.metrics is not None:
                        row.update(derived.metrics)
                    else:
                        row["foreground_pct"] = 100.0 * float(mask.mean())
                        row["volume_pred"] = metrics.volume(mask, known)
                    row["seconds"] = prediction.metadata["seconds"]
                    rows.append(row)
                    records.append({**jsonable(row), "metadata": prediction.metadata, "files": [str(p.relative_to(tmp)) for p in files]})
                if compare:
                    comparison = write_seg(base / COMPARISON_SEG, scan.metadata, segments, where=name)
                    comparisons[name] = str(comparison.relative_to(tmp))
        if truth is not None:  # best first; NaN (empty truth and prediction) last
            order = sorted(range(len(rows)), key=lambda i: math.inf if math.isnan(rows[i]["dice"]) else -rows[i]["dice"])
            rows, records = [rows[i] for i in order], [records[i] for i in order]
        _write_reports(tmp, rows, records, args, names, scans, spatial, device, comparisons)

    if truth is not None:
        columns = ["checkpoint", "loss", *metrics.headline_keys(), "volume_pred", "volume_truth", "seconds"]
    else:
        columns = ["checkpoint", "loss", "foreground_pct", "volume_pred", "seconds"]
    if len(scans) > 1:
        columns.insert(0, "scan")
    print(_table(rows, columns, len(spatial[0]), all(s.spacing_known for s in scans)))
    for line in scale_lines(records, with_scan=len(scans) > 1):
        print(line)
    print(f"wrote {printable(str(target.path))}")
    return 0


def scale_lines(records: list[dict[str, Any]], *, with_scan: bool = False) -> list[str]:
    """How the scans were brought to the checkpoints' training scale: ``"scale: <note>"`` when every
    run was scaled alike, else one line per note naming its checkpoints (``scan/checkpoint`` with
    ``with_scan``); the way to switch it off when it was on (``records``: the metrics.json results)."""
    notes: dict[str, list[str]] = {}
    for record in records:
        label = f"{record['scan']}/{record['checkpoint']}" if with_scan else record["checkpoint"]
        notes.setdefault(record["metadata"]["scaling_note"], []).append(label)
    if len(notes) == 1:
        lines = [f"scale: {next(iter(notes))}"]
    else:
        lines = [f"scale ({', '.join(labels)}): {note}" for note, labels in notes.items()]
    if any(record["metadata"]["scaling"] != "none" for record in records):
        lines.append("(--no-resample runs every checkpoint on the scan's own grid)")
    return lines


def _write_reports(tmp: Path, rows: list[dict], records: list[dict], args: argparse.Namespace, names: list[str],
                   scans: list, spatial: list, device: Any, comparisons: dict[str, str]) -> None:
    from napari_segloss.io.writers import write_csv

    write_csv(tmp / "metrics.csv", rows)
    summary = {
        "napari_segloss_version": __version__,
        "image": printable(str(args.image)),
        "mask": printable(args.mask) if args.mask else None,
        "threshold": args.threshold,
        "resample": args.resample,
        "device": str(device),
        "scans": [{"name": n, "shape": list(shape), "spacing_mm": known_spacing(s.spacing, s.spacing_known),
                   **({"comparison_seg": comparisons[n]} if n in comparisons else {})}
                  for n, s, shape in zip(names, scans, spatial)],
        "results": records,
    }
    (tmp / "metrics.json").write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")
