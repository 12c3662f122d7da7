"""The widget's results and the layers that show them: one :class:`RunResult` per (source layer,
checkpoint), its probability / prediction / contour / difference layers (created or updated in
place, see :mod:`napari_segloss.napari._layers`), and the agreement, disagreement and uncertainty
layers of a source's last comparison."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import napari
import numpy as np
from napari.layers import Image, Layer

from napari_segloss.derived import Derived, agreement, disagreement
from napari_segloss.napari import _layers
from napari_segloss.napari._results import RunResult
from napari_segloss.overlays import heatmap, uncertainty


class ResultLayers:
    """Results by ``(source key, checkpoint)`` and their layers in ``viewer``.

    Args:
        viewer: the napari viewer.
        shown_probability: the heatmap's values for a result (raw or calibrated probabilities,
            the Interpret tab's Calibration page decides), float32 of the result's shape.
    Attributes:
        results: ``(source key, checkpoint) -> RunResult``.
        compare_sets: source key -> the checkpoint names of its last comparison, in run order.
    """

    def __init__(self, viewer: napari.Viewer, shown_probability: Callable[[RunResult], np.ndarray]) -> None:
        self.viewer = viewer
        self.shown_probability = shown_probability
        self.results: dict[tuple[str, str], RunResult] = {}
        self.compare_sets: dict[str, list[str]] = {}

    def add(self, source: Image, result: RunResult) -> None:
        """Keep ``result`` (replacing that checkpoint's earlier one on ``source``) and show it."""
        self.results[(result.source, result.checkpoint)] = result
        self.show(source, result)

    def show(self, source: Image, result: RunResult) -> None:
        """Create or update ``result``'s layers (the difference layer only with a ground truth)."""
        data = {
            "probability": heatmap(self.shown_probability(result)),
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

    def redraw(self) -> None:
        """Redraw every result's layers (e.g. the heatmaps switched between raw and calibrated)."""
        for result in list(self.results.values()):
            source = self.source_layer(result.source)
            if source is not None:
                self.show(source, result)

    def set_compared(self, source: Image, names: list[str], threshold: float) -> None:
        """Record ``names`` as ``source``'s last comparison and show its agreement layers."""
        self.compare_sets[_layers.source_key(source)] = list(names)
        self.show_agreement(source, threshold)

    def compared(self, key: str) -> list[RunResult]:
        """The results of source ``key``'s last comparison that are still kept, in run order."""
        return [self.results[(key, name)] for name in self.compare_sets.get(key, []) if (key, name) in self.results]

    def show_agreement(self, source: Image, threshold: float) -> None:
        """Create or update the agreement and disagreement layers (and the uncertainty layer for
        two or more) of ``source``'s last comparison."""
        key = _layers.source_key(source)
        compared = self.compared(key)
        if not compared:
            return
        fraction = agreement([r.derived.mask for r in compared])
        shown = [("agreement", fraction), ("disagreement", disagreement(fraction))]
        if len(compared) > 1:
            shown.append((_layers.UNCERTAINTY_ROLE, uncertainty([r.probability for r in compared])))
        for role, data in shown:
            _layers.upsert(self.viewer, source, checkpoint=_layers.ALL_CHECKPOINTS, role=role,
                           name=_layers.layer_name(source.name, None, role), data=data, has_truth=False,
                           run={"checkpoints": self.compare_sets[key], "threshold": threshold})

    def pending(self, threshold: float) -> list[RunResult]:
        """The results not derived at ``threshold``."""
        return [r for r in self.results.values() if r.derived.threshold != threshold]

    def update(self, done: Iterable[tuple[RunResult, Derived]], threshold: float) -> None:
        """Take the re-derived arrays of results still kept, redraw their layers and the
        agreement layers of their sources (``threshold``: the one they were derived at)."""
        sources = set()
        for result, derived in done:
            if self.results.get((result.source, result.checkpoint)) is not result:
                continue  # replaced by a new run or forgotten meanwhile
            result.derived = derived
            result.run = {**result.run, "threshold": derived.threshold}
            source = self.source_layer(result.source)
            if source is not None:
                self.show(source, result)
                sources.add(result.source)
        for key in sources & set(self.compare_sets):
            self.show_agreement(self.source_layer(key), threshold)

    def source_layer(self, key: str) -> Image | None:
        """The layer whose :func:`~napari_segloss.napari._layers.source_key` is ``key``, if still in the viewer."""
        return next((layer for layer in self.viewer.layers if _layers.source_key(layer) == key), None)

    def forget(self, layer: Layer) -> None:
        """Drop the results and the comparison of a removed source layer."""
        key = _layers.source_key(layer)
        for pair in [pair for pair in self.results if pair[0] == key]:
            del self.results[pair]
        self.compare_sets.pop(key, None)
