"""Layer pickers that follow the viewer: refreshed when layers are added, removed, moved or renamed.

A small QComboBox rather than magicgui's layer combo box because the pickers need filters that
an annotation cannot express: the image picker hides the widget's own result layers, and the
ground-truth picker takes a Labels *or* a grey Image layer, with a "(none)" entry.
"""

from __future__ import annotations

from collections.abc import Callable

import napari
from napari.layers import Image, Labels, Layer
from qtpy.QtWidgets import QComboBox, QWidget

from napari_segloss.napari._layers import is_result


def is_input_image(layer: Layer) -> bool:
    """A 2D or 3D Image layer (grey or RGB) that is not one of the widget's results."""
    return isinstance(layer, Image) and not is_result(layer) and layer.ndim in (2, 3)


def is_truth_candidate(layer: Layer) -> bool:
    """A Labels layer or a grey Image layer (binarised > 0) that is not one of the widget's results."""
    if is_result(layer):
        return False
    return isinstance(layer, Labels) or (isinstance(layer, Image) and not layer.rgb)


class LayerPicker(QComboBox):
    """Combo box of the viewer's layers accepted by ``accept``, top layer first.

    Args:
        viewer: the viewer to follow.
        accept: which layers to offer.
        none_text: text of a leading "no layer" entry, or None for no such entry.
    """

    def __init__(self, viewer: napari.Viewer, accept: Callable[[Layer], bool], *, none_text: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._accept = accept
        self._none_text = none_text
        self._layers: list[Layer | None] = []
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._on_removed)
        events.moved.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: object) -> None:
        """Rebuild the entries; the selected layer stays selected while it exists."""
        keep = self.current_layer()
        layers: list[Layer | None] = [None] if self._none_text is not None else []
        layers += [layer for layer in reversed(self._viewer.layers) if self._accept(layer)]
        self.blockSignals(True)
        self.clear()
        self._layers = layers
        self.addItems([self._none_text if layer is None else layer.name for layer in layers])
        self.setCurrentIndex(layers.index(keep) if keep in layers else (0 if layers else -1))
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def current_layer(self) -> Layer | None:
        """The selected layer, or None (no layers, or the "none" entry)."""
        index = self.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def select(self, layer: Layer | None) -> None:
        """Select ``layer`` (None selects the "none" entry); ValueError if it is not offered."""
        if layer not in self._layers:
            raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not offered by this picker")
        self.setCurrentIndex(self._layers.index(layer))

    def _on_inserted(self, event: object) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()

    def _on_removed(self, event: object) -> None:
        event.value.events.name.disconnect(self.refresh)
        self.refresh()
