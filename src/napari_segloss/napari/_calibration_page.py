"""The Interpret tab's "Calibration" page: does a checkpoint's 0.7 mean 70 %?

For a checkpoint that was run on the selected image (its probability layer, found by the widget's
tag): the reliability diagram of the image's pixels against the ground truth (when there is one;
before and after the card's temperature), next to the card's own test-set diagram
(``ModelCard.calibration``, :mod:`napari_segloss.interpret.calibration`). A check box switches
every heatmap layer to calibrated probabilities ``sigmoid(logit / T)``; the masks do not move
(dividing a logit by ``T > 0`` keeps its sign, so the 0.5 threshold gives the same mask).
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QPushButton, QVBoxLayout, QWidget

from napari_segloss.checkpoints import CheckpointError, list_checkpoints
from napari_segloss.interpret.calibration import Reliability, reliability, rescale_probability
from napari_segloss.napari._interpret_tab import _canvas, _Page, _scrolled, offer_probability_layers, probability_layers

CALIBRATED_TEXT = ("Heatmaps show calibrated probabilities sigmoid(logit / T) (T from the checkpoint's card); "
                   "the mask at threshold 0.5 is unchanged, since dividing a logit by T > 0 keeps its sign.")


def card_calibration(name: str) -> dict[str, Any]:
    """The ``calibration`` dict of the registry checkpoint ``name`` (empty when unknown or unmeasured)."""
    try:
        info = next((i for i in list_checkpoints() if i.name == name), None)
    except CheckpointError:
        return {}
    return dict(info.card.calibration) if info is not None else {}


class CalibrationPage(_Page):
    """Reliability diagrams of the open image and of the card's test data; calibrated heatmaps.

    Signals: ``display_changed`` when the calibrated-heatmap box is toggled (the widget redraws
    its probability layers through :meth:`shown_probability`).
    """

    display_changed = Signal()

    def __init__(self, viewer: napari.Viewer, inputs: Any, parent: QWidget | None = None) -> None:
        super().__init__(viewer, inputs, parent)
        self.prediction = QComboBox()
        self.prediction.setToolTip("A checkpoint's probability layer for the image (run it first)")
        self.button = QPushButton("Plot reliability")
        self.button.setToolTip("Equal-width bins (15): mean predicted probability against the observed tumour fraction")
        self.button.clicked.connect(self.plot)
        self.calibrated = QCheckBox("Calibrated heatmaps (temperature)")
        self.calibrated.setToolTip(CALIBRATED_TEXT)
        self.calibrated.toggled.connect(self._on_toggled)
        self.canvas = _canvas(520, 270)
        form = QFormLayout()
        form.addRow("Prediction", self.prediction)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.button)
        layout.addWidget(self.calibrated)
        layout.addWidget(self.status)
        layout.addWidget(_scrolled(self.canvas), 1)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        inputs.changed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: object) -> None:
        """Offer the probability layers of the selected image."""
        offer_probability_layers(self.prediction, self.viewer, self.inputs.image())

    def shown_probability(self, probability: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
        """What a heatmap layer shows: ``probability`` or, with the box ticked and a temperature
        in ``calibration`` (a card's), the calibrated probability."""
        temperature = calibration.get("temperature")
        if self.calibrated.isChecked() and temperature:
            return rescale_probability(probability, float(temperature))
        return probability

    def _on_toggled(self, on: bool) -> None:
        self.say(CALIBRATED_TEXT if on else "Heatmaps show the checkpoints' own probabilities.")
        self.display_changed.emit()

    def plot(self) -> None:
        """Compute the image's reliability diagram in a worker, then draw it beside the card's."""
        image, name = self.inputs.image(), self.prediction.currentText()
        layer = probability_layers(self.viewer, image).get(name) if image is not None else None
        if layer is None:
            self.say("Run a checkpoint on the image first (Run or Compare tab).", error=True)
            return
        calibration = card_calibration(name)
        truth = self.truth()
        shown = np.asarray(layer.data)
        temperature = calibration.get("temperature")
        undo = 1.0 / temperature if (self.calibrated.isChecked() and temperature) else None

        def run() -> dict[str, Reliability]:
            if truth is None:
                return {}
            raw = shown if undo is None else rescale_probability(shown, undo)  # the layer shows calibrated values
            curves = {"as trained": reliability(raw, truth)}
            if temperature:
                curves[f"calibrated (T={temperature:.2f})"] = reliability(rescale_probability(raw, temperature), truth)
            return curves

        self.say(f"Computing the reliability of {name} on '{image.name}'…")
        self.launch(run, lambda curves: self.draw(name, image.name, curves, calibration), self.button)

    def draw(self, name: str, image_name: str, curves: dict[str, Reliability], calibration: dict[str, Any]) -> None:
        """Two panels: the image (left) and the card's test data (right) (main thread)."""
        from napari_segloss.interpret.plots import plot_reliability

        fig = self.canvas.figure
        fig.clear()
        left, right = fig.subplots(1, 2)
        plot_reliability(left, curves, f"{image_name}: pixels")
        if not curves:
            left.text(0.5, 0.5, "no ground truth", ha="center", va="center", fontsize=8, color="0.4")
        stored = calibration.get("pixels", {})
        card_curves = {label: Reliability.from_dict(stored[when]["reliability"]["width"])
                       for when, label in (("before", "as trained"), ("after", "calibrated")) if when in stored}
        plot_reliability(right, card_curves, f"{name}: its test set (card)")
        if not card_curves:
            right.text(0.5, 0.5, "not measured\n(scripts/make_calibration.py)", ha="center", va="center",
                       fontsize=8, color="0.4")
        self.canvas.draw_idle()
        t = calibration.get("temperature")
        self.say(f"{name}: temperature {t:.2f} ({'over' if t > 1 else 'under'}-confident on its validation data)."
                 if t else f"{name}: its card has no calibration.")
