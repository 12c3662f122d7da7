"""The Interpret tab's "Landscape" page: the loss surface around a checkpoint (Li et al. 2018).

On a fixed batch of slices of the selected image and its ground truth (the current slice, or
that many slices centred on it for a volume), :func:`napari_segloss.interpret.landscape.checkpoint_landscape`
evaluates the checkpoint's own loss and the ticked comparison losses along one or two
filter-normalised random directions; a worker thread runs it with a progress bar and Cancel, and
the page draws the curves (1-D) or filled contours (2-D).
"""

from __future__ import annotations

import threading
from typing import Any

import napari
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.checkpoints import CheckpointInfo
from napari_segloss.napari._checkpoint_pickers import CheckpointCombo
from napari_segloss.napari._interpret_tab import _canvas, _grey, _Page, _scrolled, current_index


class LandscapePage(_Page):
    """Grid size, range, batch, seed and losses; progress bar and Cancel; the plot.

    Signals: ``progressed(int, int)`` carries ``(points done, points in all)`` from the worker.
    """

    progressed = Signal(int, int)

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(viewer, inputs, parent)
        self.checkpoint = CheckpointCombo()
        self.compare = QLineEdit("dice, bce")
        self.compare.setToolTip("Catalogue losses evaluated beside the checkpoint's own loss (comma-separated)")
        self.dims = QComboBox()
        self.dims.addItem("1-D curve", 1)
        self.dims.addItem("2-D surface", 2)
        self.steps = QSpinBox()
        self.steps.setRange(3, 51)
        self.steps.setValue(11)
        self.steps.setToolTip("Grid points per direction (2-D: steps x steps forward passes)")
        self.span = QDoubleSpinBox()
        self.span.setRange(0.05, 5.0)
        self.span.setSingleStep(0.1)
        self.span.setValue(1.0)
        self.span.setToolTip("The grid runs from -range to +range, in units of each filter's own norm")
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(1)
        self.batch.setToolTip("Slices in the fixed batch: the current one, or that many around it in a volume")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.button = QPushButton("Compute landscape")
        self.button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.canvas = _canvas(420, 280)
        form = QFormLayout()
        form.addRow("Checkpoint", self.checkpoint)
        form.addRow("Compare with", self.compare)
        form.addRow("Shape", self.dims)
        form.addRow("Grid size", self.steps)
        form.addRow("Range", self.span)
        form.addRow("Batch (slices)", self.batch)
        form.addRow("Seed", self.seed)
        buttons = QHBoxLayout()
        buttons.addWidget(self.button, 1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(_scrolled(self.canvas), 1)
        self._cancel = threading.Event()
        self.landscape: Any = None  # the last result
        self.progressed.connect(self._on_progress)

    def set_checkpoints(self, infos: list[CheckpointInfo]) -> None:
        """Offer ``infos``."""
        self.checkpoint.set_checkpoints(infos)

    def _batch(self) -> tuple[Any, Any, str] | None:
        """``(grey slices (B, H, W), masks, description)`` of the selected image, or None (status says why)."""
        image, truth = self.inputs.image(), self.truth()
        if image is None or truth is None:
            self.say("Needs an image and its ground truth (same shape).", error=True)
            return None
        grey = _grey(image)
        index, problem = current_index(self.viewer, image)
        if problem:
            self.say(problem, error=True)
            return None
        if index is None:
            return grey[None], truth[None], f"'{image.name}'"
        start = max(0, min(index - self.batch.value() // 2, grey.shape[0] - self.batch.value()))
        stop = min(grey.shape[0], start + self.batch.value())
        return grey[start:stop], truth[start:stop], f"slices {start}-{stop - 1} of '{image.name}'"

    def start(self) -> None:
        """Compute the landscape in a worker."""
        from napari_segloss.interpret.landscape import LandscapeCancelled, checkpoint_landscape
        from napari_segloss.losses import resolve

        info = self.checkpoint.current_info()
        batch = self._batch()
        if info is None or batch is None:
            if info is None:
                self.say("Choose a checkpoint.", error=True)
            return
        try:
            compare = [resolve(name.strip()) for name in self.compare.text().split(",") if name.strip()]
        except ValueError as exc:
            self.say(str(exc), error=True)
            return
        images, masks, described = batch
        spacing = tuple(float(s) for s in self.inputs.image().scale[-2:])
        options = dict(compare=compare, dims=self.dims.currentData(), steps=self.steps.value(),
                       span=self.span.value(), seed=self.seed.value(), spacing=spacing)
        self._cancel = threading.Event()
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)

        def run() -> Any:
            try:
                return checkpoint_landscape(info.path, images, masks, progress=self.progressed.emit,
                                            cancel=self._cancel.is_set, **options)
            except LandscapeCancelled:  # an answer, not an error
                return None

        self.say(f"Evaluating {info.name}'s landscape on {described}…")
        self.launch(run, lambda result: self.draw(info.name, result), self.button)
        self.worker.finished.connect(lambda: self.cancel_button.setEnabled(False))

    def cancel(self) -> None:
        """Stop before the next grid point."""
        self._cancel.set()
        self.say("Cancelling…")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def draw(self, name: str, result: Any) -> None:
        """Plot the landscape (main thread)."""
        from napari_segloss.interpret.plots import plot_landscape

        if result is None:
            self.say("Cancelled.")
            return
        self.landscape = result
        panels = 1 if result.betas is None else len(result.values)
        self.canvas.setFixedSize(max(420, 300 * panels), 280)
        self.canvas.figure.set_size_inches(max(420, 300 * panels) / 100, 2.8)
        plot_landscape(self.canvas.figure, result)
        self.canvas.draw_idle()
        own = ", ".join(f"{k} {v:.4g}" for k, v in result.origin.items())
        self.say(f"{name} on {result.n_slices} slice(s), seed {result.seed}; at the checkpoint: {own}. "
                 "Curves are relative to the checkpoint's value: a flat minimum rises slowly.")
