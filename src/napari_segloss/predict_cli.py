"""``napari-segloss predict`` (parser in :mod:`napari_segloss.cli`): run checkpoints on one scan,
write images and metrics, print a table.

Output folder layout (written into a temporary sibling folder and renamed into place at the
end, so a failed run leaves nothing behind)::

    OUT/metrics.csv, OUT/metrics.json          one row / record per (scan, checkpoint)
    OUT/[<scan>/]<checkpoint>/prediction.png   2D: mask 0/255; heatmap, contours, difference
                                               as RGB renderings (difference only with --mask)
    OUT/[<scan>/]<checkpoint>/prediction.tif   3D: uint8 mask, float32 heatmap, uint8 contour
                                               and difference labels, with the voxel spacing

``<scan>/`` appears only when IMAGE holds several scans (a DICOM folder with several series).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloss import __version__

#: metric columns of the printed table (all of them go to the CSV/JSON files)
TABLE_METRICS = ("dice", "iou", "precision", "recall", "hd95", "assd", "nsd", "volume_pred", "volume_truth")


class PredictError(Exception):
    """A problem reported as one line (the CLI turns it into a non-zero exit)."""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "scan"


def _read(path: str, what: str) -> list:
    from napari_segloss.io import ScanReadError, read_scans

    try:
        return read_scans(path)
    except ScanReadError as exc:
        raise PredictError(f"cannot read {what}: {exc}") from None


def _truth(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean ground truth from a mask file (any non-zero label; JPEG thresholded at half range)."""
    from napari_segloss.io.raster import as_labels

    scans = _read(path, "mask")
    if len(scans) != 1:
        raise PredictError(f"mask {path} holds {len(scans)} scans; expected one")
    scan = scans[0]
    labels = as_labels(scan.data, rgb=scan.rgb, lossy=Path(path).suffix.lower() in (".jpg", ".jpeg"))
    if labels.shape != shape:
        raise PredictError(f"mask shape {labels.shape} does not match image shape {shape}")
    return labels > 0


def _checkpoints(choice: str | None, device: Any) -> list:
    from napari_segloss.checkpoints import CheckpointError, default_checkpoint, list_checkpoints, load

    try:
        if choice is None:
            return [load(default_checkpoint().path, device=device)]
        if choice.lower() == "all":
            infos = list_checkpoints()
            if not infos:
                raise CheckpointError("no checkpoints found (see NAPARI_SEGLOSS_CHECKPOINTS)")
            return [load(info.path, device=device) for info in infos]
        return [load(choice, device=device)]
    except CheckpointError as exc:
        raise PredictError(str(exc)) from None


def _write_outputs(folder: Path, image: np.ndarray, prediction: Any, mask: np.ndarray, truth: np.ndarray | None, spacing: tuple[float, ...]) -> list[Path]:
    """Prediction, heatmap, contour and difference images of one run (PNG 2D, TIFF 3D)."""
    from napari_segloss import overlays
    from napari_segloss.io.writers import write_array, write_rgb_png

    folder.mkdir(parents=True)
    written = []
    if mask.ndim == 2:
        written.append(write_array(folder / "prediction.png", mask))
        written.append(write_rgb_png(folder / "heatmap.png", overlays.render_heatmap(image, prediction.probability)))
        written.append(write_rgb_png(folder / "contours.png", overlays.render_contours(image, mask, truth)))
        if truth is not None:
            diff = overlays.difference_map(mask, truth)
            written.append(write_rgb_png(folder / "difference.png", overlays.render_difference(image, diff)))
        return written
    written.append(write_array(folder / "prediction.tif", mask.astype(np.uint8), spacing=spacing))
    written.append(write_array(folder / "heatmap.tif", overlays.heatmap(prediction.probability), spacing=spacing))
    written.append(write_array(folder / "contours.tif", overlays.contour_labels(mask), spacing=spacing))
    if truth is not None:
        written.append(write_array(folder / "difference.tif", overlays.difference_map(mask, truth), spacing=spacing))
    return written


def _clean(value: Any) -> Any:
    """JSON-ready: NaN/Inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _table(rows: list[dict[str, Any]], columns: list[str], ndim: int) -> str:
    from napari_segloss.metrics import format_value

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if isinstance(value, str):
            return value
        if key == "seconds":
            return f"{value:.2f}"
        if key == "foreground_pct":
            return f"{value:.2f} %"
        return format_value(key, value, ndim=ndim)

    cells = [[cell(row, key) for key in columns] for row in rows]
    widths = [max(len(key), *(len(line[i]) for line in cells)) for i, key in enumerate(columns)]
    lines = ["  ".join(key.ljust(w) for key, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(text.ljust(w) for text, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder to ``out``, replacing an old one only at the last step."""
    backup = out.parent / f".{out.name}.old-{secrets.token_hex(4)}" if out.exists() else None
    if backup is not None:
        os.replace(out, backup)
    os.replace(tmp, out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """Handler of ``napari-segloss predict``; raises :class:`PredictError` for user errors."""
    from tqdm import tqdm

    from napari_segloss import metrics
    from napari_segloss.inference import predict
    from napari_segloss.models import resolve_device

    image_path = Path(args.image)
    out = Path(args.out) if args.out else Path.cwd() / f"{_safe_name(image_path.stem)}_segloss"
    if out.exists() and not out.is_dir():
        raise PredictError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise PredictError(f"output folder {out} is not empty; pass --overwrite to replace it")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise PredictError(str(exc)) from None

    scans = [s for s in _read(args.image, "image") if s.kind == "image"]
    if not scans:
        raise PredictError(f"{args.image} holds only masks, no image to segment")
    if args.mask and len(scans) > 1:
        raise PredictError(f"{args.image} holds {len(scans)} scans; --mask needs exactly one")
    spatial = [s.data.shape[: len(s.spacing)] for s in scans]
    truth = _truth(args.mask, spatial[0]) if args.mask else None
    loaded = _checkpoints(args.checkpoint, device)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()  # ordinary permissions (umask), unlike tempfile.mkdtemp's 0700
    rows, records = [], []
    total = sum(len(loaded) * (shape[0] if len(shape) == 3 else 1) for shape in spatial)
    try:
        with tqdm(total=total, unit="slice", disable=None, file=sys.stderr, leave=False) as bar:
            for scan, shape in zip(scans, spatial):
                base = tmp / _safe_name(scan.name) if len(scans) > 1 else tmp
                for checkpoint in loaded:
                    bar.set_description(checkpoint.card.name)
                    done = [0]

                    def step(count: int, _total: int, done: list[int] = done) -> None:
                        bar.update(count - done[0])
                        done[0] = count

                    try:
                        prediction = predict(scan.data, checkpoint, device=device, spacing=scan.spacing,
                                             resample=args.resample, progress=step)
                    except ValueError as exc:
                        raise PredictError(f"{scan.name}: {exc}") from None
                    mask = prediction.mask(args.threshold)
                    files = _write_outputs(base / checkpoint.card.name, scan.data, prediction, mask, truth, scan.spacing)
                    row: dict[str, Any] = {"scan": scan.name, "checkpoint": checkpoint.card.name, "loss": checkpoint.card.loss, "family": checkpoint.info.family}
                    if truth is not None:
                        row.update(metrics.compute(mask, truth, scan.spacing))
                    else:
                        row["foreground_pct"] = 100.0 * float(mask.mean())
                        row["volume_pred"] = float(mask.sum()) * math.prod(scan.spacing)
                    row["seconds"] = prediction.metadata["seconds"]
                    rows.append(row)
                    records.append({**_clean(row), "metadata": prediction.metadata, "files": [str(p.relative_to(tmp)) for p in files]})
        if truth is not None:  # best first; NaN (empty truth and prediction) last
            order = sorted(range(len(rows)), key=lambda i: math.inf if math.isnan(rows[i]["dice"]) else -rows[i]["dice"])
            rows, records = [rows[i] for i in order], [records[i] for i in order]
        _write_reports(tmp, rows, records, args, scans, spatial, device)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if truth is not None:
        columns = ["checkpoint", "loss", *TABLE_METRICS, "seconds"]
    else:
        columns = ["checkpoint", "loss", "foreground_pct", "volume_pred", "seconds"]
    if len(scans) > 1:
        columns.insert(0, "scan")
    print(_table(rows, columns, len(spatial[0])))
    print(f"wrote {out}")
    return 0


def _write_reports(tmp: Path, rows: list[dict], records: list[dict], args: argparse.Namespace, scans: list, spatial: list, device: Any) -> None:
    from napari_segloss.io.writers import write_csv

    write_csv(tmp / "metrics.csv", rows)
    summary = {
        "napari_segloss_version": __version__,
        "image": str(args.image),
        "mask": args.mask,
        "threshold": args.threshold,
        "resample": args.resample,
        "device": str(device),
        "scans": [{"name": s.name, "shape": list(shape), "spacing_mm": list(s.spacing)} for s, shape in zip(scans, spatial)],
        "results": records,
    }
    (tmp / "metrics.json").write_text(json.dumps(_clean(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")
