"""The "Run" tab: one checkpoint (picker grouped by loss family, with the loss in one line and its
test Dice; the cards the registry skipped, and why, below it), the Run button, and the metrics and
training/model-card panels below."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTabWidget, QToolButton, QVBoxLayout, QWidget

from napari_segloss.checkpoints import CheckpointInfo
from napari_segloss.napari._card_panel import CardPanel
from napari_segloss.napari._checkpoint_pickers import CheckpointCombo, loss_summary, test_dice
from napari_segloss.napari._metrics_panel import MetricsPanel


class RunTab(QWidget):
    """Signals: ``run_requested`` (Run button), ``refresh_requested`` (re-scan the checkpoint folders),
    ``checkpoint_changed`` (another checkpoint was picked)."""

    run_requested = Signal()
    refresh_requested = Signal()
    checkpoint_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = CheckpointCombo()
        self.combo.setToolTip("Checkpoints differ only in the loss they were trained with")
        self.combo.currentIndexChanged.connect(self._on_checkpoint)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("↻")
        self.refresh_button.setToolTip("Look for checkpoints again (weights folder and NAPARI_SEGLOSS_CHECKPOINTS)")
        self.refresh_button.clicked.connect(self.refresh_requested)
        self.description = QLabel()
        self.description.setWordWrap(True)
        self.skipped = QLabel()  # the registry's problems: cards skipped, and why (tooltip)
        self.skipped.setWordWrap(True)
        self.skipped.setStyleSheet("color: #E69F00")
        self.skipped.setVisible(False)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Segment the image with the selected checkpoint")
        self.run_button.clicked.connect(self.run_requested)
        self.metrics = MetricsPanel()
        self.card = CardPanel()
        self.panels = QTabWidget()
        self.panels.addTab(self.metrics, "Metrics")
        self.panels.addTab(self.card, "Training && card")
        picker = QHBoxLayout()
        picker.addWidget(QLabel("Checkpoint"))
        picker.addWidget(self.combo, 1)
        picker.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addLayout(picker)
        layout.addWidget(self.skipped)
        layout.addWidget(self.description)
        layout.addWidget(self.run_button)
        layout.addWidget(self.panels, 1)
        self._on_checkpoint()

    def set_checkpoints(self, infos: list[CheckpointInfo], problems: Sequence[str] = ()) -> None:
        """Offer ``infos`` in the picker; name the skipped cards (``problems``: one line each, as
        :attr:`napari_segloss.checkpoints.Registry.problems`) under it, all of them in its tooltip."""
        self.combo.set_checkpoints(infos)
        if problems:
            first = problems[0] if len(problems[0]) <= 160 else problems[0][:159] + "…"
            more = f" (and {len(problems) - 1} more; hover for all)" if len(problems) > 1 else ""
            self.skipped.setText(f"{len(problems)} checkpoint card(s) skipped: {first}{more}")
        self.skipped.setToolTip("\n".join(problems))
        self.skipped.setVisible(bool(problems))

    def current(self) -> CheckpointInfo | None:
        """The picked checkpoint, or None."""
        return self.combo.current_info()

    def _on_checkpoint(self, *_: object) -> None:
        info = self.current()
        if info is None:
            self.description.setText("<i>No checkpoint found.</i>")
        else:
            self.description.setText(f"{loss_summary(info.card)}<br><b>{test_dice(info.card)}</b>")
        self.card.show_card(info.card if info else None)
        self.checkpoint_changed.emit()
