"""One way to run long core work from the widget: the core calls back, one napari thread worker runs it.

Every long core call of the plugin reports progress through a callback and polls a cancel
callable between batches (:func:`napari_segloss.inference.predict`, :func:`napari_segloss.batch.run_batch`,
:func:`napari_segloss.interpret.fine_tune`). :class:`Job` runs such a call in one
:func:`napari.qt.threading.thread_worker`: each report crosses to the main thread through a Qt
signal (queued, since it is emitted in the worker's thread), napari's activity dock shows the job
with :class:`napari.utils.progress`, and :meth:`Job.cancel` sets the event the call polls. Only the
main-thread handlers touch layers and widgets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

#: resolution of napari's progress bar for a job
PROGRESS_STEPS = 1000

#: ``call(report, cancelled)``: the core work; ``report(value)`` from any thread, ``cancelled()`` polled
JobCall = Callable[[Callable[[Any], None], Callable[[], bool]], Any]


class Job(QObject):
    """One core call in one napari thread worker.

    Args:
        call: ``call(report, cancelled)`` runs in the worker thread and returns the result.
        description: the job's line in napari's activity dock.
        reported: main-thread handler of each value the call reports.
        returned / errored / finished: main-thread handlers of the worker's signals.

    The job starts at once. Python owns it (no Qt parent): a closed widget cannot delete it under
    a running worker; :meth:`detach` (at teardown) cancels it and silences its handlers.
    """

    report = Signal(object)

    def __init__(self, call: JobCall, *, description: str, reported: Callable[[Any], None] | None = None,
                 returned: Callable[[Any], None] | None = None, errored: Callable[[Exception], None] | None = None,
                 finished: Callable[[], None] | None = None) -> None:
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        super().__init__()
        self.cancelled = threading.Event()
        self.detached = False
        self.progress = progress(total=PROGRESS_STEPS, desc=description)
        self._fraction = 0.0
        self._update_pending = False
        self._closed = False
        self._handlers = {"reported": reported, "returned": returned, "errored": errored, "finished": finished}
        self.report.connect(self._on_report)

        @thread_worker(start_thread=False, ignore_errors=True)  # errors go to the errored handler
        def work() -> Any:
            return call(self.report.emit, self.cancelled.is_set)

        self.worker = work()
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def cancel(self) -> None:
        """Ask the call to stop at its next cancel check (safe from any thread)."""
        self.cancelled.set()

    def detach(self) -> None:
        """Cancel, and call none of the handlers again (their widget is gone)."""
        self.cancel()
        self.detached = True

    def set_fraction(self, fraction: float) -> None:
        """Show ``fraction`` (0-1) of the job done in napari's activity dock (main thread).

        Deferred to the event loop: napari's progress bar processes events while it repaints,
        which would run later handlers (the job's end) inside the caller's handler.
        """
        self._fraction = min(max(fraction, 0.0), 1.0)
        if not self._update_pending:
            self._update_pending = True
            QTimer.singleShot(0, self._show_fraction)

    def _show_fraction(self) -> None:
        self._update_pending = False
        target = round(self._fraction * PROGRESS_STEPS)
        if not self._closed and target > self.progress.n:
            self.progress.update(target - self.progress.n)

    def _forward(self, name: str, *args: Any) -> None:
        handler = self._handlers[name]
        if handler is not None and not self.detached:
            handler(*args)

    def _on_report(self, value: Any) -> None:
        self._forward("reported", value)

    def _on_returned(self, value: Any) -> None:
        self._forward("returned", value)

    def _on_errored(self, exc: Exception) -> None:
        self._forward("errored", exc)

    def _on_finished(self) -> None:
        self._closed = True
        self.progress.close()
        self._forward("finished")
