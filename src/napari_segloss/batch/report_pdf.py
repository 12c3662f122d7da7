"""The batch report as a PDF (``report.pdf`` beside ``report.html``), for printing and archiving.

Pages (A4 landscape, matplotlib's PDF backend, no extra dependency): what was run and the summary
table (25 checkpoints a page), the Dice box plot, then the lowest-Dice cases as thumbnail grids
(4 images x 6 checkpoints a page). The numbers are those of ``summary.csv``; the HTML page has
the manifest as well.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_segloss import metrics
from napari_segloss.batch.process import CheckpointRef
from napari_segloss.batch.report import mean_std

A4_LANDSCAPE = (11.69, 8.27)
ROWS_PER_PAGE = 25
CASES_PER_PAGE, CHECKPOINTS_PER_PAGE = 4, 6


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [items]


def _png(payload: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image.convert("RGB"))


def _summary_pages(pdf: Any, summary: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> None:
    from matplotlib.figure import Figure

    keys = metrics.headline_keys()
    header = ["checkpoint", "loss", "images", *keys]
    for page, rows in enumerate(_chunks(list(summary), ROWS_PER_PAGE)):
        figure = Figure(figsize=A4_LANDSCAPE)
        figure.text(0.04, 0.95, "napari-segloss batch report", fontsize=16, weight="bold")
        if page == 0:
            lines = [f"{k}: {v}" for k, v in run.items() if k != "checkpoints"]  # the table lists them
            figure.text(0.04, 0.92, "\n".join(lines), fontsize=7, va="top", family="monospace", wrap=True)
        axes = figure.add_axes((0.04, 0.03, 0.92, 0.62 if page == 0 else 0.88))
        axes.axis("off")
        cells = [[r["checkpoint"], r["loss"], f"{r['n_with_truth']} / {r['n_images']}",
                  *(mean_std(k, r) for k in keys)] for r in rows]
        if cells:
            table = axes.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="left")
            table.auto_set_font_size(False)
            table.set_fontsize(6.5)
            table.auto_set_column_width(list(range(len(header))))
            table.scale(1.0, 1.2)
        axes.set_title("Summary per checkpoint: mean ± standard deviation over the images with ground truth",
                       fontsize=9, loc="left")
        pdf.savefig(figure)


def _image_page(pdf: Any, title: str, payload: bytes) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=A4_LANDSCAPE)
    axes = figure.add_axes((0.04, 0.04, 0.92, 0.86))
    axes.imshow(_png(payload))
    axes.axis("off")
    figure.text(0.04, 0.95, title, fontsize=12, weight="bold")
    pdf.savefig(figure)


def _case_pages(pdf: Any, thumbnails: Sequence[tuple[str, Mapping[str, bytes], Mapping[str, float]]],
                checkpoints: Sequence[CheckpointRef]) -> None:
    from matplotlib.figure import Figure

    for cases in _chunks(list(thumbnails), CASES_PER_PAGE):
        for refs in _chunks(list(checkpoints), CHECKPOINTS_PER_PAGE):
            figure = Figure(figsize=A4_LANDSCAPE)
            figure.text(0.04, 0.96, "Cases, lowest Dice first (TP bluish green, FP vermillion, FN sky blue)",
                        fontsize=11, weight="bold")
            grid = figure.add_gridspec(len(cases), len(refs), left=0.12, right=0.98, top=0.91, bottom=0.03,
                                       hspace=0.3, wspace=0.05)
            for row, (name, pngs, dice) in enumerate(cases):
                for col, ref in enumerate(refs):
                    axes = figure.add_subplot(grid[row, col])
                    axes.set_xticks([])
                    axes.set_yticks([])
                    if ref.name in pngs:
                        axes.imshow(_png(pngs[ref.name]))
                        axes.set_xlabel(f"Dice {metrics.format_value('dice', dice.get(ref.name, math.nan))}", fontsize=7)
                    else:
                        axes.text(0.5, 0.5, "failed", ha="center", va="center", color="#D55E00")
                    if row == 0:
                        axes.set_title(ref.name, fontsize=7)
                    if col == 0:
                        axes.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
            pdf.savefig(figure)


def render_pdf(
    *,
    summary: Sequence[Mapping[str, Any]],
    run: Mapping[str, Any],
    boxplot: bytes | None,
    thumbnails: Sequence[tuple[str, Mapping[str, bytes], Mapping[str, float]]],
    checkpoints: Sequence[CheckpointRef],
) -> bytes:
    """The report as PDF bytes; arguments as for :func:`napari_segloss.batch.report.render_html`."""
    from matplotlib.backends.backend_pdf import PdfPages

    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"Title": "napari-segloss batch report", "Creator": "napari-segloss"}) as pdf:
        _summary_pages(pdf, summary, run)
        if boxplot is not None:
            _image_page(pdf, "Dice per loss", boxplot)
        if thumbnails:
            _case_pages(pdf, thumbnails, checkpoints)
    return buffer.getvalue()
