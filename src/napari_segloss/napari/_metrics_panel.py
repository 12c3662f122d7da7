"""Metrics panel: every metric of one result (whole image/volume and current slice), the legend of
the difference map, copy to clipboard and CSV export."""

from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtGui import QColor, QPixmap
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.io.writers import write_csv
from napari_segloss.metrics import REGISTRY, format_value
from napari_segloss.napari._results import RunResult, csv_row
from napari_segloss.overlays import DIFFERENCE_COLORS, DIFFERENCE_NAMES
from napari_segloss.spacing import layer_spacing


def _swatch(rgba: tuple[float, ...]) -> QLabel:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor.fromRgbF(*rgba))
    label = QLabel()
    label.setPixmap(pixmap)
    return label


def difference_legend() -> QWidget:
    """A row of colour swatches naming the difference map's labels (TP, FP, FN)."""
    legend = QWidget()
    row = QHBoxLayout(legend)
    row.setContentsMargins(0, 0, 0, 0)
    for value, rgba in DIFFERENCE_COLORS.items():
        row.addWidget(_swatch(rgba))
        row.addWidget(QLabel(DIFFERENCE_NAMES[value]))
    row.addStretch(1)
    return legend


class MetricsPanel(QWidget):
    """Table of every metric of :data:`~napari_segloss.metrics.REGISTRY` (its title and its
    formatted value) for the whole image or volume and, for 3D, the slice the viewer shows. NaN
    shows as "n/a"; with an unknown pixel size (a layer scale of 1) sizes are in px, px², voxels."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("Run a checkpoint to see its metrics.")
        self.title.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["metric", "value"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the table to the clipboard (tab-separated)")
        self.copy_button.clicked.connect(self.copy)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Save the metrics, the threshold and what was run as CSV")
        self.export_button.clicked.connect(self._ask_export)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)
        layout.addWidget(difference_legend())
        layout.addLayout(buttons)
        self._result: RunResult | None = None
        self._slice: tuple[str, dict] | None = None
        self._set_enabled(False)

    def show_result(self, result: RunResult | None, slice_values: tuple[str, dict] | None = None) -> None:
        """Show ``result``'s metrics (None clears); ``slice_values`` is ``(label, metrics)`` of the
        current slice of a 3D result."""
        self._result, self._slice = result, slice_values
        if result is None:
            self.title.setText("Run a checkpoint to see its metrics.")
            self.table.setRowCount(0)
            self._set_enabled(False)
            return
        values = result.derived.metrics
        scope = "volume" if result.ndim == 3 else "image"
        if values is None:
            self.title.setText(f"<b>{result.checkpoint}</b> on {result.image_name}: choose a ground-truth "
                               "layer to see metrics.")
            self.table.setRowCount(0)
            self._set_enabled(False)
            return
        loss = "" if result.card.loss == result.checkpoint else f" ({result.card.loss})"
        known = layer_spacing(result.spacing) is not None
        units = "" if known else " (pixel size unknown: distances and sizes in pixels)"
        scale = result.run.get("scaling_note")
        self.title.setText(f"<b>{result.checkpoint}</b>{loss} on {result.image_name}, "
                           f"threshold {result.derived.threshold:.2f}{units}" + (f"<br>Scale: {scale}" if scale else ""))
        headers = ["metric", scope] + ([slice_values[0]] if slice_values else [])
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(REGISTRY))
        for row, (key, spec) in enumerate(REGISTRY.items()):
            cells = [spec.title, format_value(key, values.get(key), ndim=result.ndim, spacing_known=known)]
            if slice_values:
                cells.append(format_value(key, slice_values[1].get(key), ndim=2, spacing_known=known))
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self._set_enabled(True)

    def text(self) -> str:
        """The table as tab-separated text with a header line (what Copy puts on the clipboard)."""
        if not self.table.rowCount():
            return ""
        columns = range(self.table.columnCount())
        lines = ["\t".join(self.table.horizontalHeaderItem(c).text() for c in columns)]
        for row in range(self.table.rowCount()):
            lines.append("\t".join(self.table.item(row, c).text() for c in columns))
        return "\n".join(lines)

    def copy(self) -> None:
        """Put :meth:`text` on the clipboard."""
        QApplication.clipboard().setText(self.text())

    def rows(self) -> list[dict]:
        """CSV rows: the whole image/volume, plus the current slice for 3D (raw values, not rounded)."""
        result = self._result
        if result is None or result.derived.metrics is None:
            return []
        rows = [csv_row(result, result.derived.metrics, "volume" if result.ndim == 3 else "image")]
        if self._slice is not None:
            rows.append(csv_row(result, self._slice[1], self._slice[0]))
        return rows

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write :meth:`rows` to ``path`` (replacing it) through :func:`napari_segloss.io.writers.write_csv`."""
        return write_csv(path, self.rows(), overwrite=True)

    def _ask_export(self) -> None:
        name = f"{self._result.image_name}_{self._result.checkpoint}_metrics.csv" if self._result else "metrics.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", name, "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def _set_enabled(self, on: bool) -> None:
        self.copy_button.setEnabled(on)
        self.export_button.setEnabled(on)
