"""The inputs shared by the Run and Compare tabs: image, ground truth, device and threshold,
and the check that they fit together."""

from __future__ import annotations

import napari
import numpy as np
import torch
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QStandardItemModel
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QSlider, QWidget

from napari_segloss.models import available_devices, resolve_device
from napari_segloss.napari._layer_pickers import LayerPicker, is_input_image, is_truth_candidate
from napari_segloss.napari._layers import spatial_shape

THRESHOLD_STEPS = 100  # slider resolution: 0.01


def device_note() -> str:
    """What hardware was found, e.g. ``"found: CUDA (NVIDIA H100), CPU"`` or ``"found: CPU only"``."""
    found = []
    if torch.cuda.is_available():
        found.append(f"CUDA ({torch.cuda.get_device_name(0)})")
    if torch.backends.mps.is_available():
        found.append("Apple MPS")
    return "found: " + (", ".join([*found, "CPU"]) if found else "CPU only (no CUDA GPU)")


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


class InputsPanel(QWidget):
    """Image picker (2D/3D, grey/RGB), optional ground truth (Labels or Image, > 0), device and
    threshold. Signals: ``changed`` (anything but the threshold), ``threshold_changed(float)``."""

    changed = Signal()
    threshold_changed = Signal(float)

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.image_picker = LayerPicker(viewer, is_input_image)
        self.image_picker.setToolTip("The scan to segment: a 2D or 3D Image layer, grey or RGB")
        self.truth_picker = LayerPicker(viewer, is_truth_candidate, none_text="(none)")
        self.truth_picker.setToolTip("Optional ground truth: a Labels or grey Image layer, tumour = values > 0")
        self.device_combo = QComboBox()
        self.device_combo.setToolTip("Where the network runs; auto picks CUDA, then Apple MPS, then the CPU")
        self._fill_devices()
        self.device_label = QLabel(device_note())
        self.device_label.setStyleSheet("color: gray")
        self.device_label.setWordWrap(True)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, THRESHOLD_STEPS)
        self.slider.setValue(THRESHOLD_STEPS // 2)
        self.slider.setToolTip("Probability above which a pixel counts as tumour (no re-run needed)")
        self.threshold_label = QLabel()
        self.threshold_label.setMinimumWidth(32)
        self.resample_check = QCheckBox("Bring the scan to the checkpoint's training scale")
        self.resample_check.setChecked(True)
        self.resample_check.setToolTip(
            "On (default): the network sees the scan at the scale it was trained at, and the result is mapped "
            "back to the layer's grid. With a known pixel size (the layer's scale, from DICOM/NIfTI/TIFF) the "
            "scan is resampled to the checkpoint's training pixel size; with an unknown one (scale 1, e.g. a "
            "PNG) it is resized to the checkpoint's training image size. Off: run on the layer's own grid."
        )
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_combo)
        device_row.addWidget(self.device_label, 1)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.slider, 1)
        threshold_row.addWidget(self.threshold_label)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Image", self.image_picker)
        form.addRow("Ground truth", self.truth_picker)
        form.addRow("Device", device_row)
        form.addRow("Threshold", threshold_row)
        form.addRow("", self.resample_check)
        self.image_picker.currentIndexChanged.connect(self.changed)
        self.truth_picker.currentIndexChanged.connect(self.changed)
        self.device_combo.currentIndexChanged.connect(self.changed)
        self.slider.valueChanged.connect(self._on_slider)
        viewer.layers.events.inserted.connect(self._on_inserted)
        self._on_slider(self.slider.value())
        self._suggest_truth(list(reversed(viewer.layers)))

    def _fill_devices(self) -> None:
        choices = available_devices()
        self.device_combo.addItem(f"auto ({resolve_device('auto')})", "auto")
        for name in choices[1:]:
            self.device_combo.addItem(name, name)
        if "cuda" not in choices:
            self.device_combo.insertItem(1, "cuda (not found)", "cuda")
            model = self.device_combo.model()
            if isinstance(model, QStandardItemModel):
                model.item(1).setEnabled(False)

    def image(self) -> Image | None:
        """The selected image layer, or None."""
        return self.image_picker.current_layer()

    def truth(self) -> Layer | None:
        """The selected ground-truth layer, or None."""
        return self.truth_picker.current_layer()

    def device(self) -> str:
        """The selected device name (``auto``, ``cpu``, ``cuda``, ...)."""
        return self.device_combo.currentData()

    def resample(self) -> bool:
        """Whether to bring the scan to the checkpoint's training scale (``predict(resample=True)``)."""
        return self.resample_check.isChecked()

    def threshold(self) -> float:
        """The threshold in [0, 1]."""
        return self.slider.value() / THRESHOLD_STEPS

    def set_threshold(self, value: float) -> None:
        """Move the slider to ``value`` (rounded to 0.01)."""
        self.slider.setValue(round(value * THRESHOLD_STEPS))

    def problem(self) -> str | None:
        """Why the inputs cannot be run, in one sentence, or None when they can."""
        image = self.image()
        if image is None:
            return ("No image layer: open a scan (File > Open or drag and drop) or a sample "
                    "(File > Open Sample > napari-segloss).")
        truth = self.truth()
        if truth is not None:
            want, have = spatial_shape(image), tuple(int(s) for s in truth.data.shape)
            if want != have:
                return (f"Ground truth '{truth.name}' is {_shape_text(have)} but image '{image.name}' is "
                        f"{_shape_text(want)}: pick a ground truth of the same shape, or (none).")
        return None

    def truth_mask(self) -> np.ndarray | None:
        """The ground truth as a bool mask (values > 0), or None."""
        truth = self.truth()
        return None if truth is None else np.asarray(truth.data) > 0

    def _on_slider(self, value: int) -> None:
        self.threshold_label.setText(f"{value / THRESHOLD_STEPS:.2f}")
        self.threshold_changed.emit(value / THRESHOLD_STEPS)

    def _on_inserted(self, event: object) -> None:
        self._suggest_truth([event.value])  # type: ignore[attr-defined]

    def _suggest_truth(self, layers: list[Layer]) -> None:
        """When no ground truth is chosen, pick the first of ``layers`` that is a Labels layer of
        the image's shape (the sample scan's mask, a dropped ``*_mask.png``)."""
        image = self.image()
        self.truth_picker.refresh()  # napari calls later-connected handlers first
        if self.truth() is not None or image is None:
            return
        for layer in layers:
            if isinstance(layer, Labels) and is_truth_candidate(layer) \
                    and tuple(layer.data.shape) == spatial_shape(image):
                self.truth_picker.select(layer)
                return
