"""Batch report: per-checkpoint summary statistics, CSV tables and the self-contained HTML page.

summary.csv has one row per checkpoint with, for every key of
:data:`napari_segloss.metrics.METRIC_KEYS`, ``<key>_mean``, ``<key>_std`` (sample standard
deviation, ddof = 1), ``<key>_median`` and ``<key>_n`` (the number of defined values: NaN rows,
e.g. Dice of two empty masks, are left out as in ``np.nanmean``). Only rows with ground truth
count, except ``volume_pred``, which every image has. ``units`` says what lengths and sizes are
measured in: ``mm``, ``px`` (no image of the checkpoint has a known pixel size: metrics.csv's
``spacing_mm`` is ``unknown``) or ``mixed`` (the means of lengths and sizes then mix mm and px
and the HTML/PDF reports do not show them); ``ndim`` is 2 or 3, empty when both occur;
``card_ece``, ``card_ece_calibrated`` and ``card_temperature`` are the checkpoint card's test-set
pixel calibration (NaN when its card has none; see :mod:`napari_segloss.interpret.calibration`).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_segloss import metrics
from napari_segloss.batch.pairing import Entry
from napari_segloss.batch.process import CheckpointRef
from napari_segloss.spacing import spacing_text

#: ``<key>_<stat>`` columns of summary.csv, per metric
STATS = ("mean", "std", "median", "n")


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(float(v))], dtype=np.float64)
    n = int(arr.size)
    return {
        "mean": float(arr.mean()) if n else math.nan,
        "std": float(arr.std(ddof=1)) if n > 1 else math.nan,
        "median": float(np.median(arr)) if n else math.nan,
        "n": n,
    }


def summarize(rows: Sequence[Mapping[str, Any]], checkpoints: Sequence[CheckpointRef]) -> list[dict[str, Any]]:
    """One summary row per checkpoint (in the given order) from metrics.csv rows."""
    summary = []
    for ref in checkpoints:
        mine = [r for r in rows if r["checkpoint"] == ref.name]
        truth = [r for r in mine if r["has_truth"]]
        row: dict[str, Any] = {
            "checkpoint": ref.name,
            "loss": ref.loss,
            "family": ref.family,
            "n_images": len(mine),
            "n_with_truth": len(truth),
            **_units(mine),
            **_card_calibration(ref),
        }
        for key in metrics.METRIC_KEYS:
            source = mine if key == "volume_pred" else truth
            for stat, value in _stats([r[key] for r in source]).items():
                row[f"{key}_{stat}"] = value
        summary.append(row)
    return summary


def _card_calibration(ref: CheckpointRef) -> dict[str, float]:
    """``card_temperature``, ``card_ece`` and ``card_ece_calibrated``: the checkpoint card's test-set
    pixel calibration (:func:`napari_segloss.interpret.calibration.headline`; NaN when not measured)."""
    from napari_segloss.checkpoints import CheckpointError, read_card
    from napari_segloss.interpret.calibration import headline

    try:
        numbers = headline(read_card(ref.path).calibration)
    except CheckpointError:
        numbers = headline({})
    return {"card_temperature": numbers["temperature"], "card_ece": numbers["ece"],
            "card_ece_calibrated": numbers["ece_calibrated"]}


def _ece_cell(row: Mapping[str, Any]) -> str:
    ece, after, t = row.get("card_ece", math.nan), row.get("card_ece_calibrated", math.nan), row.get("card_temperature", math.nan)
    if math.isnan(ece):
        return "n/a"
    return f"{ece:.4f}" + ("" if math.isnan(after) else f"<br><small>{after:.4f} at T {t:.2f}</small>")


def _units(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``units`` (mm, px or mixed) and ``ndim`` (2, 3 or "" when mixed) of metrics.csv rows."""
    kinds = {"px" if r["spacing_mm"] == spacing_text(None) else "mm" for r in rows}
    dims = {len(str(r["shape"]).split("x")) for r in rows}
    return {"units": kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "mm"),
            "ndim": dims.pop() if len(dims) == 1 else ""}


def format_stat(key: str, stat: str, row: Mapping[str, Any]) -> str:
    """The summary row's ``<key>_<stat>`` as text in the row's units (see the module docstring);
    "n/a" when undefined, "mixed units" for a length or size averaged over mm and px."""
    spec = metrics.REGISTRY.get(key)
    if row.get("units") == "mixed" and spec is not None and spec.unit != "none":
        return "mixed units"
    ndim = row.get("ndim") or None
    text = metrics.format_value(key, row[f"{key}_{stat}"], ndim=ndim, spacing_known=row.get("units") != "px")
    return text.lstrip("+") if stat == "std" else text


def mean_std(key: str, row: Mapping[str, Any]) -> str:
    """``"5.12 ± 2.31 mm"``: the summary row's mean ± std of ``key``, the unit written once; the
    mean alone when the std is undefined (one image)."""
    mean = format_stat(key, "mean", row)
    if math.isnan(row[f"{key}_mean"]) or math.isnan(row[f"{key}_std"]) or mean == "mixed units":
        return mean
    std = format_stat(key, "std", row)
    number, _, unit = mean.rpartition(" ")
    if number and ")" not in unit and std.endswith(f" {unit}"):
        mean = number
    return f"{mean} ± {std}"


def csv_bytes(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> bytes:
    """UTF-8 CSV of dict rows; header = ``columns`` or the keys in first-seen order.

    Floats keep full precision (``repr``); NaN is written ``nan`` (as io.writers.write_csv).
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def manifest_rows(entries: Sequence[Entry]) -> list[dict[str, str]]:
    """manifest.csv rows (path, role, status, item, partner, reason)."""
    return [
        {"path": e.path, "role": e.role, "status": e.status, "item": e.item, "partner": e.partner, "reason": e.reason}
        for e in entries
    ]


def dice_boxplot_png(rows: Sequence[Mapping[str, Any]], checkpoints: Sequence[CheckpointRef]) -> bytes | None:
    """PNG box plot of per-image Dice, one box per checkpoint labelled with its loss; None when no
    image has a defined Dice."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data, labels = [], []
    for ref in checkpoints:
        values = [float(r["dice"]) for r in rows if r["checkpoint"] == ref.name and r["has_truth"]]
        values = [v for v in values if not math.isnan(v)]
        if values:
            data.append(values)
            labels.append(f"{ref.loss}\n({ref.name})" if ref.loss != ref.name else ref.loss)
    if not data:
        return None
    figure = Figure(figsize=(max(4.0, 1.1 * len(data) + 1.5), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.boxplot(data, showmeans=True)
    axes.set_xticks(range(1, len(labels) + 1), labels)
    axes.set_ylabel("Dice per image")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title("Dice per loss")
    axes.grid(axis="y", alpha=0.3)
    axes.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _cell(key: str, row: Mapping[str, Any]) -> str:
    text = html.escape(mean_std(key, row))
    if math.isnan(row[f"{key}_mean"]) or text == "mixed units":
        return text
    return f"{text}<br><small>median {html.escape(format_stat(key, 'median', row))}</small>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:center;vertical-align:top}
th{background:#f3f3f3} td.l{text-align:left}
.grid td{font-size:.8em} .grid img{display:block;margin:auto}
small{color:#666} .err{color:#b00}
"""


def render_html(
    *,
    summary: Sequence[Mapping[str, Any]],
    run: Mapping[str, Any],
    entries: Sequence[Entry],
    boxplot: bytes | None,
    thumbnails: Sequence[tuple[str, Mapping[str, bytes], Mapping[str, float]]],
    checkpoints: Sequence[CheckpointRef],
) -> str:
    """The self-contained report page (images embedded as base64 PNG, no external resources).

    Args:
        summary: :func:`summarize` rows.
        run: what was run (version, device, threshold, counts, ...), shown as a table.
        entries: the manifest.
        boxplot: :func:`dice_boxplot_png` output or None.
        thumbnails: ``(item name, {checkpoint: png}, {checkpoint: dice})`` per shown item, in
            display order (worst first).
        checkpoints: column order of the thumbnail grid.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>napari-segloss batch report</title>',
        f"<style>{_CSS}</style></head><body>",
        "<h1>napari-segloss batch report</h1>",
        "<table>" + "".join(f'<tr><th>{esc(str(k))}</th><td class="l">{esc(str(v))}</td></tr>' for k, v in run.items()) + "</table>",
        "<h2>Summary per checkpoint</h2>",
        "<p>mean ± standard deviation over the images with ground truth, and the median; "
        "undefined values (e.g. Dice of two empty masks) are left out; px = the pixel size is unknown "
        "(PNG/JPG), so distances and sizes are in pixels. All metrics: summary.csv; per image: metrics.csv.</p>",
        "<table><tr><th>checkpoint</th><th>loss</th><th>family</th><th>images</th>"
        + "".join(f"<th>{esc(k)}</th>" for k in metrics.headline_keys())
        + "<th>test ECE (card)</th></tr>",
    ]
    for row in summary:
        parts.append(
            f'<tr><td class="l">{esc(row["checkpoint"])}</td><td>{esc(row["loss"])}</td><td>{esc(row["family"])}</td>'
            f'<td>{row["n_with_truth"]} / {row["n_images"]}</td>'
            + "".join(f"<td>{_cell(k, row)}</td>" for k in metrics.headline_keys())
            + f"<td>{_ece_cell(row)}</td></tr>"
        )
    parts.append("</table>")
    if boxplot is not None:
        parts += ["<h2>Dice per loss</h2>", _img(boxplot, "box plot of Dice per loss")]
    if thumbnails:
        parts += [
            "<h2>Cases (lowest Dice first)</h2>",
            "<p>Difference overlay: TP bluish green, FP vermillion, FN sky blue; images without "
            "ground truth show the predicted outline.</p>",
            '<table class="grid"><tr><th>image</th>' + "".join(f"<th>{esc(c.name)}</th>" for c in checkpoints) + "</tr>",
        ]
        for name, pngs, dice in thumbnails:
            cells = []
            for ref in checkpoints:
                if ref.name in pngs:
                    score = dice.get(ref.name, math.nan)
                    cells.append(f"<td>{_img(pngs[ref.name], f'{name} {ref.name}')}Dice {metrics.format_value('dice', score)}</td>")
                else:
                    cells.append('<td class="err">failed</td>')
            parts.append(f'<tr><td class="l">{esc(name)}</td>' + "".join(cells) + "</tr>")
        parts.append("</table>")
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.status] = counts.get(entry.status, 0) + 1
    parts += [
        "<h2>Manifest</h2>",
        "<p>" + ", ".join(f"{n} {esc(status)}" for status, n in sorted(counts.items())) + " (manifest.csv)</p>",
        "<details><summary>all entries</summary><table><tr><th>path</th><th>role</th><th>status</th><th>reason</th></tr>",
        *(
            f'<tr><td class="l">{esc(e.path)}</td><td>{esc(e.role)}</td><td>{esc(e.status)}</td>'
            f'<td class="l">{esc(e.reason or ("paired with " + e.partner if e.partner else ""))}</td></tr>'
            for e in entries
        ),
        "</table></details>",
        "</body></html>",
    ]
    return "\n".join(parts)
