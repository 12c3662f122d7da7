"""Matplotlib figures of the interpretability results (headless: draws on a given ``Figure``).

Colours are Okabe-Ito (colour-blind safe): blue for tumour pixels, orange for background pixels.
Used by the napari Interpret tab (on a Qt canvas) and by ``scripts/make_loss_response.py``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from napari_segloss.interpret.calibration import Reliability
from napari_segloss.interpret.confidence import ConfidenceHistogram
from napari_segloss.interpret.landscape import Landscape
from napari_segloss.interpret.response import ResponseCurve, SizeResponse
from napari_segloss.losses import info

TUMOUR_COLOR = (0 / 255, 114 / 255, 178 / 255)
BACKGROUND_COLOR = (230 / 255, 159 / 255, 0 / 255)
SIZE_COLOR = (0.15, 0.15, 0.15)
DICE_COLOR = (0 / 255, 158 / 255, 115 / 255)


def _title(name: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(info(name).title, width)[:2])


def _unavailable(ax: Axes, note: str) -> None:
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(f"n/a: {note}", 28)[:4]), ha="center", va="center",
            transform=ax.transAxes, fontsize=7, color="0.4")


def plot_response(fig: Figure, curves: Mapping[str, ResponseCurve], size: SizeResponse | None = None, *,
                  legend: str = "outside upper left") -> None:
    """One column per loss: loss value and ``dL/dp`` against the probe's probability (tumour
    pixel blue, background pixel orange dashed) and, with ``size``, loss against the erosion /
    dilation radius of the predicted mask. ``legend``: matplotlib legend location (``fig`` should
    use the constrained layout for the ``"outside ..."`` ones). Clears ``fig`` first."""
    fig.clear()
    names = list(curves)
    if not names:
        return
    rows = 3 if size is not None else 2
    axes = np.asarray(fig.subplots(rows, len(names), squeeze=False))
    for col, name in enumerate(names):
        curve = curves[name]
        value_ax, grad_ax = axes[0, col], axes[1, col]
        value_ax.set_title(_title(name), fontsize=9)
        if curve.note:
            _unavailable(value_ax, curve.note)
            _unavailable(grad_ax, curve.note)
        else:
            p = curve.probabilities
            for ax, fg, bg in ((value_ax, curve.fg_value, curve.bg_value), (grad_ax, curve.fg_grad, curve.bg_grad)):
                ax.plot(p, fg, color=TUMOUR_COLOR, lw=1.8, label="tumour pixel")
                ax.plot(p, bg, color=BACKGROUND_COLOR, lw=1.8, ls="--", label="background pixel")
            grad_ax.axhline(0.0, color="0.6", lw=0.6)
        for ax in (value_ax, grad_ax):
            ax.set_xlim(0, 1)
            ax.tick_params(labelsize=7)
            ax.yaxis.get_offset_text().set_fontsize(7)
        grad_ax.set_xlabel("predicted p of the pixel", fontsize=8)
        if size is not None:
            _plot_size(axes[2, col], size, name)
    axes[0, 0].set_ylabel("loss", fontsize=9)
    axes[1, 0].set_ylabel("dL/dp", fontsize=9)
    if size is not None:
        axes[2, 0].set_ylabel(f"loss, mask at p={size.confidence:g}", fontsize=9)
    handles = [Line2D([], [], color=TUMOUR_COLOR, lw=1.8), Line2D([], [], color=BACKGROUND_COLOR, lw=1.8, ls="--")]
    fig.legend(handles, ["tumour pixel", "background pixel"], loc=legend, fontsize=8, ncol=2, frameon=False)


def _plot_size(ax: Axes, size: SizeResponse, name: str) -> None:
    values = size.values.get(name)
    ax.axvspan(size.radii.min() - 0.5, 0, color=TUMOUR_COLOR, alpha=0.08, lw=0)
    ax.axvspan(0, size.radii.max() + 0.5, color=BACKGROUND_COLOR, alpha=0.10, lw=0)
    ax.set_xlim(size.radii.min() - 0.5, size.radii.max() + 0.5)
    if values is None or np.isnan(values).all():
        _unavailable(ax, size.notes.get(name, "not computed"))
    else:
        ax.plot(size.radii, values, color=SIZE_COLOR, marker="o", ms=3, lw=1.4)
    ax.axvline(0.0, color="0.6", lw=0.6)
    ax.text(0.03, 0.03, "under-seg.", transform=ax.transAxes, ha="left", va="bottom", fontsize=7, color=TUMOUR_COLOR)
    ax.text(0.97, 0.03, "over-seg.", transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            color=BACKGROUND_COLOR)
    ax.set_xlabel("erode (-) / dilate (+) radius, px", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_confidence(fig: Figure, histograms: Mapping[str, ConfidenceHistogram], *, columns: int = 3) -> None:
    """One panel per checkpoint: the distribution of predicted probabilities on true-tumour
    (blue) and true-background (orange) pixels, log-scaled fractions. Clears ``fig`` first."""
    fig.clear()
    names = list(histograms)
    if not names:
        return
    cols = min(columns, len(names))
    rows = int(np.ceil(len(names) / cols))
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        h = histograms[name]
        for fractions, color, n in ((h.tumour, TUMOUR_COLOR, h.n_tumour), (h.background, BACKGROUND_COLOR, h.n_background)):
            if n:
                ax.stairs(np.where(fractions > 0, fractions, np.nan), h.edges, color=color, lw=1.6)
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_title(f"{name}\nmean p: tumour {h.mean_tumour:.2f}, background {h.mean_background:.2f}", fontsize=8)
        ax.set_xlabel("predicted tumour probability", fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=TUMOUR_COLOR, lw=1.6), Line2D([], [], color=BACKGROUND_COLOR, lw=1.6)]
    first = histograms[names[0]]
    fig.legend(handles, [f"true tumour pixels (n={first.n_tumour})", f"true background pixels (n={first.n_background})"],
               loc="outside upper left", fontsize=8, ncol=2, frameon=False)
    axes[0].set_ylabel("fraction of pixels", fontsize=8)
    for ax in axes[len(names):]:
        ax.set_visible(False)


def plot_fine_tune(fig: Figure, steps: Sequence[int], losses: Sequence[float], dice_steps: Sequence[int],
                   dice: Sequence[float]) -> None:
    """Training loss (left axis, grey) and Dice on the fine-tuning slices (right axis, green)
    against the step. Clears ``fig`` first."""
    fig.clear()
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="0.35", lw=1.2)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("training loss", fontsize=8)
    ax.tick_params(labelsize=7)
    right = ax.twinx()
    right.plot(dice_steps, dice, color=DICE_COLOR, marker="o", ms=3, lw=1.4)
    right.set_ylim(0, 1)
    right.set_ylabel("Dice on these slices", fontsize=8, color=DICE_COLOR)
    right.tick_params(labelsize=7, colors=DICE_COLOR)


#: line colours of reliability diagrams and landscape curves (Okabe-Ito, in order of use)
SERIES_COLORS = [(0 / 255, 114 / 255, 178 / 255), (213 / 255, 94 / 255, 0 / 255), (0 / 255, 158 / 255, 115 / 255),
                 (204 / 255, 121 / 255, 167 / 255), (230 / 255, 159 / 255, 0 / 255), (86 / 255, 180 / 255, 233 / 255),
                 (0.35, 0.35, 0.35)]


def plot_reliability(ax: Axes, curves: Mapping[str, Reliability], title: str = "") -> None:
    """Reliability diagram on ``ax``: mean predicted probability (x) against observed tumour
    fraction (y) per non-empty bin, one line per entry of ``curves`` (label -> diagram, its ECE
    in the legend), the diagonal of perfect calibration dashed."""
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    for (label, curve), color in zip(curves.items(), SERIES_COLORS):
        keep = curve.count > 0
        ax.plot(curve.confidence[keep], curve.frequency[keep], marker="o", ms=3, lw=1.4, color=color,
                label=f"{label} (ECE {curve.ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("mean predicted probability", fontsize=8)
    ax.set_ylabel("observed tumour fraction", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    if curves:
        ax.legend(fontsize=6, loc="upper left", frameon=False)


def plot_landscape(fig: Figure, landscape: Landscape, *, relative: bool = True) -> None:
    """A 1-D landscape as curves (one per loss, ``relative``: minus its value at the checkpoint,
    so losses on different scales compare) or a 2-D one as one filled contour panel per loss.
    Clears ``fig`` first."""
    fig.clear()
    names = list(landscape.values)
    if landscape.betas is None:
        ax = fig.add_subplot()
        for name, color in zip(names, SERIES_COLORS):
            curve = landscape.values[name] - (landscape.origin[name] if relative else 0.0)
            ax.plot(landscape.alphas, curve, color=color, lw=1.5, label=name)
        ax.axvline(0.0, color="0.7", lw=0.8)
        ax.set_xlabel("step along a filter-normalised random direction", fontsize=8)
        ax.set_ylabel("loss - loss at the checkpoint" if relative else "loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
        return
    axes = np.asarray(fig.subplots(1, len(names), squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        filled = ax.contourf(landscape.alphas, landscape.betas, landscape.values[name], levels=15, cmap="viridis")
        ax.contour(landscape.alphas, landscape.betas, landscape.values[name], levels=15, colors="k", linewidths=0.3)
        ax.plot([0], [0], marker="+", color="w", ms=8)
        ax.set_title(f"{name} (checkpoint {landscape.origin[name]:.3g})", fontsize=8)
        ax.set_xlabel("direction 1", fontsize=8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        fig.colorbar(filled, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    axes[0].set_ylabel("direction 2", fontsize=8)
