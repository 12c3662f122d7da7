"""Moving the threshold slider: every result is re-derived at the new threshold in a worker thread
(debounced), without re-running a model; a newer threshold voids a computation still in flight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer

from napari_segloss.derived import Derived, derive
from napari_segloss.napari._results import RunResult

#: how long the slider must rest before the results are re-derived (ms)
DEBOUNCE_MS = 80


class ThresholdUpdater(QObject):
    """Debounced re-derivation of results at the slider's threshold.

    Args:
        threshold: the slider's current value.
        pending: the results not derived at a threshold.
        apply: called on the main thread with ``[(result, derived), ...]`` and the threshold,
            only when no newer threshold was asked for meanwhile.
        failed: called on the main thread with a one-line message.
    """

    def __init__(self, threshold: Callable[[], float], pending: Callable[[float], list[RunResult]],
                 apply: Callable[[list[tuple[RunResult, Derived]], float], None],
                 failed: Callable[[str], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._threshold, self._pending, self._apply, self._failed = threshold, pending, apply, failed
        self._generation = 0
        self._closed = False
        self._worker: Any = None  # keeps the running worker referenced
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.run)

    def schedule(self) -> None:
        """Re-derive once the slider has rested :data:`DEBOUNCE_MS`."""
        if not self._closed:
            self._timer.start()

    def run(self) -> None:
        """Re-derive every pending result at the current threshold now (in a worker)."""
        from napari.qt.threading import create_worker

        if self._closed:
            return
        threshold = self._threshold()
        self._generation += 1  # also voids a computation in flight for an older threshold
        generation = self._generation
        pending = self._pending(threshold)
        if not pending:
            return

        def compute() -> list[tuple[RunResult, Derived]]:
            return [(r, derive(r.probability, r.truth, r.spacing, threshold)) for r in pending]

        self._worker = create_worker(compute, _connect={
            "returned": lambda done: self._returned(done, generation, threshold),
            "errored": lambda exc: self._errored(exc, generation),
        })

    def close(self) -> None:
        """Stop for good: no pending or running computation reaches ``apply`` (plain Python: see Lifetime)."""
        self._closed = True
        self._generation += 1

    def _returned(self, done: list[tuple[RunResult, Derived]], generation: int, threshold: float) -> None:
        if generation == self._generation:  # else a newer threshold is being computed, or closed
            self._apply(done, threshold)

    def _errored(self, exc: Exception, generation: int) -> None:
        if generation == self._generation:
            self._failed(f"Threshold update failed: {exc}")
