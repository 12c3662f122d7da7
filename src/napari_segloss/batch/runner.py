"""Run checkpoints over a folder or ZIP of scans and write one result ZIP: :func:`run_batch`.

The result ZIP (published by :mod:`napari_segloss.outputs`: written to a temporary file beside
``out`` and renamed into place when complete, so ``out`` never holds a partial archive;
``overwrite`` replaces only a previous result ZIP, and never the input) contains:

* ``cases/<item>/<checkpoint>_{pred_mask,heatmap,contours,difference}.png`` (``.tif`` for
  volumes; ``difference`` only with ground truth);
* ``metrics.csv``: one row per image x checkpoint, every key of ``metrics.METRIC_KEYS``;
* ``summary.csv``: per checkpoint mean, std, median and count of each metric;
* ``manifest.csv``: every input file with its role, status (paired, unpaired, skipped, failed)
  and the reason (one row per item: two series of one folder are two rows, a processed file and
  a refused duplicate of its name are two rows);
* ``run.json``: what was run (checkpoints with sha256 and the number of images each ran on,
  device, threshold, version, counts);
* ``report.html``: self-contained (summary table, Dice box plot, thumbnail grid, manifest);
* ``report.pdf``: the same summary, box plot and thumbnails for printing (:mod:`~napari_segloss.batch.report_pdf`).

Images are read, processed and written one batch at a time (memory bounded by the batches in
flight); a failing file (any exception but :data:`~napari_segloss.batch.errors.FATAL` ones) is
recorded in the manifest and the run goes on. Undecodable bytes in file names are written as
``\\xNN`` in member names and tables (:func:`napari_segloss.outputs.printable`).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from napari_segloss import __version__, outputs
from napari_segloss.batch import report
from napari_segloss.batch.archive import ArchiveError, safe_extract
from napari_segloss.batch.pairing import Discovery, Entry, Item, discover
from napari_segloss.batch.errors import FATAL, BatchCancelled, BatchCheckpointError, BatchError, BatchInputError, describe
from napari_segloss.batch.executors import run_chunks
from napari_segloss.batch.process import OUTPUT_KINDS, ROW_COLUMNS, CheckpointRef, ItemOutput, Job, member_name
from napari_segloss.batch.report_pdf import render_pdf
from napari_segloss.batch.samples import Failure, Sample, chunked, read_sample
from napari_segloss.jsonable import jsonable
from napari_segloss.metrics import METRIC_KEYS
from napari_segloss.models import resolve_device

#: cases shown in the report's thumbnail grid (the lowest Dice first)
MAX_THUMBNAILS = 48


@dataclass(frozen=True)
class BatchProgress:
    """Progress of a run: ``done`` of ``total`` items (``failed`` among them), seconds
    ``elapsed`` and the estimated seconds left (``eta_s``, None before the first item), and the
    ``current`` item name."""

    done: int
    total: int
    failed: int
    elapsed_s: float
    eta_s: float | None
    current: str = ""

    @property
    def fraction(self) -> float:
        """``done / total`` in [0, 1]."""
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class Case:
    """One image x checkpoint result, for inspection: ``item`` name, ``checkpoint``, ``dice``,
    the input-relative ``source`` / ``mask_source`` and the ZIP ``members`` by output kind."""

    item: str
    checkpoint: str
    dice: float
    source: str
    mask_source: str | None
    members: dict[str, str]


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes:
        out: the result ZIP. input: the input folder or ZIP.
        checkpoints: the checkpoints run. items: the processed items (discovery order).
        rows: metrics.csv rows. summary: summary.csv rows. entries: the manifest.
        failed: items with no output at all. seconds: wall time.
        volumes: names of the items that are volumes.
    """

    out: Path
    input: Path
    checkpoints: tuple[CheckpointRef, ...]
    items: list[Item]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    entries: list[Entry]
    failed: int
    seconds: float
    volumes: set[str] = field(default_factory=set)

    @property
    def idle(self) -> list[str]:
        """Names of the requested checkpoints that produced a result on no image."""
        ran = {row["checkpoint"] for row in self.rows}
        return [ref.name for ref in self.checkpoints if ref.name not in ran]

    def worst(self, n: int = 5) -> list[Case]:
        """The ``n`` image x checkpoint results with the lowest Dice (defined Dice only)."""
        by_name = {item.name: item for item in self.items}
        scored = [r for r in self.rows if r["has_truth"] and not math.isnan(r["dice"])]
        scored.sort(key=lambda r: (r["dice"], r["image"], r["checkpoint"]))
        cases = []
        for row in scored[:n]:
            item = by_name[row["image"]]
            volume = item.name in self.volumes
            members = {k: member_name(item.name, row["checkpoint"], k, volume) for k in OUTPUT_KINDS}
            cases.append(Case(item.name, row["checkpoint"], row["dice"], item.source, item.mask_source, members))
        return cases


def resolve_checkpoints(names: Sequence[str]) -> tuple[CheckpointRef, ...]:
    """Checkpoints by exact registry name (as ``predict`` takes them), ``"all"`` (every registered
    one) or card/weights path. Raises :class:`BatchCheckpointError` for unknown names (suggesting
    the name that differs only in case) or when none is left."""
    from napari_segloss.checkpoints import CheckpointError, find, list_checkpoints, load

    registry = list_checkpoints()
    chosen = []
    for name in names:
        if name.lower() == "all":
            chosen.extend(registry)
            continue
        path = Path(name).expanduser()
        try:
            chosen.append(load(path, device="cpu").info if path.is_file() else find(name))
        except CheckpointError as exc:
            raise BatchCheckpointError(str(exc) if path.is_file() else f"{exc} (or 'all', or a path)") from None
    refs: dict[str, CheckpointRef] = {}
    for info in chosen:
        ref = CheckpointRef(info.name, info.loss, info.family, str(info.path), info.card.weights_sha256)
        if info.name in refs and refs[info.name].path != ref.path:
            raise BatchCheckpointError(f"two checkpoints are named {info.name!r}: {refs[info.name].path} and {ref.path}")
        refs[info.name] = ref
    if not refs:
        raise BatchCheckpointError("no checkpoints to run (the registry is empty; pass a checkpoint path)")
    return tuple(refs.values())


def _check_options(out: Path, threshold: float, workers: int) -> None:
    if out.suffix.lower() != ".zip":
        raise BatchError(f"{outputs.printable(str(out))}: the output must be a .zip file")
    if not 0.0 <= threshold <= 1.0:
        raise BatchError(f"threshold must be in [0, 1], got {threshold}")
    if workers < 1:
        raise BatchError(f"workers must be at least 1, got {workers}")


def _open_input(source: Path, workdir: Callable[[], Path]) -> Discovery:
    """Discover the items of a folder, or of a ZIP extracted safely into ``workdir()``."""
    shown = outputs.printable(str(source))
    try:
        mode = os.stat(source).st_mode
    except OSError as exc:
        raise BatchInputError(f"{shown}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        return _printable(discover(source))
    if not stat.S_ISREG(mode):  # never open a FIFO or a device: reading it may block forever
        raise BatchInputError(f"{shown}: not a regular file or folder; refused")
    try:
        is_zip = zipfile.is_zipfile(source)
    except OSError as exc:
        raise BatchInputError(f"{shown}: {exc.strerror or exc}") from None
    if is_zip:
        root = workdir()
        try:
            extraction = safe_extract(source, root)
        except ArchiveError as exc:
            raise BatchInputError(str(exc)) from None
        found = discover(root)
        refused = [Entry(r.name, "other", "skipped", reason=f"refused: {r.reason}") for r in extraction.refused]
        found.entries = sorted(found.entries + refused, key=lambda e: e.path)
        return _printable(found)
    raise BatchInputError(f"{shown}: expected a folder or a ZIP file")


def _printable(found: Discovery) -> Discovery:
    """``found`` with :func:`~napari_segloss.outputs.printable` names, paths and reasons; item
    names stay distinct, also case-insensitively (``A`` and ``a`` give ``A`` and ``a+``)."""
    show = outputs.printable
    renamed: dict[str, str] = {}
    taken: set[str] = set()
    items = []
    for item in found.items:
        name = show(item.name)
        while name.casefold() in taken:
            name += "+"
        taken.add(name.casefold())
        renamed[item.name] = name
        items.append(dataclasses.replace(item, name=name, source=show(item.source),
                                         mask_source=show(item.mask_source) if item.mask_source else None))
    entries = [dataclasses.replace(e, path=show(e.path), item=renamed.get(e.item, e.item), partner=show(e.partner),
                                   reason=show(e.reason)) for e in found.entries]
    return Discovery(found.root, items, entries)


def _samples(found: Discovery) -> Iterator[Sample | Failure]:
    """Read the items one by one; errors become :class:`Failure` with input-relative paths."""
    prefix = f"{found.root}{os.sep}"
    for item in found.items:
        try:
            sample = read_sample(item)
        except FATAL:
            raise
        except BaseException as exc:  # noqa: BLE001 - any unreadable file (or decoder panic) is reported, the rest goes on
            reason = str(exc) if isinstance(exc, ValueError) else describe(exc)
            yield Failure(item, reason.replace(prefix, ""))
            continue
        yield sample


class _Thumbnails:
    """The ``limit`` items with the lowest Dice (worst checkpoint), kept while streaming."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[tuple[float, int, str, dict[str, bytes], dict[str, float]]] = []
        self._count = 0

    def add(self, output: ItemOutput) -> None:
        if not output.thumbnails or self.limit <= 0:
            return
        dice = {r["checkpoint"]: float(r["dice"]) for r in output.rows}
        defined = [d for d in dice.values() if not math.isnan(d)]
        score = min(defined) if defined else math.inf
        self._count += 1
        entry = (-score, -self._count, output.name, output.thumbnails, dice)
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heappushpop(self._heap, entry)

    def ordered(self) -> list[tuple[str, dict[str, bytes], dict[str, float]]]:
        return [(name, pngs, dice) for _, _, name, pngs, dice in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


def run_batch(
    source: str | os.PathLike,
    checkpoints: Sequence[str] | str,
    out: str | os.PathLike,
    *,
    device: str = "auto",
    threshold: float = 0.5,
    workers: int = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    tolerance_mm: float = 1.0,
    resample: bool = True,
    max_thumbnails: int = MAX_THUMBNAILS,
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> BatchResult:
    """Run ``checkpoints`` over every image in ``source`` and write the result ZIP ``out``.

    Args:
        source: a folder or a ZIP of images and masks (see :mod:`napari_segloss.batch.pairing`).
        checkpoints: registry names, paths, or ``"all"``.
        out: the ``.zip`` to write (atomically).
        device: ``auto | cpu | cuda[:i] | mps`` (on dask, the workers' device).
        threshold: probability >= threshold is foreground.
        workers: local threads processing batches (ignored with ``scheduler``).
        scheduler: address of a dask.distributed scheduler; the workers need the checkpoint files
            at the same paths.
        overwrite: replace ``out`` when it is a previous result ZIP of this function (nothing else).
        tolerance_mm: NSD tolerance.
        resample: run each image at the checkpoint's training scale (default; False: the file's
            grid): its training pixel size when the file records one, else its training field of
            view (see :func:`napari_segloss.inference.predict`).
        max_thumbnails: images in the report's thumbnail grid.
        progress: called with a :class:`BatchProgress` at the start and after each item.
        cancel: polled between batches; True stops the run with :class:`BatchCancelled`.
    Raises:
        OutputError: ``out`` exists (without ``overwrite``, or is not a previous result), is or lies
            inside ``source``, or cannot be written (:mod:`napari_segloss.outputs`).
        BatchInputError: missing or unreadable input, or no images in it.
        BatchCheckpointError: unknown or invalid checkpoint.
        BatchError: bad option (the base class of both above).
        BatchCancelled: ``cancel()`` returned True (nothing is written).
    """
    start = time.perf_counter()
    source, out = Path(source), Path(out)
    _check_options(out, threshold, workers)
    target = outputs.claim(out, folder=False, inputs=[source], overwrite=overwrite)
    if not scheduler:  # a cluster's workers may have devices this machine lacks
        try:
            resolve_device(device)
        except ValueError as exc:
            raise BatchError(str(exc)) from None
    refs = resolve_checkpoints([checkpoints] if isinstance(checkpoints, str) else checkpoints)
    job = Job(refs, device=device, threshold=float(threshold), tolerance_mm=float(tolerance_mm), resample=bool(resample))
    scratch: list[Path] = []

    def workdir() -> Path:
        scratch.append(Path(tempfile.mkdtemp(prefix="napari-segloss-batch-")))
        return scratch[-1]

    try:
        found = _open_input(source, workdir)
        if not found.items:
            raise BatchInputError(f"{outputs.printable(str(source))}: no images found ({len(found.entries)} file(s) skipped)")
        with outputs.writing(target) as tmp, zipfile.ZipFile(tmp, "x", compression=zipfile.ZIP_DEFLATED) as archive:
            result = _stream(found, job, archive, source, target.path, workers, scheduler, max_thumbnails, progress,
                             cancel, start)
        result.seconds = time.perf_counter() - start
        return result
    finally:
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)


def _stream(
    found: Discovery,
    job: Job,
    archive: zipfile.ZipFile,
    source: Path,
    out: Path,
    workers: int,
    scheduler: str | None,
    max_thumbnails: int,
    progress: Callable[[BatchProgress], None] | None,
    cancel: Callable[[], bool] | None,
    start: float,
) -> BatchResult:
    """Process every item, streaming outputs into ``archive``; then write the tables and report."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    order = {item.name: i for i, item in enumerate(found.items)}
    entries = {(e.path, e.item): e for e in found.entries}  # one row per item, duplicates of a path kept
    by_name = {item.name: item for item in found.items}
    rows: list[dict[str, Any]] = []
    thumbs = _Thumbnails(max_thumbnails)
    volumes: set[str] = set()
    total, done, failed = len(found.items), 0, 0

    def report_progress(current: str) -> None:
        if progress is None:
            return
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done) if done else None
        progress(BatchProgress(done, total, failed, elapsed, eta, current))

    def fail(item: Item, reason: str) -> None:
        nonlocal failed
        failed += 1
        key = (item.manifest_path, item.name)
        entries[key] = dataclasses.replace(entries[key], status="failed", reason=outputs.printable(reason))

    report_progress("")
    for chunk, produced in run_chunks(chunked(_samples(found)), job, workers=workers, scheduler=scheduler, cancel=cancel):
        if isinstance(chunk, Failure):
            fail(chunk.item, chunk.reason)
            done += 1
            report_progress(chunk.item.name)
            continue
        if isinstance(produced, BaseException):
            for sample in chunk:
                fail(by_name[sample.name], describe(produced))
        else:
            for sample, output in zip(chunk, produced):
                if len(sample.spacing) == 3:
                    volumes.add(sample.name)
                for name, payload in output.files.items():
                    archive.writestr(name, payload, compress_type=zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED)
                rows.extend(output.rows)
                thumbs.add(output)
                if output.errors:
                    reason = outputs.printable("; ".join(f"{ckpt}: {msg}" for ckpt, msg in output.errors.items()))
                    item = by_name[sample.name]
                    if output.rows:
                        old = entries[(item.manifest_path, item.name)]
                        entries[(item.manifest_path, item.name)] = dataclasses.replace(old, reason="; ".join(filter(None, [old.reason, reason])))
                    else:
                        fail(item, reason)
        done += len(chunk)
        report_progress(chunk[-1].name)
    if cancel is not None and cancel():
        raise BatchCancelled("cancelled")
    rank = {ref.name: i for i, ref in enumerate(job.checkpoints)}
    rows.sort(key=lambda r: (order[r["image"]], rank[r["checkpoint"]]))
    summary = report.summarize(rows, job.checkpoints)
    manifest = sorted(entries.values(), key=lambda e: (e.path, e.item))
    ran_on: dict[str, int] = {}
    for row in rows:
        ran_on[row["checkpoint"]] = ran_on.get(row["checkpoint"], 0) + 1
    run = {
        "napari_segloss_version": __version__,
        "started": started,
        "seconds": round(time.perf_counter() - start, 2),
        "input": outputs.printable(source.name),
        "images": total,
        "failed": failed,
        "device": job.device,
        "threshold": job.threshold,
        "nsd_tolerance_mm": job.tolerance_mm,
        "checkpoints": [dataclasses.asdict(ref) | {"path": Path(ref.path).name, "images": ran_on.get(ref.name, 0)}
                        for ref in job.checkpoints],
    }
    shown = {k: v for k, v in run.items() if k != "checkpoints"}
    shown["checkpoints"] = ", ".join(f"{r.name} ({r.loss}, sha256 {r.weights_sha256[:12]})" for r in job.checkpoints)
    archive.writestr("metrics.csv", report.csv_bytes(rows, [*ROW_COLUMNS, *METRIC_KEYS]))
    archive.writestr("summary.csv", report.csv_bytes(summary))
    archive.writestr("manifest.csv", report.csv_bytes(report.manifest_rows(manifest), ["path", "role", "status", "item", "partner", "reason"]))
    archive.writestr(outputs.RUN_INFO, json.dumps(jsonable(run, "run"), indent=2, allow_nan=False))
    boxplot = report.dice_boxplot_png(rows, job.checkpoints)
    page = report.render_html(
        summary=summary,
        run=shown,
        entries=manifest,
        boxplot=boxplot,
        thumbnails=thumbs.ordered(),
        checkpoints=job.checkpoints,
    )
    archive.writestr("report.html", page)
    pdf = render_pdf(summary=summary, run=shown, boxplot=boxplot, thumbnails=thumbs.ordered(), checkpoints=job.checkpoints)
    archive.writestr("report.pdf", pdf, compress_type=zipfile.ZIP_STORED)
    return BatchResult(
        out=out, input=source, checkpoints=job.checkpoints, items=found.items, rows=rows, summary=summary,
        entries=manifest, failed=failed, seconds=0.0, volumes=volumes,
    )

