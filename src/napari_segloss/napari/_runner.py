"""Inference off the UI thread: one generator runs a queue of checkpoints and yields progress.

:func:`run_jobs` is a plain generator (tests can iterate it synchronously); the widget runs it
with :func:`napari.qt.threading.create_worker` (see :func:`start`), so each yielded event reaches
the main thread through the worker's ``yielded`` signal and the returned :class:`Outcome` through
``returned``. Only the main-thread handlers touch layers.

:func:`napari_segloss.inference.predict` reports progress through a callback; :func:`_reporting`
turns such a callback API into a generator by running the call in a helper thread and yielding
each report as it arrives. Cancel is cooperative: a :class:`threading.Event` that ``predict``
checks before every batch of slices.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_segloss.checkpoints import CheckpointError, ModelCard, load
from napari_segloss.inference import InferenceCancelled, Prediction, predict
from napari_segloss.models import resolve_device
from napari_segloss.napari._results import Derived, derive


@dataclass(frozen=True)
class Request:
    """One run: an image, optional ground truth and the checkpoints to run on it, in order.

    Attributes:
        image: ``(H, W)``, ``(Z, H, W)`` or either with a trailing RGB(A) axis; any array-like
            (a dask array is computed in the worker).
        truth: bool ground truth of the image's spatial shape, or None.
        spacing: mm per spatial axis.
        checkpoints: registry names or card paths.
        device: ``auto | cpu | cuda[:i] | mps``.
        threshold: probability threshold for the derived arrays.
        resample: run at each checkpoint's training pixel size (``predict(resample=True)``).
    """

    image: Any
    truth: np.ndarray | None
    spacing: tuple[float, ...]
    checkpoints: Sequence[str | os.PathLike]
    device: str
    threshold: float
    resample: bool = False


@dataclass(frozen=True)
class Started:
    """Checkpoint ``index`` of ``count`` is being loaded."""

    index: int
    count: int
    checkpoint: str


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` slices of checkpoint ``index`` are processed."""

    index: int
    count: int
    checkpoint: str
    done: int
    total: int


@dataclass(frozen=True)
class Failed:
    """Checkpoint ``index`` could not be run; ``message`` says why (the queue goes on)."""

    index: int
    count: int
    checkpoint: str
    message: str


@dataclass(frozen=True)
class Finished:
    """Checkpoint ``index`` produced ``prediction``; ``derived`` holds its arrays at the request's
    threshold; ``note`` is a user-facing remark (e.g. the CPU fallback after CUDA ran out of memory)."""

    index: int
    count: int
    checkpoint: str
    card: ModelCard
    prediction: Prediction
    derived: Derived
    note: str = ""


Event = Started | Progress | Failed | Finished


@dataclass(frozen=True)
class Outcome:
    """What the queue did: numbers of finished and failed checkpoints, whether it was cancelled,
    and why nothing could run at all (``error``, e.g. an unavailable device; empty otherwise)."""

    finished: int
    failed: int
    cancelled: bool
    error: str = ""


_DONE = object()


def _reporting(call: Callable[..., Any], **kwargs: Any) -> Generator[tuple[int, int], None, Any]:
    """Run ``call(progress=callback, **kwargs)`` in a helper thread, yielding each ``(done, total)``
    the callback receives; return ``call``'s result or raise its exception."""
    reports: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call(progress=lambda done, total: reports.put((done, total)), **kwargs)
        except BaseException as exc:  # re-raised in the generator's thread below
            outcome["error"] = exc
        finally:
            reports.put(_DONE)

    thread = threading.Thread(target=target, name="napari-segloss-predict", daemon=True)
    thread.start()
    while (report := reports.get()) is not _DONE:
        yield report
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _as_progress(reports: Generator[tuple[int, int], None, Any], index: int, count: int,
                 label: str) -> Generator[Progress, None, Any]:
    """Re-yield ``(done, total)`` reports as :class:`Progress` events; return the reporter's value."""
    while True:
        try:
            done, total = next(reports)
        except StopIteration as stop:
            return stop.value
        yield Progress(index, count, label, done, total)


def _predict(request: Request, image: np.ndarray, checkpoint: str | os.PathLike, device: torch.device,
             cancel: threading.Event, index: int, count: int) -> Generator[Progress, None, tuple[Prediction, ModelCard, str]]:
    """Load and run one checkpoint, yielding its progress; on CUDA out-of-memory run on the CPU.

    Returns ``(prediction, card, note)``; ``note`` tells the user about a CPU fallback.
    """
    label = os.fspath(checkpoint)
    note = ""
    try:
        loaded = load(checkpoint, device=device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        device, note = torch.device("cpu"), f"not enough memory on {device} to load the model: ran on the CPU"
        loaded = load(checkpoint, device=device)
    run = dict(image=image, device=device, spacing=request.spacing, resample=request.resample, cancel=cancel.is_set)
    try:
        prediction = yield from _as_progress(_reporting(predict, checkpoint=loaded, **run), index, count, label)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        note = f"out of memory on {device}: ran on the CPU"
        run["device"] = torch.device("cpu")
        prediction = yield from _as_progress(_reporting(predict, checkpoint=loaded, **run), index, count, label)
    if not note and prediction.metadata.get("device") != str(run["device"]):
        note = f"out of memory on {device}: finished on the CPU"
    return prediction, loaded.card, note


def run_jobs(request: Request, cancel: threading.Event) -> Generator[Event, None, Outcome]:
    """Run ``request.checkpoints`` one at a time on ``request.image``.

    Yields :class:`Started`, then :class:`Progress` per batch of slices, then :class:`Finished`
    (or :class:`Failed`: a checkpoint that cannot be loaded or run is reported and skipped) for
    each checkpoint. Setting ``cancel`` stops before the next batch. An unavailable device
    ends the run at once with :attr:`Outcome.error` set.
    """
    try:
        device = resolve_device(request.device)
    except ValueError as exc:
        return Outcome(0, 0, cancelled=False, error=str(exc))
    image = np.asarray(request.image)
    count = len(request.checkpoints)
    finished = failed = 0
    for index, checkpoint in enumerate(request.checkpoints):
        label = os.fspath(checkpoint)
        if cancel.is_set():
            return Outcome(finished, failed, cancelled=True)
        yield Started(index, count, label)
        try:
            prediction, card, note = yield from _predict(request, image, checkpoint, device, cancel, index, count)
        except InferenceCancelled:
            return Outcome(finished, failed, cancelled=True)
        except MemoryError:
            failed += 1
            yield Failed(index, count, label, "not enough memory for this image on the CPU")
            continue
        except (CheckpointError, ValueError, RuntimeError, OSError) as exc:
            failed += 1
            yield Failed(index, count, label, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        derived = derive(prediction.probability, request.truth, request.spacing, request.threshold)
        finished += 1
        yield Finished(index, count, label, card, prediction, derived, note)
    return Outcome(finished, failed, cancelled=False)


def start(request: Request, cancel: threading.Event, **connect: Callable[..., Any]) -> Any:
    """Start :func:`run_jobs` in a napari thread worker; ``connect`` maps worker signals
    (``yielded``, ``returned``, ``errored``, ``finished``) to main-thread handlers. Returns the worker.
    Connect ``errored``: without a handler the worker re-raises errors in the main thread."""
    from napari.qt.threading import create_worker

    return create_worker(run_jobs, request, cancel, _start_thread=True, _connect=connect)
