"""Checkpoint pickers grouped by loss family: a combo box (Run) and a check list (Compare)."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QFont, QStandardItem, QStandardItemModel
from qtpy.QtWidgets import QCheckBox, QComboBox, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from napari_segloss import losses
from napari_segloss.checkpoints import CheckpointInfo, ModelCard

FAMILY_TITLES = {"pixel": "Pixel losses", "region": "Region losses", "boundary": "Boundary losses",
                 "compound": "Compound losses"}
_INFO_ROLE = Qt.ItemDataRole.UserRole


def loss_summary(card: ModelCard) -> str:
    """``"<Title>: <one-line summary>"`` from the loss catalogue, or a note for a custom loss."""
    try:
        entry = losses.info(card.loss)
    except ValueError:
        return f"{card.loss}: a loss this version of napari-segloss does not know"
    return f"{entry.title}: {entry.summary}"


def test_dice(card: ModelCard) -> str:
    """The card's held-out test Dice as text, saying on which data: ``"real test Dice 0.712"``
    (a labelled folder of real scans), ``"synthetic test Dice 0.812"`` (the phantom), or
    ``"test Dice not recorded"``."""
    value = card.test_metrics.get("dice")
    if not isinstance(value, (int, float)):
        return "test Dice not recorded"
    source = (card.data or {}).get("source")
    kind = "real " if source == "labelled folder" else "synthetic " if source == "synthetic" else ""
    return f"{kind}test Dice {value:.3f}"


def _grouped(infos: Sequence[CheckpointInfo]) -> dict[str, list[CheckpointInfo]]:
    groups: dict[str, list[CheckpointInfo]] = {}
    for info in infos:  # list_checkpoints sorts by family, then name
        groups.setdefault(info.family, []).append(info)
    return groups


class CheckpointCombo(QComboBox):
    """One checkpoint, chosen from a list with a bold, unselectable header per loss family."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = QStandardItemModel(self)
        self.setModel(self._model)

    def set_checkpoints(self, infos: Sequence[CheckpointInfo]) -> None:
        """Fill the list; keeps the current checkpoint selected when it is still there, else selects
        the plain Dice checkpoint (or the first one)."""
        keep = self.current_name()
        self.blockSignals(True)
        self._model.clear()
        bold = QFont()
        bold.setBold(True)
        for family, members in _grouped(infos).items():
            header = QStandardItem(FAMILY_TITLES.get(family, family))
            header.setFlags(Qt.ItemFlag.NoItemFlags)
            header.setFont(bold)
            self._model.appendRow(header)
            for info in members:
                item = QStandardItem(f"    {info.name}")
                item.setData(info, _INFO_ROLE)
                item.setToolTip(f"{loss_summary(info.card)}\n{test_dice(info.card)}\n{info.path}")
                self._model.appendRow(item)
        rows = [r for r in range(self._model.rowCount()) if self._model.item(r).data(_INFO_ROLE) is not None]
        names = [self._model.item(r).data(_INFO_ROLE).name for r in rows]
        # Default: the plain Dice checkpoint, the reference every other loss is compared with.
        reference = [r for r in rows if self._model.item(r).data(_INFO_ROLE).loss == "dice"]
        self.setCurrentIndex(rows[names.index(keep)] if keep in names else ((reference or rows)[0] if rows else -1))
        self.blockSignals(False)
        self.currentIndexChanged.emit(self.currentIndex())

    def current_info(self) -> CheckpointInfo | None:
        """The selected checkpoint, or None when the list is empty."""
        return self.currentData(_INFO_ROLE) if self.currentIndex() >= 0 else None

    def current_name(self) -> str | None:
        """The selected checkpoint's name, or None."""
        info = self.current_info()
        return info.name if info is not None else None

    def select(self, name: str) -> None:
        """Select the checkpoint called ``name`` (ValueError if absent)."""
        for row in range(self._model.rowCount()):
            info = self._model.item(row).data(_INFO_ROLE)
            if info is not None and info.name == name:
                self.setCurrentIndex(row)
                return
        raise ValueError(f"no checkpoint named {name!r} in the list")


class CheckpointChecklist(QWidget):
    """Several checkpoints ticked in a tree grouped by family (a family ticks all its members),
    an "All checkpoints" box, and a status column that shows per-checkpoint progress."""

    changed = Signal()
    COLUMNS = ("checkpoint", "test Dice", "status")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.all_box = QCheckBox("All checkpoints")
        self.all_box.setToolTip("Tick every checkpoint in the list")
        self.all_box.toggled.connect(self._tick_all)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(self.COLUMNS))
        self.tree.setRootIsDecorated(True)
        self.tree.itemChanged.connect(self._on_item_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.all_box)
        layout.addWidget(self.tree)
        self._items: dict[str, QTreeWidgetItem] = {}

    def set_checkpoints(self, infos: Sequence[CheckpointInfo]) -> None:
        """Fill the tree; previously ticked checkpoints stay ticked."""
        keep = {info.name for info in self.checked()}
        self.tree.blockSignals(True)
        self.tree.clear()
        self._items = {}
        for family, members in _grouped(infos).items():
            group = QTreeWidgetItem([FAMILY_TITLES.get(family, family), "", ""])
            group.setFlags(group.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsAutoTristate)
            self.tree.addTopLevelItem(group)
            for info in members:
                dice = info.card.test_metrics.get("dice")
                item = QTreeWidgetItem([info.name, f"{dice:.3f}" if isinstance(dice, (int, float)) else "-", ""])
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(0, Qt.CheckState.Checked if info.name in keep else Qt.CheckState.Unchecked)
                item.setData(0, _INFO_ROLE, info)
                item.setToolTip(0, f"{loss_summary(info.card)}\n{info.path}")
                group.addChild(item)
                self._items[info.name] = item
            group.setExpanded(True)
        self.tree.blockSignals(False)
        for column in range(len(self.COLUMNS)):
            self.tree.resizeColumnToContents(column)
        self._sync_all_box()
        self.changed.emit()

    def names(self) -> list[str]:
        """Every checkpoint name in the list, in display order."""
        return list(self._items)

    def checked(self) -> list[CheckpointInfo]:
        """The ticked checkpoints, in display order."""
        return [item.data(0, _INFO_ROLE) for item in self._items.values()
                if item.checkState(0) == Qt.CheckState.Checked]

    def set_checked(self, names: Sequence[str]) -> None:
        """Tick exactly ``names`` (ValueError for a name not in the list)."""
        unknown = set(names) - set(self._items)
        if unknown:
            raise ValueError(f"no checkpoint(s) named {sorted(unknown)} in the list")
        for name, item in self._items.items():
            item.setCheckState(0, Qt.CheckState.Checked if name in names else Qt.CheckState.Unchecked)

    def set_status(self, name: str, text: str) -> None:
        """Show ``text`` in the status column of checkpoint ``name`` (ignored if not listed)."""
        if name in self._items:
            self._items[name].setText(2, text)

    def clear_status(self) -> None:
        """Empty every status cell."""
        for item in self._items.values():
            item.setText(2, "")

    def _tick_all(self, on: bool) -> None:
        if on or len(self.checked()) == len(self._items):
            self.set_checked(self.names() if on else [])

    def _on_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if column == 0:
            self._sync_all_box()
            self.changed.emit()

    def _sync_all_box(self) -> None:
        self.all_box.blockSignals(True)
        self.all_box.setChecked(bool(self._items) and len(self.checked()) == len(self._items))
        self.all_box.blockSignals(False)
