"""The "Batch" tab of the Loss explorer (placeholder until the batch runner's tab lands)."""

from __future__ import annotations

import napari
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class BatchTab(QWidget):
    """Placeholder tab: says where batch runs live for now (the ``napari-segloss batch`` command)."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        label = QLabel("Batch runs over folders of scans: use the <code>napari-segloss batch</code> command for now.")
        label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(label)
        layout.addStretch(1)
