"""Inference for the widget: one call runs a queue of checkpoints and reports events as it goes.

:func:`run_jobs` is a plain function that calls back (tests call it synchronously with a list's
``append``); the widget runs it in one napari thread worker (:class:`~napari_segloss.napari._jobs.Job`),
so each reported event reaches the main thread through a queued signal. It forwards the progress
callback of :func:`napari_segloss.inference.predict` as :class:`Progress` events; cancel is the
callable ``predict`` polls before every batch of slices. The CUDA out-of-memory fallback is
``predict``'s: a run that finished on another device than requested gets a note.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_segloss.checkpoints import CheckpointError, ModelCard
from napari_segloss.inference import InferenceCancelled, Prediction, Segmenter, predict
from napari_segloss.models import resolve_device
from napari_segloss.derived import Derived, derive
from napari_segloss.spacing import layer_spacing


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
        resample: bring the image to each checkpoint's training scale (``predict(resample=True)``).
    """

    image: Any
    truth: np.ndarray | None
    spacing: tuple[float, ...]
    checkpoints: Sequence[str | os.PathLike]
    device: str
    threshold: float
    resample: bool = True


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


def _note(requested: torch.device, prediction: Prediction) -> str:
    """A remark for the user when ``predict`` finished on another device (its out-of-memory fallback)."""
    used = prediction.metadata.get("device")
    if used is None or used == str(requested):
        return ""
    return f"out of memory on {requested}: finished on the {'CPU' if used == 'cpu' else used}"


def run_jobs(request: Request, *, report: Callable[[Event], None], cancel: Callable[[], bool]) -> Outcome:
    """Run ``request.checkpoints`` one at a time on ``request.image``.

    Reports :class:`Started`, then :class:`Progress` per batch of slices, then :class:`Finished`
    (or :class:`Failed`: a checkpoint that cannot be loaded or run is reported and skipped) for
    each checkpoint. ``cancel()`` returning True stops before the next batch. An unavailable
    device ends the run at once with :attr:`Outcome.error` set.
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
        if cancel():
            return Outcome(finished, failed, cancelled=True)
        report(Started(index, count, label))

        def progress(done: int, total: int, index: int = index, label: str = label) -> None:
            report(Progress(index, count, label, done, total))

        try:
            segmenter = Segmenter.load(checkpoint, device=device)  # no torch network built when a CPU graph is cached
            prediction = predict(image, segmenter, device=device, spacing=layer_spacing(request.spacing),
                                 resample=request.resample,
                                 progress=progress, cancel=cancel)
        except InferenceCancelled:
            return Outcome(finished, failed, cancelled=True)
        except MemoryError:
            failed += 1
            report(Failed(index, count, label, "not enough memory for this image on the CPU"))
            continue
        except (CheckpointError, ValueError, RuntimeError, OSError) as exc:
            failed += 1
            report(Failed(index, count, label, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            continue
        derived = derive(prediction.probability, request.truth, request.spacing, request.threshold)
        finished += 1
        report(Finished(index, count, label, segmenter.card, prediction, derived, _note(device, prediction)))
    return Outcome(finished, failed, cancelled=False)
