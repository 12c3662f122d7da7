"""Interpretability: see what a loss sees (headless; no Qt or napari import).

* :mod:`~napari_segloss.interpret.maps` -- per-pixel loss maps (:func:`loss_map`,
  :func:`checkpoint_loss_map`): ``|dL/dlogit|`` by autograd and the per-pixel term;
* :mod:`~napari_segloss.interpret.response` -- loss and ``dL/dp`` against one pixel's probability
  (:func:`response_curves`) and against over-/under-segmentation (:func:`size_response`);
* :mod:`~napari_segloss.interpret.confidence` -- predicted-probability histograms on true tumour
  and true background (:func:`confidence_histograms`);
* :mod:`~napari_segloss.interpret.finetune` -- fine-tune a checkpoint on user images and masks
  (:func:`fine_tune`) and save it where the registry lists it (:func:`save_fine_tuned`);
* :mod:`~napari_segloss.interpret.calibration` -- reliability diagrams, ECE / adaptive ECE / MCE /
  Brier / NLL, post-hoc temperature (:func:`fit_temperature`, :func:`calibration_summary`: the
  ``ModelCard.calibration`` dict);
* :mod:`~napari_segloss.interpret.landscape` -- loss landscapes along filter-normalised random
  directions (:func:`loss_landscape`, :func:`checkpoint_landscape`);
* :mod:`~napari_segloss.interpret.plots` -- the matplotlib figures of the above.
"""

from napari_segloss.interpret.calibration import (
    Reliability,
    calibration_metrics,
    calibration_summary,
    fit_temperature,
    reliability,
)
from napari_segloss.interpret.confidence import ConfidenceHistogram, confidence_histograms
from napari_segloss.interpret.finetune import (
    FineTuneCancelled,
    FineTuneStep,
    fine_tune,
    save_fine_tuned,
    user_checkpoint_dir,
)
from napari_segloss.interpret.maps import LossMap, checkpoint_loss_map, decomposes, loss_map
from napari_segloss.interpret.landscape import Landscape, LandscapeCancelled, checkpoint_landscape, loss_landscape
from napari_segloss.interpret.response import ResponseCurve, SizeResponse, response_curves, size_response

__all__ = [
    "ConfidenceHistogram", "FineTuneCancelled", "FineTuneStep", "Landscape", "LandscapeCancelled", "LossMap",
    "Reliability", "ResponseCurve", "SizeResponse", "calibration_metrics", "calibration_summary",
    "checkpoint_landscape", "checkpoint_loss_map", "confidence_histograms", "decomposes", "fine_tune",
    "fit_temperature", "loss_landscape", "loss_map", "reliability", "response_curves", "save_fine_tuned",
    "size_response", "user_checkpoint_dir",
]
