"""Training: one recipe for every loss, the bundled checkpoints and their honest evaluation.

* :mod:`~napari_segloss.train.data` -- cached synthetic splits, folder datasets, augmentation;
* :mod:`~napari_segloss.train.extras` -- the one interface that feeds each loss its extra inputs;
* :mod:`~napari_segloss.train.loop` -- :func:`train` (resumable, DDP under torchrun);
* :mod:`~napari_segloss.train.evaluate` -- test metrics, bootstrap intervals, paired comparisons;
* :mod:`~napari_segloss.train.results` -- ``docs/results.md`` and its figures from the cards.

Headless: nothing here imports Qt or napari.
"""

from napari_segloss.train.data import Augment, SliceSet, Splits, VolumeSet, folder_splits, synthetic_splits
from napari_segloss.train.extras import Extras
from napari_segloss.train.loop import Recipe, TrainResult, train

__all__ = [
    "Augment", "Extras", "Recipe", "SliceSet", "Splits", "TrainResult", "VolumeSet",
    "folder_splits", "synthetic_splits", "train",
]
