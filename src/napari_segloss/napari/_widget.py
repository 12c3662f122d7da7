"""The "Loss explorer" dock widget: run loss-specific checkpoints on an image, see the result layers
and metrics, compare checkpoints side by side.

Layout: the shared inputs (image, ground truth, device, threshold) on top; tabs "Run" (one
checkpoint, metrics, training curve and model card), "Compare" (several checkpoints, grid view,
comparison table, agreement) and "Batch"; a progress bar, Cancel and a status line at the bottom.

Flow: Run builds a :class:`~napari_segloss.napari._runner.Request` and runs
:func:`~napari_segloss.napari._runner.run_jobs` as a :class:`~napari_segloss.napari._jobs.Job`
(one thread worker, napari's progress); each ``Finished`` event
becomes a :class:`~napari_segloss.napari._results.RunResult` and its layers (created or updated
in place, see :mod:`~napari_segloss.napari._layers`). Moving the threshold re-derives every
result's arrays and metrics in a worker (debounced) and updates the layers without re-running
the model. When napari drops the dock (``remove_dock_widget``, ``viewer.close()``), a
:class:`~napari_segloss.napari._lifetime.Lifetime` cancels the jobs and disconnects the viewer's events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Layer
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
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

from napari_segloss.checkpoints import CheckpointInfo, list_checkpoints
from napari_segloss.inference import pixel_size_ratio
from napari_segloss.napari import _layers
from napari_segloss.napari._batch_tab import BatchTab
from napari_segloss.napari._compare import CompareTab, arrange_grid, restore_grid
from napari_segloss.napari._inputs import InputsPanel
from napari_segloss.napari._interpret_tab import InterpretTab
from napari_segloss.napari._jobs import Job
from napari_segloss.napari._lifetime import Lifetime
from napari_segloss.derived import Derived, agreement, derive, disagreement, slice_metrics
from napari_segloss.napari._results import RunResult, scale_text
from napari_segloss.napari._run_tab import RunTab
from napari_segloss.napari._save_results import SaveResultsButton
from napari_segloss.napari._runner import Failed, Finished, Outcome, Progress, Request, Started, run_jobs
from napari_segloss.overlays import heatmap, uncertainty
from napari_segloss.paths import weights_dir
from napari_segloss.spacing import layer_spacing
from napari_segloss.threads import apply_thread_policy

_PROGRESS_STEPS = 1000
_THRESHOLD_DEBOUNCE_MS = 80
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


def pixel_size_hint(scale: tuple[float, ...], card_spacing: tuple[float, ...] | None) -> str:
    """A suggestion to resample when the layer's pixels are far from the checkpoint's (else "").

    A layer scale of 1 in-plane means "pixel size unknown" (PNG, JPG) and gives no hint; so does
    a ratio within [0.75, 4/3].
    """
    if layer_spacing(scale) is None:
        return ""
    ratio = pixel_size_ratio(scale, card_spacing)
    if ratio is None or 0.75 <= ratio <= 4.0 / 3.0:
        return ""
    card_mm = math.sqrt(card_spacing[-2] * card_spacing[-1])  # type: ignore[index]
    image_mm = ratio * card_mm
    return (f"The image's pixels ({image_mm:.2g} mm) are {'finer' if ratio < 1 else 'coarser'} than the "
            f"checkpoint's training pixels ({card_mm:.2g} mm): tick 'Bring the scan to the checkpoint's training scale' "
            "to run it at its own scale.")


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

        self.results: dict[tuple[str, str], RunResult] = {}
        self.compare_sets: dict[str, list[str]] = {}
        self.worker: Job | None = None  # the run in flight
        self._job: _Job | None = None
        self._grid_hidden: list[Layer] | None = None
        self._threshold_worker: Any = None  # keeps the running re-threshold worker referenced
        self._threshold_generation = 0
        self._threshold_timer = QTimer(self)
        self._threshold_timer.setSingleShot(True)
        self._threshold_timer.setInterval(_THRESHOLD_DEBOUNCE_MS)
        self._threshold_timer.timeout.connect(self.rethreshold)

        self.inputs.changed.connect(self._on_inputs_changed)
        self.inputs.threshold_changed.connect(lambda _: self._threshold_timer.start())
        self.run_tab.run_requested.connect(self.run_single)
        self.run_tab.refresh_requested.connect(self.refresh_checkpoints)
        self.interpret_tab.checkpoint_saved.connect(lambda _: self.refresh_checkpoints())
        self.interpret_tab.calibration.display_changed.connect(self._redraw_results)
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

    # ------------------------------------------------------------------ state and messages
    def refresh_checkpoints(self) -> None:
        """Look for checkpoints again and fill both pickers."""
        infos = list_checkpoints()
        self.run_tab.set_checkpoints(infos)
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
        self._leave_grid()
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
        self.results[(result.source, result.checkpoint)] = result
        job.results.append(result)
        self._show_layers(job.source, result)
        if job.mode == "run" or info.name == self.run_tab.combo.current_name():
            self._show_metrics()

    def _on_returned(self, outcome: Outcome) -> None:
        job = self._job
        self.progress.setValue(_PROGRESS_STEPS if not outcome.cancelled else self.progress.value())
        if job.mode == "compare" and job.results and job.source in self.viewer.layers:
            key = _layers.source_key(job.source)
            self.compare_sets[key] = [r.checkpoint for r in job.results]
            self._show_agreement(job.source)
            self.compare_tab.set_results(job.results)
            if self.compare_tab.grid_box.isChecked() and not outcome.cancelled:
                self._enter_grid(job.source)
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
            self._threshold_timer.start()

    def _on_errored(self, exc: Exception) -> None:
        self.say(f"Run failed: {exc}", "error", notify=True)

    def _on_worker_finished(self) -> None:
        self.worker = None
        self._job = None
        self._validate()

    # ------------------------------------------------------------------ layers
    def _show_layers(self, source: Image, result: RunResult) -> None:
        """Create or update ``result``'s layers (the difference layer only with a ground truth)."""
        data = {
            "probability": heatmap(self.interpret_tab.calibration.shown_probability(result.probability,
                                                                                  result.card.calibration)),
            "prediction": result.derived.mask,
            "difference": result.derived.difference,
            "contour": result.derived.contour,
        }
        for role in _layers.CHECKPOINT_ROLES:
            if data[role] is None:
                _layers.remove(self.viewer, [_layers.find(self.viewer, result.source, result.checkpoint, role)])
                continue
            _layers.upsert(
                self.viewer, source, checkpoint=result.checkpoint, role=role,
                name=_layers.layer_name(source.name, result.card.loss, role), data=data[role],
                has_truth=result.truth is not None, run=result.run,
            )

    def _redraw_results(self) -> None:
        """Redraw every result's layers (the heatmaps switched between raw and calibrated)."""
        for result in list(self.results.values()):
            source = self._source_layer(result.source)
            if source is not None:
                self._show_layers(source, result)

    def _show_agreement(self, source: Image) -> None:
        key = _layers.source_key(source)
        masks = [self.results[(key, name)].derived.mask for name in self.compare_sets.get(key, [])
                 if (key, name) in self.results]
        if not masks:
            return
        fraction = agreement(masks)
        shown = [("agreement", fraction), ("disagreement", disagreement(fraction))]
        probabilities = [self.results[(key, name)].probability for name in self.compare_sets.get(key, [])
                         if (key, name) in self.results]
        if len(probabilities) > 1:
            shown.append((_layers.UNCERTAINTY_ROLE, uncertainty(probabilities)))
        for role, data in shown:
            _layers.upsert(self.viewer, source, checkpoint=_layers.ALL_CHECKPOINTS, role=role,
                           name=_layers.layer_name(source.name, None, role), data=data, has_truth=False,
                           run={"checkpoints": self.compare_sets[key], "threshold": self.inputs.threshold()})

    def _source_layer(self, key: str) -> Image | None:
        return next((layer for layer in self.viewer.layers if _layers.source_key(layer) == key), None)

    def _on_layer_removed(self, event: Any) -> None:
        """Forget the results of a removed source layer."""
        key = _layers.source_key(event.value)
        for pair in [pair for pair in self.results if pair[0] == key]:
            del self.results[pair]
        self.compare_sets.pop(key, None)

    # ------------------------------------------------------------------ threshold
    def rethreshold(self) -> None:
        """Re-derive every result at the slider's threshold in a worker, then update layers and metrics."""
        from napari.qt.threading import create_worker

        if self.lifetime.closed:
            return
        threshold = self.inputs.threshold()
        self._threshold_generation += 1  # also voids a computation in flight for an older threshold
        generation = self._threshold_generation
        pending = [r for r in self.results.values() if r.derived.threshold != threshold]
        if not pending:
            return

        def compute() -> list[tuple[RunResult, Derived]]:
            return [(r, derive(r.probability, r.truth, r.spacing, threshold)) for r in pending]

        self._threshold_worker = create_worker(compute, _connect={
            "returned": lambda done: self._apply_threshold(done, generation),
            "errored": lambda exc: self.say(f"Threshold update failed: {exc}", "error"),
        })

    def _apply_threshold(self, done: list[tuple[RunResult, Derived]], generation: int) -> None:
        if generation != self._threshold_generation:
            return  # a newer threshold is being computed
        sources = set()
        for result, derived in done:
            if self.results.get((result.source, result.checkpoint)) is not result:
                continue
            result.derived = derived
            result.run = {**result.run, "threshold": derived.threshold}
            source = self._source_layer(result.source)
            if source is not None:
                self._show_layers(source, result)
                sources.add(result.source)
        for key in sources:
            if key in self.compare_sets:
                self._show_agreement(self._source_layer(key))
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

    def current_slice(self, layer: Layer) -> tuple[int, int] | None:
        """``(axis, index)`` of the 2D slice of a 3D ``layer`` the viewer shows, or None (3D view,
        or the point is outside the layer)."""
        dims = self.viewer.dims
        if layer.ndim != 3 or dims.ndisplay == 3:
            return None
        offset = dims.ndim - layer.ndim
        axes = [axis - offset for axis in dims.not_displayed if axis >= offset]
        if len(axes) != 1:
            return None
        axis = axes[0]
        index = int(np.round(layer.world_to_data(dims.point)[axis]))
        return (axis, index) if 0 <= index < layer.data.shape[axis] else None

    def slice_values(self, result: RunResult) -> tuple[str, dict] | None:
        """``("slice <i>", metrics)`` of the shown slice of a 3D result with ground truth, or None."""
        source = self._source_layer(result.source)
        if result.ndim != 3 or result.truth is None or source is None:
            return None
        where = self.current_slice(source)
        if where is None:
            return None
        axis, index = where
        label = f"slice {index}" if axis == 0 else f"slice {index} (axis {axis})"
        return label, slice_metrics(result.derived.mask, result.truth, result.spacing, axis, index)

    def _show_metrics(self, *_: object) -> None:
        result = self.current_result()
        self.run_tab.metrics.show_result(result, self.slice_values(result) if result else None)

    # ------------------------------------------------------------------ compare view
    def _on_grid_toggled(self, on: bool) -> None:
        image = self.inputs.image()
        if on and image is not None and _layers.source_key(image) in self.compare_sets:
            self._enter_grid(image)
        elif not on:
            self._leave_grid()

    def _on_table_row(self, row: int, _column: int) -> None:
        name = self.compare_tab.table.item(row, 0).text()
        self.run_tab.combo.select(name)
        self.show_page(self.run_tab)

    def _view(self, source: Image, checkpoint: str, name: str) -> Image:
        """A view of the source image for one grid viewbox (shares the data; removed with the grid).
        Its name (the loss) labels the viewbox."""
        view = Image(
            source.data, name=_layers.free_name(self.viewer, name), rgb=source.rgb,
            colormap=source.colormap, contrast_limits=source.contrast_limits, gamma=source.gamma,
            metadata={_layers.TAG: {"source": _layers.source_key(source), "checkpoint": checkpoint,
                                    "role": _layers.VIEW_ROLE}},
            **_layers.geometry(source),
        )
        self.viewer.layers.append(view)
        return view

    def _enter_grid(self, source: Image) -> None:
        """Side by side: one viewbox per compared checkpoint (image + its results), one for agreement."""
        self._leave_grid()
        key = _layers.source_key(source)
        names = [n for n in self.compare_sets.get(key, []) if (key, n) in self.results]
        if not names:
            return
        found = {n: {role: _layers.find(self.viewer, key, n, role) for role in _layers.CHECKPOINT_ROLES} for n in names}
        roles = [role for role in _layers.CHECKPOINT_ROLES if all(found[n][role] is not None for n in names)]
        groups = []
        for name in names:
            view = self._view(source, name, self.results[(key, name)].card.loss)
            groups.append([view, *(found[name][role] for role in roles)])
        shared = [_layers.find(self.viewer, key, _layers.ALL_CHECKPOINTS, role) for role in _layers.COMPARE_ROLES]
        shared = [layer for layer in shared if layer is not None]
        view = self._view(source, _layers.ALL_CHECKPOINTS, f"agreement of {len(names)}")
        for layer in shared:
            layer.visible = True
        groups.append([view, *shared])
        for group in groups:
            _show_name(group[0])
        self._grid_hidden = arrange_grid(self.viewer, groups)
        self.viewer.reset_view()

    def _leave_grid(self) -> None:
        """Back to one view: remove the image views, show the hidden layers again."""
        if self._grid_hidden is None:
            return
        views = [layer for layer in _layers.tagged(self.viewer) if _layers.tag_of(layer).get("role") == _layers.VIEW_ROLE]
        _layers.remove(self.viewer, views)
        for layer in _layers.tagged(self.viewer):
            if _layers.tag_of(layer).get("role") in _layers.COMPARE_ROLES:
                layer.visible = False
        restore_grid(self.viewer, self._grid_hidden)
        self._grid_hidden = None
        self.viewer.reset_view()

    def grid_active(self) -> bool:
        """Whether the widget's side-by-side grid is on."""
        return self._grid_hidden is not None

    def _teardown(self) -> None:
        """Cancel the run in flight and void a pending re-threshold (plain Python: see Lifetime)."""
        if self.worker is not None:
            self.worker.detach()
        self._threshold_generation += 1
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


def _show_name(layer: Layer) -> None:
    """Show the layer's name in its grid viewbox (napari >= 0.6 has per-layer name overlays)."""
    overlay = getattr(layer, "name_overlay", None)
    if overlay is not None:
        overlay.visible = True

