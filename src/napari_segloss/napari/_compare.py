"""Compare mode: the "Compare" tab (check list, sortable comparison table, CSV export). The
side-by-side grid it switches on is :mod:`napari_segloss.napari._grid`."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.io.writers import write_csv
from napari_segloss.metrics import METRIC_KEYS, format_value
from napari_segloss.napari._checkpoint_pickers import CheckpointChecklist
from napari_segloss.napari._results import RunResult, csv_row
from napari_segloss.spacing import layer_spacing

_SORT_ROLE = Qt.ItemDataRole.UserRole


class _SortableItem(QTableWidgetItem):
    """A cell that sorts by its numeric value (NaN last) and shows formatted text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(_SORT_ROLE), other.data(_SORT_ROLE)
        if isinstance(mine, float) and isinstance(theirs, float):
            if math.isnan(mine) or math.isnan(theirs):
                return not math.isnan(mine) and math.isnan(theirs)
            return mine < theirs
        return str(mine) < str(theirs)


class ComparisonTable(QTableWidget):
    """Rows = compared checkpoints, columns = checkpoint, loss, family and every metric (the
    registry as it is when results are shown: a metric registered after the table was built gets
    its column); click a header to sort. Values show as :func:`~napari_segloss.metrics.format_value` text."""

    FIXED = ("checkpoint", "loss", "family")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 0, parent)
        self._set_columns()
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.verticalHeader().setVisible(False)
        self.setSortingEnabled(True)
        self.sortItems(len(self.FIXED) + METRIC_KEYS.index("dice"), Qt.SortOrder.DescendingOrder)  # best first
        self.results: list[RunResult] = []

    def columns(self) -> list[str]:
        """The column keys: the fixed ones, then every registered metric."""
        return [*self.FIXED, *METRIC_KEYS]

    def _set_columns(self) -> None:
        keys = self.columns()
        if [self.horizontalHeaderItem(i).text() for i in range(self.columnCount())] != keys:
            self.setColumnCount(len(keys))
            self.setHorizontalHeaderLabels(keys)

    def set_results(self, results: Sequence[RunResult]) -> None:
        """Show one row per result (metrics at each result's current threshold)."""
        self.results = list(results)
        self.setSortingEnabled(False)
        self._set_columns()
        self.setRowCount(len(self.results))
        for row, result in enumerate(self.results):
            values = result.derived.metrics or {}
            cells: list[tuple[str, object]] = [(result.checkpoint, result.checkpoint), (result.card.loss, result.card.loss),
                                               (result.card.family, result.card.family)]
            for key in METRIC_KEYS:
                value = float(values.get(key, math.nan))
                cells.append((format_value(key, value, ndim=result.ndim,
                                           spacing_known=layer_spacing(result.spacing) is not None), value))
            for column, (text, sort_value) in enumerate(cells):
                item = _SortableItem(text)
                item.setData(_SORT_ROLE, sort_value)
                self.setItem(row, column, item)
        self.setSortingEnabled(True)
        self.resizeColumnsToContents()

    def column_values(self, key: str) -> list[str]:
        """The displayed text of column ``key`` from top to bottom (after sorting)."""
        column = self.columns().index(key)
        return [self.item(row, column).text() for row in range(self.rowCount())]

    def rows(self) -> list[dict]:
        """CSV rows, one per checkpoint in display order, raw (unrounded) values."""
        by_name = {result.checkpoint: result for result in self.results}
        ordered = [by_name[name] for name in self.column_values("checkpoint")]
        return [csv_row(result, result.derived.metrics or {}, "volume" if result.ndim == 3 else "image")
                for result in ordered]


class CompareTab(QWidget):
    """Tick checkpoints (or all), run them one at a time, see them side by side and in a table.

    Signals: ``run_requested`` (the Run button), ``grid_toggled(bool)`` (the side-by-side box).
    """

    run_requested = Signal()
    grid_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.checklist = CheckpointChecklist()
        self.run_button = QPushButton("Run comparison")
        self.run_button.setToolTip("Run every ticked checkpoint on the image, one after the other")
        self.run_button.clicked.connect(self.run_requested)
        self.grid_box = QCheckBox("Side by side (grid)")
        self.grid_box.setToolTip("Show the image under each checkpoint's result in a grid of views")
        self.grid_box.setChecked(True)
        self.grid_box.toggled.connect(self.grid_toggled)
        self.table = ComparisonTable()
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Save the comparison table (all metrics, raw values) as CSV")
        self.export_button.clicked.connect(self._ask_export)
        self.export_button.setEnabled(False)
        self.note = QLabel("Agreement layer: fraction of checkpoints that call a pixel tumour; "
                           "disagreement: where they differ; uncertainty (hidden, beside them in the layer "
                           "list): per-pixel standard deviation of their probabilities.")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: gray")
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.grid_box)
        bottom = QHBoxLayout()
        bottom.addWidget(self.note, 1)
        bottom.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.checklist, 1)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)

    def set_results(self, results: Sequence[RunResult]) -> None:
        """Fill the comparison table."""
        self.table.set_results(results)
        self.export_button.setEnabled(bool(results))

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write the comparison table (display order) to ``path``, replacing it."""
        return write_csv(path, self.table.rows(), overwrite=True)

    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export comparison", "comparison.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)
