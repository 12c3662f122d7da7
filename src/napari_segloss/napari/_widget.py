"""The "Loss explorer" dock widget: run loss-specific checkpoints on an image, see the result layers
and metrics, compare checkpoints side by side.

Layout: the shared inputs (image, ground truth, device, threshold, scale) on top; tabs "Run" (one
checkpoint, metrics, training curve and model card), "Compare" (several checkpoints, grid view,
comparison table, agreement), "Interpret" and "Batch"; a progress bar, Cancel, Save results… and a
status line at the bottom.

This class wires the parts together and runs the jobs; each other job has its own module:
:mod:`~napari_segloss.napari._runner` (the work, off the GUI thread, as one
:class:`~napari_segloss.napari._jobs.Job`), :mod:`~napari_segloss.napari._result_layers` (results
and their layers), :mod:`~napari_segloss.napari._threshold` (re-deriving every result when the
threshold moves, without re-running a model), :mod:`~napari_segloss.napari._grid` (the
side-by-side view), :mod:`~napari_segloss.napari._slices` (the shown slice's metrics),
:mod:`~napari_segloss.napari._scale` (what is said about the scale the network saw) and
:mod:`~napari_segloss.napari._lifetime` (teardown when napari drops the dock: jobs cancelled,
viewer events disconnected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import napari
import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.checkpoints import CheckpointInfo, scan_checkpoints
from napari_segloss.derived import Derived
from napari_segloss.napari import _layers
from napari_segloss.napari._batch_tab import BatchTab
from napari_segloss.napari._compare import CompareTab
from napari_segloss.napari._grid import GridView
from napari_segloss.napari._inputs import InputsPanel
from napari_segloss.napari._interpret_tab import InterpretTab
from napari_segloss.napari._jobs import Job
from napari_segloss.napari._lifetime import Lifetime
from napari_segloss.napari._result_layers import ResultLayers
from napari_segloss.napari._results import RunResult
from napari_segloss.napari._run_tab import RunTab
from napari_segloss.napari._runner import Failed, Finished, Outcome, Progress, Request, Started, run_jobs
from napari_segloss.napari._save_results import SaveResultsButton
from napari_segloss.napari._scale import pixel_size_hint, scale_text
from napari_segloss.napari._slices import slice_values
from napari_segloss.napari._threshold import ThresholdUpdater
from napari_segloss.paths import weights_dir
from napari_segloss.threads import apply_thread_policy

_PROGRESS_STEPS = 1000
_COLORS = {"info": "", "warning": "color: #E69F00", "error": "color: #D55E00"}


@dataclass
class _Job:
    """The run in flight: mode ("run" or "compare"), its source layer, checkpoints and ground truth."""

    mode: str
    source: Image
    infos: list[CheckpointInfo]
    truth: np.ndarray | None
    results: list[RunResult] = field(default_factory=list)
    resample: bool = True
    messages: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


class LossExplorerWidget(QWidget):
    """Dock widget "Loss explorer" (Plugins > napari-segloss).

    Args:
        viewer: the napari viewer it works on (npe2 passes it in).
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        try:
            apply_thread_policy(interactive=True)  # leave a core to the GUI (napari_segloss.threads)
        except ValueError as exc:
            show_warning(f"{exc}; using torch's default thread count")
        self.viewer = viewer
        self.inputs = InputsPanel(viewer)
        self.run_tab = RunTab()
        self.compare_tab = CompareTab()
        self.batch_tab = BatchTab(viewer)
        self.interpret_tab = InterpretTab(viewer, self.inputs)
        self.tabs = QTabWidget()
        for page, title in ((self.run_tab, "Run"), (self.compare_tab, "Compare"),
                            (self.interpret_tab, "Interpret"), (self.batch_tab, "Batch")):
            self.tabs.addTab(_scrolling(page), title)
        self.progress = QProgressBar()
        self.progress.setRange(0, _PROGRESS_STEPS)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current batch of slices")
        self.cancel_button.setEnabled(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self._input_problem_shown = False  # whether the status line shows an input problem
        bottom = QHBoxLayout()
        bottom.addWidget(self.progress, 1)
        bottom.addWidget(self.cancel_button)
        self.save_button = SaveResultsButton(self)  # the current or compared checkpoints, in the input's format
        bottom.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.inputs)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.status)

        calibration = self.interpret_tab.calibration
        self.layers = ResultLayers(viewer, lambda r: calibration.shown_probability(r.probability, r.card.calibration))
        self.grid = GridView(viewer)
        self.threshold = ThresholdUpdater(self.inputs.threshold, self.layers.pending, self._apply_threshold,
                                          lambda message: self.say(message, "error"), parent=self)
        self.worker: Job | None = None  # the run in flight
        self._job: _Job | None = None

        self.inputs.changed.connect(self._on_inputs_changed)
        self.inputs.threshold_changed.connect(self.threshold.schedule)
        self.run_tab.run_requested.connect(self.run_single)
        self.run_tab.refresh_requested.connect(self.refresh_checkpoints)
        self.interpret_tab.checkpoint_saved.connect(self.refresh_checkpoints)
        calibration.display_changed.connect(self.layers.redraw)
        self.run_tab.checkpoint_changed.connect(self._on_inputs_changed)
        self.compare_tab.run_requested.connect(self.run_compare)
        self.compare_tab.checklist.changed.connect(self._validate)
        self.compare_tab.grid_toggled.connect(self._on_grid_toggled)
        self.compare_tab.table.cellDoubleClicked.connect(self._on_table_row)
        self.cancel_button.clicked.connect(self.cancel)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        viewer.dims.events.current_step.connect(self._show_metrics)
        viewer.dims.events.ndisplay.connect(self._show_metrics)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.events.theme.connect(self._apply_theme)
        self._apply_theme()
        self.refresh_checkpoints()
        self.lifetime = Lifetime(self, viewer)
        self.lifetime.on_close(self.batch_tab.teardown)
        self.lifetime.on_close(self._teardown)
        self.lifetime.track()

    @property
    def results(self) -> dict[tuple[str, str], RunResult]:
        """Every kept result by ``(source key, checkpoint)`` (:attr:`ResultLayers.results`)."""
        return self.layers.results

    @property
    def compare_sets(self) -> dict[str, list[str]]:
        """Source key -> the checkpoints of its last comparison (:attr:`ResultLayers.compare_sets`)."""
        return self.layers.compare_sets

    # ------------------------------------------------------------------ state and messages
    def refresh_checkpoints(self, *_: object) -> None:
        """Look for checkpoints again and fill every picker; skipped cards are listed under the Run tab's picker."""
        registry = scan_checkpoints()
        infos = list(registry.checkpoints)
        self.run_tab.set_checkpoints(infos, registry.problems)
        self.compare_tab.checklist.set_checkpoints(infos)
        self.interpret_tab.set_checkpoints(infos)
        self._validate()

    def say(self, text: str, level: str = "info", *, notify: bool = False) -> None:
        """Show ``text`` in the status line (``level`` info | warning | error); with ``notify``
        also as a napari notification."""
        self.status.setText(text)
        self.status.setStyleSheet(_COLORS[level])
        self._input_problem_shown = False
        if notify:
            {"info": show_info, "warning": show_warning, "error": show_error}[level](text)

    def problem(self, mode: str = "run") -> str | None:
        """Why ``mode`` ("run" or "compare") cannot start now, or None."""
        problem = self.inputs.problem()
        if problem:
            return problem
        if not self.run_tab.combo.count():
            return (f"No checkpoints found: put <name>.safetensors + <name>.json into {weights_dir()} or a folder "
                    "listed in NAPARI_SEGLOSS_CHECKPOINTS, then press ↻.")
        if mode == "run" and self.run_tab.current() is None:
            return "Pick a checkpoint."
        if mode == "compare" and not self.compare_tab.checklist.checked():
            return "Tick the checkpoints to compare (or All checkpoints)."
        return None

    def _validate(self, *_: object) -> None:
        idle = self.worker is None
        run_problem, compare_problem = self.problem("run"), self.problem("compare")
        self.run_tab.run_button.setEnabled(idle and run_problem is None)
        self.compare_tab.run_button.setEnabled(idle and compare_problem is None)
        self.cancel_button.setEnabled(not idle)
        if idle:
            current = run_problem if self.current_page() is self.run_tab else compare_problem
            if current:
                self.say(current, "warning")
                self._input_problem_shown = True
            elif self._input_problem_shown:
                self.say("Ready.")

    def _apply_theme(self, *_: object) -> None:
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        self.run_tab.card.set_colors(theme.background.as_hex(), theme.text.as_hex())

    def current_page(self) -> QWidget:
        """The page of the selected tab (run_tab, compare_tab, interpret_tab or batch_tab)."""
        return self.tabs.currentWidget().widget()

    def show_page(self, page: QWidget) -> None:
        """Select the tab that holds ``page``."""
        index = next(i for i in range(self.tabs.count()) if self.tabs.widget(i).widget() is page)
        self.tabs.setCurrentIndex(index)

    def _on_tab_changed(self, _index: int) -> None:
        self.inputs.setVisible(self.current_page() is not self.batch_tab)
        self._validate()

    def _on_inputs_changed(self, *_: object) -> None:
        self._validate()
        self._show_metrics()

    # ------------------------------------------------------------------ running
    def run_single(self) -> None:
        """Run the checkpoint picked in the Run tab on the selected image."""
        info = self.run_tab.current()
        self._start("run", [info] if info else [])

    def run_compare(self) -> None:
        """Run every ticked checkpoint, one at a time, on the selected image."""
        self._start("compare", self.compare_tab.checklist.checked())

    def cancel(self) -> None:
        """Ask the running job to stop before its next batch of slices."""
        if self.worker is not None:
            self.worker.cancel()
            self.say("Cancelling…")

    def _start(self, mode: str, infos: list[CheckpointInfo]) -> None:
        problem = self.problem(mode)
        if self.worker is not None:
            problem = "A run is already in progress."
        if problem:
            self.say(problem, "warning", notify=True)
            return
        source = self.inputs.image()
        self.grid.leave()
        data = source.data[0] if source.multiscale else source.data
        request = Request(
            image=data,
            truth=self.inputs.truth_mask(),
            spacing=tuple(float(s) for s in source.scale),
            checkpoints=[info.path for info in infos],
            device=self.inputs.device(),
            threshold=self.inputs.threshold(),
            resample=self.inputs.resample(),
        )
        self._job = _Job(mode, source, list(infos), request.truth, resample=request.resample)
        self.compare_tab.checklist.clear_status()
        for info in infos:
            self.compare_tab.checklist.set_status(info.name, "queued")
        self.progress.setValue(0)
        self.say(f"Starting {len(infos)} checkpoint(s) on '{source.name}'…")
        self.worker = Job(lambda report, cancelled: run_jobs(request, report=report, cancel=cancelled),
                          description=f"Loss explorer: {len(infos)} checkpoint(s) on {source.name}",
                          reported=self._on_event, returned=self._on_returned, errored=self._on_errored,
                          finished=self._on_worker_finished)
        self._validate()

    def _on_event(self, event: Started | Progress | Failed | Finished) -> None:
        job = self._job
        info = job.infos[event.index]
        where = f"{info.name} ({event.index + 1}/{event.count})" if event.count > 1 else info.name
        if isinstance(event, Started):
            self.compare_tab.checklist.set_status(info.name, "loading")
            self.say(f"Loading {where}…")
        elif isinstance(event, Progress):
            fraction = (event.index + event.done / max(event.total, 1)) / event.count
            self.progress.setValue(round(fraction * _PROGRESS_STEPS))
            if self.worker is not None:
                self.worker.set_fraction(fraction)
            self.compare_tab.checklist.set_status(info.name, f"{100 * event.done // max(event.total, 1)} %")
            self.say(f"Running {where}: {event.done}/{event.total} slice(s) on {self.inputs.device_combo.currentText()}")
        elif isinstance(event, Failed):
            self.compare_tab.checklist.set_status(info.name, "failed")
            message = f"Checkpoint '{info.name}' could not be run: {event.message}"
            job.messages.append(message)
            self.say(message, "error", notify=True)
        else:
            self._on_finished_checkpoint(job, info, event)

    def _on_finished_checkpoint(self, job: _Job, info: CheckpointInfo, event: Finished) -> None:
        self.compare_tab.checklist.set_status(info.name, "done" + (" (CPU)" if event.note else ""))
        hint = "" if job.resample or job.hints else pixel_size_hint(tuple(job.source.scale), event.card.pixel_spacing_mm)
        if hint:
            job.hints.append(hint)
        if event.note:
            message = f"{info.name}: {event.note}"
            job.messages.append(message)
            self.say(message, "warning", notify=True)
        if job.source not in self.viewer.layers:
            return
        result = RunResult(
            source=_layers.source_key(job.source),
            image_name=job.source.name,
            card=event.card,
            probability=event.prediction.probability,
            truth=job.truth,
            spacing=tuple(float(s) for s in job.source.scale),
            run={**event.prediction.metadata, "threshold": event.derived.threshold},
            derived=event.derived,
        )
        job.results.append(result)
        self.layers.add(job.source, result)
        if job.mode == "run" or info.name == self.run_tab.combo.current_name():
            self._show_metrics()

    def _on_returned(self, outcome: Outcome) -> None:
        job = self._job
        self.progress.setValue(_PROGRESS_STEPS if not outcome.cancelled else self.progress.value())
        if job.mode == "compare" and job.results and job.source in self.viewer.layers:
            self.layers.set_compared(job.source, [r.checkpoint for r in job.results], self.inputs.threshold())
            self.compare_tab.set_results(job.results)
            if self.compare_tab.grid_box.isChecked() and not outcome.cancelled:
                self.grid.enter(job.source, job.results)
        if job.results and job.source in self.viewer.layers:
            self.viewer.layers.selection.active = job.source  # keep paint tools off the result layers
        summary = f"{outcome.finished} of {len(job.infos)} checkpoint(s) finished"
        scale = scale_text(job.results)  # the scale choice is always shown (and how to switch it off)
        if outcome.error:
            self.say(f"Could not run: {outcome.error}", "error", notify=True)
        elif outcome.cancelled:
            self.say(f"Cancelled: {summary}.", "warning", notify=True)
        elif outcome.failed or job.messages:
            self.say(" ".join([f"Done with problems: {summary}.", *job.messages, scale]).strip(), "warning")
        else:
            seconds = sum(r.run.get("seconds", 0.0) for r in job.results)
            device = job.results[-1].run.get("device", "?") if job.results else "?"
            done = f"Done: {summary} on '{job.source.name}' ({seconds:.1f} s on {device})."
            self.say(" ".join([done, scale, *job.hints]).strip(), "warning" if job.hints else "info")
        if any(r.derived.threshold != self.inputs.threshold() for r in job.results):
            self.threshold.schedule()

    def _on_errored(self, exc: Exception) -> None:
        self.say(f"Run failed: {exc}", "error", notify=True)

    def _on_worker_finished(self) -> None:
        self.worker = None
        self._job = None
        self._validate()

    def _on_layer_removed(self, event: Any) -> None:
        """Forget the results of a removed source layer."""
        self.layers.forget(event.value)

    # ------------------------------------------------------------------ threshold
    def rethreshold(self) -> None:
        """Re-derive every result at the slider's threshold now (in a worker), then update layers and metrics."""
        self.threshold.run()

    def _apply_threshold(self, done: list[tuple[RunResult, Derived]], threshold: float) -> None:
        self.layers.update(done, threshold)
        current = self.compare_tab.table.results
        self.compare_tab.set_results([self.results[(r.source, r.checkpoint)] for r in current
                                      if (r.source, r.checkpoint) in self.results])
        self._show_metrics()

    # ------------------------------------------------------------------ metrics
    def current_result(self) -> RunResult | None:
        """The result of the selected checkpoint on the selected image, if it was run."""
        image, info = self.inputs.image(), self.run_tab.current()
        if image is None or info is None:
            return None
        return self.results.get((_layers.source_key(image), info.name))

    def _show_metrics(self, *_: object) -> None:
        result = self.current_result()
        shown = slice_values(self.viewer, self.layers.source_layer(result.source), result) if result else None
        self.run_tab.metrics.show_result(result, shown)

    # ------------------------------------------------------------------ compare view
    def _on_grid_toggled(self, on: bool) -> None:
        image = self.inputs.image()
        if on and image is not None and _layers.source_key(image) in self.compare_sets:
            self.grid.enter(image, self.layers.compared(_layers.source_key(image)))
        elif not on:
            self.grid.leave()

    def _on_table_row(self, row: int, _column: int) -> None:
        name = self.compare_tab.table.item(row, 0).text()
        self.run_tab.combo.select(name)
        self.show_page(self.run_tab)

    def grid_active(self) -> bool:
        """Whether the widget's side-by-side grid is on."""
        return self.grid.active

    # ------------------------------------------------------------------ teardown
    def _teardown(self) -> None:
        """Cancel the run in flight and void a pending re-threshold (plain Python: see Lifetime)."""
        if self.worker is not None:
            self.worker.detach()
        self.threshold.close()
        self.interpret_tab.fine_tune._cancel.set()  # the fine-tune page polls it between steps

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Tear down when Qt closes the widget (napari itself never does: see Lifetime)."""
        self.lifetime.close()
        super().closeEvent(event)


def _scrolling(page: QWidget) -> QScrollArea:
    """``page`` in a frameless scroll area, so one wide tab does not widen the whole dock."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(page)
    return area
