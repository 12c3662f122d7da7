"""Batch mode: every chosen checkpoint over a folder or ZIP of scans, one result ZIP out.

Modules, one job each: :mod:`~napari_segloss.batch.archive` (safe ZIP extraction),
:mod:`~napari_segloss.batch.pairing` (units, image/mask pairing, manifest),
:mod:`~napari_segloss.batch.samples` (reading items, batching equal shapes),
:mod:`~napari_segloss.batch.process` (the per-batch work function, also run on dask workers),
:mod:`~napari_segloss.batch.encode` (PNG/TIFF bytes), :mod:`~napari_segloss.batch.executors`
(inline, threads, dask.distributed), :mod:`~napari_segloss.batch.report` (summary, CSV, HTML),
:mod:`~napari_segloss.batch.runner` (:func:`run_batch`) and :mod:`~napari_segloss.batch.cases`
(reading one result back for inspection). Headless: no Qt or napari here.
"""

from napari_segloss.batch.archive import ArchiveError, safe_extract
from napari_segloss.batch.cases import CaseData, load_case
from napari_segloss.batch.pairing import Discovery, Entry, Item, discover
from napari_segloss.batch.errors import BatchCancelled, BatchCheckpointError, BatchError, BatchInputError
from napari_segloss.batch.process import CheckpointRef, Job, process_chunk
from napari_segloss.batch.runner import BatchProgress, BatchResult, Case, resolve_checkpoints, run_batch

__all__ = [
    "ArchiveError",
    "BatchCancelled",
    "BatchCheckpointError",
    "BatchError",
    "BatchInputError",
    "BatchProgress",
    "BatchResult",
    "Case",
    "CaseData",
    "CheckpointRef",
    "Discovery",
    "Entry",
    "Item",
    "Job",
    "discover",
    "load_case",
    "process_chunk",
    "resolve_checkpoints",
    "run_batch",
    "safe_extract",
]
