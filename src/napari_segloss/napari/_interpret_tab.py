"""The "Interpret" tab of the Loss explorer: see what a loss sees.

Six pages, all on the image and ground truth chosen in the shared inputs panel (Calibration and
Landscape live in :mod:`~napari_segloss.napari._calibration_page` and
:mod:`~napari_segloss.napari._landscape_page`):

* **Loss map**: for one compared checkpoint's probability layer and a chosen loss, an Image layer
  with each pixel's ``|dL/dlogit|`` or per-pixel term (current slice of a 3-D image; the rest of
  the volume stays 0). Losses that need decoder features re-run the checkpoint on the image.
* **Response**: for the ticked losses, side by side, loss value and ``dL/dp`` against one tumour
  and one background pixel's probability, and the loss against a predicted mask eroded or dilated
  around the ground truth (current slice; a disc when there is no ground truth).
* **Confidence**: histograms of the predicted probability on true-tumour and true-background
  pixels, one panel per checkpoint that has a probability layer for the image.
* **Calibration**: reliability diagram of a checkpoint's probabilities on the image against the
  ground truth, beside its card's test-set diagram; calibrated heatmaps (temperature) on demand.
* **Landscape**: the checkpoint's own loss and comparison losses along filter-normalised random
  directions around its weights (1-D curves or a 2-D contour), with progress and Cancel.
* **Fine-tune**: train a checkpoint with a chosen loss on the image and its ground truth in a
  worker thread, with a live loss/Dice curve and Cancel; the result is saved as a new checkpoint
  (:func:`napari_segloss.interpret.save_fine_tuned`) and ``checkpoint_saved`` is emitted.

Probability layers are found by the widget's layer tag (:mod:`napari_segloss.napari._layers`,
role ``"probability"``), so the tab never depends on the widget's internals. Every computation
runs in a napari thread worker; layers are touched only in the main-thread handlers.
"""

from __future__ import annotations

import threading
from typing import Any

import napari
import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image, Layer
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_segloss import losses
from napari_segloss.checkpoints import CheckpointInfo, list_checkpoints
from napari_segloss.napari import _layers
from napari_segloss.napari._checkpoint_pickers import CheckpointCombo

#: tag role of the loss-map layers
LOSS_MAP_ROLE = "loss map"
LOSS_MAP_COLORMAP = "magma"
DEFAULT_RESPONSE_LOSSES = ("bce", "focal", "dice", "tversky")
#: ground truth of the size response when the image has none: a disc of radius 12 px in 64 x 64
_DISC_SIZE, _DISC_RADIUS = 64, 12
_MODES = {"gradient": "|dL/dlogit| (gradient)", "per_pixel": "per-pixel term"}


def probability_layers(viewer: napari.Viewer, source: Layer) -> dict[str, Image]:
    """The widget's probability layers of ``source``, by checkpoint name."""
    found = {}
    for layer in _layers.tagged(viewer, _layers.source_key(source)):
        tag = _layers.tag_of(layer)
        if tag.get("role") == "probability":
            found[str(tag.get("checkpoint"))] = layer
    return found


def offer_probability_layers(combo: Any, viewer: napari.Viewer, source: Layer | None) -> list[str]:
    """Refill ``combo`` (a QComboBox) with the checkpoints that have a probability layer of
    ``source``, keeping the current choice when it is still there; returns the names."""
    keep = combo.currentText()
    names = list(probability_layers(viewer, source)) if source is not None else []
    combo.clear()
    combo.addItems(names)
    if keep in names:
        combo.setCurrentText(keep)
    return names


def current_index(viewer: napari.Viewer, layer: Layer) -> tuple[int | None, str | None]:
    """``(slice index along axis 0, problem)`` of the slice of a 3-D ``layer`` the viewer shows.

    2-D layers give ``(None, None)``; a 3-D view or a view not along axis 0 gives a problem.
    """
    if layer.ndim == 2:
        return None, None
    dims = viewer.dims
    offset = dims.ndim - layer.ndim
    if dims.ndisplay == 3 or tuple(dims.displayed)[-2:] != (offset + 1, offset + 2):
        return None, "Show 2-D slices along the first axis (the loss map is computed per slice)."
    index = int(np.round(layer.world_to_data(dims.point)[0]))
    if not 0 <= index < layer.data.shape[0]:
        return None, "The viewer's slice is outside the image."
    return index, None


def _grey(layer: Image) -> np.ndarray:
    from napari_segloss.preprocess import to_grayscale

    data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
    return to_grayscale(data, rgb=bool(layer.rgb)) if layer.rgb else data


def _canvas(width: int, height: int) -> FigureCanvasQTAgg:
    canvas = FigureCanvasQTAgg(Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained"))
    canvas.setFixedSize(width, height)
    return canvas


def _scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(False)
    area.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    return area


def _loss_combo() -> QComboBox:
    combo = QComboBox()
    for name in losses.available():
        entry = losses.info(name)
        combo.addItem(f"{entry.title} ({name})", name)
        combo.setItemData(combo.count() - 1, entry.summary, Qt.ItemDataRole.ToolTipRole)
    return combo


class _Page(QWidget):
    """A page with a status line and one worker at a time."""

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.inputs = inputs
        self.worker: Any = None
        self.status = QLabel()
        self.status.setWordWrap(True)

    def say(self, text: str, error: bool = False) -> None:
        """Show ``text`` in the page's status line (red for errors)."""
        self.status.setText(text)
        self.status.setStyleSheet("color: #D55E00" if error else "")

    def launch(self, compute: Any, on_done: Any, button: QPushButton) -> None:
        """Run ``compute()`` in a thread worker; ``on_done(result)`` in the main thread."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        button.setEnabled(False)
        worker = create_worker(compute, _start_thread=False)
        worker.returned.connect(on_done)
        worker.errored.connect(self.on_error)
        worker.finished.connect(lambda: self._finished(button))
        self.worker = worker
        worker.start()

    def on_error(self, exc: Exception) -> None:
        """Report a failed computation in the status line."""
        self.say(f"Failed: {exc}", error=True)

    def _finished(self, button: QPushButton) -> None:
        self.worker = None
        button.setEnabled(True)

    def truth(self) -> np.ndarray | None:
        """The ground truth as bool, when it has the image's shape."""
        image, truth = self.inputs.image(), self.inputs.truth_mask()
        if image is None or truth is None or truth.shape != _layers.spatial_shape(image):
            return None
        return truth


class LossMapPage(_Page):
    """A layer of each pixel's share of a loss, for a compared checkpoint's prediction."""

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(viewer, inputs, parent)
        self.prediction = QComboBox()
        self.prediction.setToolTip("A compared checkpoint's probability layer for the image (run it first)")
        self.loss = _loss_combo()
        self.loss.setCurrentIndex(self.loss.findData("focal"))
        self.mode = QComboBox()
        for key, text in _MODES.items():
            self.mode.addItem(text, key)
        self.mode.setToolTip("Gradient: how hard training pushes each pixel's logit. Per-pixel term: the pixel's "
                             "own share of the loss (losses that are a mean over pixels only)")
        self.button = QPushButton("Compute loss map")
        self.button.clicked.connect(self.compute)
        form = QFormLayout()
        form.addRow("Prediction", self.prediction)
        form.addRow("Loss", self.loss)
        form.addRow("Show", self.mode)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        inputs.changed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: object) -> None:
        """Offer the probability layers of the selected image."""
        names = offer_probability_layers(self.prediction, self.viewer, self.inputs.image())
        if not names:
            self.say("Run a checkpoint on the image first (Run or Compare tab): the loss map needs its prediction.")
        elif self.status.text().startswith("Run a checkpoint"):
            self.say("")

    def compute(self) -> None:
        """Compute the loss map of the current slice in a worker and show it."""
        from napari_segloss.interpret import checkpoint_loss_map, loss_map

        image, checkpoint = self.inputs.image(), self.prediction.currentText()
        truth = self.truth()
        layer = probability_layers(self.viewer, image).get(checkpoint) if image is not None else None
        if layer is None or truth is None:
            self.say("Needs an image, its ground truth and a checkpoint's prediction of it.", error=True)
            return
        index, problem = current_index(self.viewer, image)
        if problem:
            self.say(problem, error=True)
            return
        name, mode = self.loss.currentData(), self.mode.currentData()
        spacing = tuple(float(s) for s in image.scale[-2:])
        probability = np.asarray(layer.data)
        needs_model = "features" in losses.info(name).needs
        grey = _grey(image) if needs_model else None
        device = self.inputs.device()

        def run() -> Any:
            if needs_model:
                return checkpoint_loss_map(checkpoint, grey, truth, name, index=index, spacing=spacing, device=device)
            return loss_map(probability, truth, name, index=index, kind="probability", spacing=spacing)

        self.say(f"Computing the {name} loss map…")
        self.launch(run, lambda result: self.show(image, checkpoint, result, mode), self.button)

    def show(self, image: Image, checkpoint: str, result: Any, mode: str) -> Layer | None:
        """Create or update the loss-map layer of ``(image, checkpoint)``."""
        plane = result.per_pixel if mode == "per_pixel" else result.gradient
        where = "" if result.index is None else f" on slice {result.index}"
        if plane is None:
            self.say(f"{result.loss} does not decompose per pixel (it is not a mean over pixels): showing the "
                     f"gradient instead. Loss {result.value:.4g}{where}.")
            plane, mode = result.gradient, "gradient"
        else:
            self.say(f"{result.loss} = {result.value:.4g}{where}; layer shows the {_MODES[mode]}.")
        if image not in self.viewer.layers:
            return None
        data = plane if result.index is None else np.zeros(_layers.spatial_shape(image), np.float32)
        if result.index is not None:
            data[result.index] = plane
        high = float(np.percentile(plane, 99.5))
        low = float(min(plane.min(), 0.0))
        limits = (low, high if high > low else low + 1e-12)
        name = _layers.layer_name(image.name, checkpoint, f"{result.loss} {'gradient' if mode == 'gradient' else 'term'}")
        key = _layers.source_key(image)
        tag = {"source": key, "checkpoint": checkpoint, "role": LOSS_MAP_ROLE,
               "run": {"loss": result.loss, "mode": mode, "value": result.value, "index": result.index}}
        layer = _layers.find(self.viewer, key, checkpoint, LOSS_MAP_ROLE)
        if layer is not None and tuple(layer.data.shape) == data.shape:
            layer.data = data
            layer.name = _layers.free_name(self.viewer, name, owner=layer)
            layer.metadata = {**layer.metadata, _layers.TAG: tag}
            layer.contrast_limits = limits
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        layer = Image(data, name=_layers.free_name(self.viewer, name), metadata={_layers.TAG: tag},
                      colormap=LOSS_MAP_COLORMAP, blending="additive", contrast_limits=limits, opacity=0.9,
                      **_layers.geometry(image))
        self.viewer.layers.append(layer)
        return layer


class ResponsePage(_Page):
    """Loss response plots for the ticked losses, side by side."""

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(viewer, inputs, parent)
        self.losses = QListWidget()
        self.losses.setMaximumHeight(140)
        for name in losses.available():
            item = QListWidgetItem(f"{losses.info(name).title} ({name})")
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setToolTip(losses.info(name).summary)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in DEFAULT_RESPONSE_LOSSES else Qt.CheckState.Unchecked)
            self.losses.addItem(item)
        self.context = QComboBox()
        self.context.addItem("pixel in a 32x32 image with a tumour disc", "image")
        self.context.addItem("pixel alone (1x1 image)", "pixel")
        self.button = QPushButton("Plot")
        self.button.setToolTip("Loss and dL/dp against one pixel's probability; loss against an eroded/dilated mask "
                               "around the ground truth of the current slice")
        self.button.clicked.connect(self.plot)
        self.canvas = _canvas(400, 560)
        form = QFormLayout()
        form.addRow("Context", self.context)
        layout = QVBoxLayout(self)
        layout.addWidget(self.losses)
        layout.addLayout(form)
        layout.addWidget(self.button)
        layout.addWidget(self.status)
        layout.addWidget(_scrolled(self.canvas), 1)

    def checked(self) -> list[str]:
        """The ticked loss names, in catalogue order."""
        items = (self.losses.item(i) for i in range(self.losses.count()))
        return [it.data(Qt.ItemDataRole.UserRole) for it in items if it.checkState() == Qt.CheckState.Checked]

    def set_checked(self, names: list[str]) -> None:
        """Tick exactly ``names``."""
        for i in range(self.losses.count()):
            item = self.losses.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.data(Qt.ItemDataRole.UserRole) in names
                               else Qt.CheckState.Unchecked)

    def _size_truth(self) -> tuple[np.ndarray, tuple[float, float], str]:
        image, truth = self.inputs.image(), self.truth()
        if image is not None and truth is not None:
            index, problem = current_index(self.viewer, image)
            plane = truth if index is None else (truth[index] if problem is None else None)
            if plane is not None and plane.any():
                where = "" if index is None else f", slice {index}"
                return plane, tuple(float(s) for s in image.scale[-2:]), f"ground truth of '{image.name}'{where}"
        rows, cols = np.mgrid[:_DISC_SIZE, :_DISC_SIZE]
        disc = (rows - _DISC_SIZE // 2) ** 2 + (cols - _DISC_SIZE // 2) ** 2 <= _DISC_RADIUS**2
        return disc, (1.0, 1.0), f"a disc of radius {_DISC_RADIUS} px (no ground truth on this slice)"

    def plot(self) -> None:
        """Compute the curves in a worker, then draw them."""
        from napari_segloss.interpret import response_curves, size_response

        names, context = self.checked(), self.context.currentData()
        if not names:
            self.say("Tick at least one loss.", error=True)
            return
        truth, spacing, described = self._size_truth()

        def run() -> Any:
            return response_curves(names, context=context), size_response(names, truth, spacing=spacing)

        self.say(f"Computing {len(names)} loss response(s)…")
        self.launch(run, lambda done: self.draw(*done, described), self.button)

    def draw(self, curves: Any, size: Any, described: str) -> None:
        """Draw the plots (main thread)."""
        from napari_segloss.interpret.plots import plot_response

        self.canvas.setFixedSize(230 * len(curves) + 70, 560)
        self.canvas.figure.set_size_inches((230 * len(curves) + 70) / 100, 5.6)
        plot_response(self.canvas.figure, curves, size)
        self.canvas.draw_idle()
        notes = [f"{name}: {c.note}" for name, c in curves.items() if c.note]
        self.say(" ".join([f"Bottom row: {described}.", *notes]), error=bool(notes))


class ConfidencePage(_Page):
    """Histograms of predicted probabilities on true-tumour and true-background pixels per checkpoint."""

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(viewer, inputs, parent)
        self.bins = QSpinBox()
        self.bins.setRange(5, 100)
        self.bins.setValue(20)
        self.button = QPushButton("Plot histograms")
        self.button.setToolTip("Every checkpoint with a probability layer for the image (whole image or volume)")
        self.button.clicked.connect(self.plot)
        self.canvas = _canvas(400, 260)
        form = QFormLayout()
        form.addRow("Bins", self.bins)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.button)
        layout.addWidget(self.status)
        layout.addWidget(_scrolled(self.canvas), 1)

    def plot(self) -> None:
        """Compute the histograms in a worker, then draw them."""
        from napari_segloss.interpret import confidence_histograms

        image, truth = self.inputs.image(), self.truth()
        found = probability_layers(self.viewer, image) if image is not None else {}
        if truth is None or not found:
            self.say("Needs the image's ground truth and at least one checkpoint run on it.", error=True)
            return
        probabilities = {name: np.asarray(layer.data) for name, layer in found.items()}
        bins = self.bins.value()

        def run() -> dict[str, Any]:
            return {name: confidence_histograms(p, truth, bins) for name, p in probabilities.items()}

        self.launch(run, self.draw, self.button)

    def draw(self, histograms: dict[str, Any]) -> None:
        """Draw one panel per checkpoint (main thread)."""
        from napari_segloss.interpret.plots import plot_confidence

        cols = min(3, len(histograms))
        rows = int(np.ceil(len(histograms) / cols))
        self.canvas.setFixedSize(260 * cols + 40, 230 * rows + 30)
        self.canvas.figure.set_size_inches((260 * cols + 40) / 100, (230 * rows + 30) / 100)
        plot_confidence(self.canvas.figure, histograms, columns=cols)
        self.canvas.draw_idle()
        self.say(f"{len(histograms)} checkpoint(s): a good model puts tumour pixels near 1 and background near 0.")


class FineTunePage(_Page):
    """Fine-tune a checkpoint on the image and its ground truth; save it as a new checkpoint.

    Signals: ``saved(str)`` with the new checkpoint's name; ``step_reported(object)`` carries a
    :class:`napari_segloss.interpret.FineTuneStep` from the worker thread to the curve.
    """

    saved = Signal(str)
    step_reported = Signal(object)

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(viewer, inputs, parent)
        self.checkpoint = CheckpointCombo()
        self.loss = _loss_combo()
        self.loss.setCurrentIndex(self.loss.findData("dice"))
        self.steps = QSpinBox()
        self.steps.setRange(1, 100_000)
        self.steps.setValue(50)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1e-1)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(5e-4)
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(4)
        self.synthetic = QCheckBox("also train on synthetic slices")
        self.synthetic.setToolTip("Half of every batch from the bundled synthetic training data (guards "
                                  "against forgetting; renders them once, then cached)")
        self.name = QLineEdit()
        self.name.setPlaceholderText("automatic: <checkpoint>+ft-<loss>-<time>")
        self.button = QPushButton("Fine-tune")
        self.button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.canvas = _canvas(380, 200)
        form = QFormLayout()
        form.addRow("Start from", self.checkpoint)
        form.addRow("Loss", self.loss)
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("Batch", self.batch)
        form.addRow("", self.synthetic)
        form.addRow("Save as", self.name)
        buttons = QHBoxLayout()
        buttons.addWidget(self.button, 1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.canvas)
        layout.addStretch(1)
        self._cancel = threading.Event()
        self.curve: dict[str, list] = {"steps": [], "losses": [], "dice_steps": [], "dice": []}
        self.step_reported.connect(self._on_step)

    def start(self) -> None:
        """Fine-tune in a worker on the image and ground truth of the inputs panel."""
        from napari_segloss.interpret import FineTuneCancelled, fine_tune

        image, truth, info = self.inputs.image(), self.truth(), self.checkpoint.current_info()
        if image is None or truth is None or info is None:
            self.say("Needs an image, its ground truth (same shape) and a checkpoint to start from.", error=True)
            return
        grey = _grey(image)
        options = dict(loss=self.loss.currentData(), steps=self.steps.value(), lr=self.lr.value(),
                       batch=self.batch.value(), include_synthetic=self.synthetic.isChecked(),
                       spacing=tuple(float(s) for s in image.scale[-2:]), device=self.inputs.device(),
                       name=self.name.text().strip() or None)
        self._cancel = threading.Event()
        self.curve = {"steps": [], "losses": [], "dice_steps": [], "dice": []}
        self.cancel_button.setEnabled(True)

        def run() -> Any:
            try:
                return fine_tune(info.path, grey, truth, progress=self.step_reported.emit,
                                 cancel=self._cancel.is_set, **options)
            except FineTuneCancelled:  # an answer, not an error (a returned exception would be raised)
                return None

        self.say(f"Fine-tuning {info.name} with {options['loss']} on '{image.name}'…")
        self.launch(run, self._on_done, self.button)
        self.worker.finished.connect(lambda: self.cancel_button.setEnabled(False))

    def cancel(self) -> None:
        """Stop before the next step (nothing is saved)."""
        self._cancel.set()
        self.say("Cancelling…")

    def _on_step(self, step: Any) -> None:
        self.curve["steps"].append(step.step)
        self.curve["losses"].append(step.loss)
        if step.dice is not None:
            self.curve["dice_steps"].append(step.step)
            self.curve["dice"].append(step.dice)
        if step.dice is not None or step.step == 1:
            from napari_segloss.interpret.plots import plot_fine_tune

            plot_fine_tune(self.canvas.figure, **self.curve)
            self.canvas.draw_idle()
            self.say(f"Step {step.step}/{step.steps}: loss {step.loss:.4f}"
                     + ("" if step.dice is None else f", Dice on this image {step.dice:.3f}"))

    def _on_done(self, result: Any) -> None:
        from napari_segloss.interpret import save_fine_tuned

        if result is None:
            self.say(f"Cancelled after {len(self.curve['steps'])} step(s); nothing saved.")
            return
        model, card = result
        try:
            path = save_fine_tuned(model, card)
        except (OSError, ValueError) as exc:
            self.say(f"Could not save: {exc}", error=True)
            return
        tuned = card.recipe["fine_tune"]
        self.say(f"Saved '{card.name}' in {path.parent} (Dice on this image {tuned['fit_dice_before']:.3f} → "
                 f"{tuned['fit_dice_after']:.3f}); it is now in the checkpoint pickers.")
        self.saved.emit(card.name)

    def set_checkpoints(self, infos: list[CheckpointInfo]) -> None:
        """Offer ``infos`` as starting points."""
        self.checkpoint.set_checkpoints(infos)


class InterpretTab(QWidget):
    """The Interpret tab: loss map, response, confidence, calibration, landscape and fine-tune pages.

    Args:
        viewer: the napari viewer.
        inputs: the widget's shared inputs panel (``image()``, ``truth_mask()``, ``device()``,
            ``changed`` signal).
    Signals:
        checkpoint_saved(str): a fine-tuned checkpoint was saved (refresh the pickers).
    """

    checkpoint_saved = Signal(str)

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_map = LossMapPage(viewer, inputs)
        self.response = ResponsePage(viewer, inputs)
        self.confidence = ConfidencePage(viewer, inputs)
        self.fine_tune = FineTunePage(viewer, inputs)
        from napari_segloss.napari._calibration_page import CalibrationPage  # (they import this module)
        from napari_segloss.napari._landscape_page import LandscapePage

        self.calibration = CalibrationPage(viewer, inputs)
        self.landscape = LandscapePage(viewer, inputs)
        self.pages = QTabWidget()
        self.pages.addTab(self.loss_map, "Loss map")
        self.pages.addTab(self.response, "Response")
        self.pages.addTab(self.confidence, "Confidence")
        self.pages.addTab(self.calibration, "Calibration")
        self.pages.addTab(self.landscape, "Landscape")
        self.pages.addTab(self.fine_tune, "Fine-tune")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pages)
        self.fine_tune.saved.connect(self._on_saved)
        self.set_checkpoints(list_checkpoints())

    def set_checkpoints(self, infos: list[CheckpointInfo]) -> None:
        """Offer ``infos`` in the fine-tune and landscape pickers."""
        self.fine_tune.set_checkpoints(infos)
        self.landscape.set_checkpoints(infos)

    def _on_saved(self, name: str) -> None:
        self.set_checkpoints(list_checkpoints())
        self.checkpoint_saved.emit(name)
