"""Training-curve panel (matplotlib in Qt) and the model card of the selected checkpoint."""

from __future__ import annotations

import html
import json
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QTextBrowser, QVBoxLayout, QWidget

from napari_segloss import losses
from napari_segloss.checkpoints import ModelCard
from napari_segloss.napari._checkpoint_pickers import test_dice

_LOSS_COLOR = "#E69F00"  # Okabe-Ito orange
_DICE_COLOR = "#0072B2"  # Okabe-Ito blue


def curves(card: ModelCard) -> tuple[list[int], list[float | None], list[float | None]]:
    """``(epochs, train_loss, val_dice)`` from ``card.history`` (None where an epoch lacks a value)."""
    epochs = [int(entry["epoch"]) for entry in card.history]
    return epochs, [entry.get("train_loss") for entry in card.history], [entry.get("val_dice") for entry in card.history]


def _table(values: dict[str, Any]) -> str:
    if not values:
        return "<i>none recorded</i>"
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
        for k, v in values.items()
    )
    return f"<table cellspacing='0' cellpadding='2'>{rows}</table>"


def card_html(card: ModelCard) -> str:
    """The model card as HTML: the loss (catalogue title, summary, paper), hyper-parameters (card
    values over the catalogue defaults), recipe, data, test metrics, provenance."""
    try:
        entry = losses.info(card.loss)
        loss = (f"<b>{html.escape(entry.title)}</b> ({html.escape(entry.family)} family)<br>"
                f"{html.escape(entry.summary)}<br><i>Reference:</i> {html.escape(entry.reference)}")
        hparams = {**dict(entry.defaults), **card.loss_hparams}
    except ValueError:
        loss = f"<b>{html.escape(card.loss)}</b>: not in this version's loss catalogue"
        hparams = dict(card.loss_hparams)
    metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in card.test_metrics.items()}
    sections = [
        f"<h3>{html.escape(card.name)}</h3><p>{loss}</p>",
        f"<p><b>Hyper-parameters</b>{_table(hparams)}</p>",
        f"<p><b>Training recipe</b>{_table(card.recipe)}</p>",
        f"<p><b>Data</b>{_table(card.data)}</p>",
        f"<p><b>Held-out test</b> ({html.escape(test_dice(card))}){_table(metrics)}</p>",
    ]
    if card.notes:
        sections.append(f"<p><b>Notes</b><br>{html.escape(card.notes)}</p>")
    sections.append(
        f"<p style='color:gray'>weights sha256 {html.escape(card.weights_sha256[:16])}…, created "
        f"{html.escape(card.created)}, napari-segloss {html.escape(card.project_version)}</p>"
    )
    return "".join(sections)


class CardPanel(QWidget):
    """The selected checkpoint's training loss and validation Dice per epoch, above its model card."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(4, 2.0), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.card_view = QTextBrowser()
        self.card_view.setOpenExternalLinks(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        layout.addWidget(self.card_view, 1)
        self.card: ModelCard | None = None
        self._colors = {"face": "white", "text": "black"}
        self.show_card(None)

    def set_colors(self, face: str, text: str) -> None:
        """Draw the plot in the viewer theme's colours (``face`` background, ``text`` for labels)."""
        self._colors = {"face": face, "text": text}
        self.show_card(self.card)

    def show_card(self, card: ModelCard | None) -> None:
        """Plot ``card``'s history and show its card (None: an empty panel)."""
        self.card = card
        self.figure.clear()
        face, text = self._colors["face"], self._colors["text"]
        self.figure.set_facecolor(face)
        ax = self.figure.add_subplot()
        ax.set_facecolor(face)
        if card is None or not card.history:
            ax.text(0.5, 0.5, "no training history" if card else "no checkpoint selected",
                    ha="center", va="center", transform=ax.transAxes, color="gray")
            ax.set_axis_off()
        else:
            epochs, loss, dice = curves(card)
            ax.plot(epochs, [float("nan") if v is None else v for v in loss], "o-", color=_LOSS_COLOR, ms=3)
            ax.set_xlabel("epoch")
            ax.set_ylabel("train loss", color=_LOSS_COLOR)
            twin = ax.twinx()
            twin.plot(epochs, [float("nan") if v is None else v for v in dice], "s-", color=_DICE_COLOR, ms=3)
            twin.set_ylabel("val Dice", color=_DICE_COLOR)
            twin.set_ylim(0, 1)
            ax.set_title(card.name, fontsize=9, color=text)
            for axis in (ax, twin):
                axis.tick_params(colors=text, labelsize=8)
                for spine in axis.spines.values():
                    spine.set_color(text)
            ax.xaxis.label.set_color(text)
        self.canvas.draw_idle()
        self.card_view.setHtml(card_html(card) if card else "")
