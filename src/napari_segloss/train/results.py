"""``docs/results.md`` and its figures, generated from the bundled checkpoints' cards.

The table (sorted by test Dice) comes from the cards; the paired comparison against the plain
Dice checkpoint needs per-image scores, so every checkpoint is re-run on the fixed test set
(:func:`reevaluate`; also the negatives' false alarms seen in their whole slice) -- the same numbers :mod:`~napari_segloss.train.evaluate` recorded.
Figures (matplotlib, Agg): loss/Dice curves of every checkpoint, a grid of the same test
slices predicted by every checkpoint (TP/FP/FN colours of :mod:`napari_segloss.overlays`), the
cards' reliability diagrams per loss family and 1-D loss landscapes of every checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloss.interpret.calibration import Reliability, headline
from napari_segloss.train.evaluate import THRESHOLD, paired_difference, probabilities

#: the reference checkpoint of the paired comparison
REFERENCE = "dice"


def reevaluate(checkpoint: Any, splits: Any) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Test metrics and per-slice/per-volume rows of one loaded checkpoint on ``splits``
    (``evaluate.evaluate``, run at the card's training image size, as the card was scored)."""
    from napari_segloss.train.evaluate import evaluate

    return evaluate(checkpoint.model, splits, image_size=checkpoint.card.image_size)


def paired_vs_reference(rows: Mapping[str, Mapping[str, list[dict[str, Any]]]],
                        reference: str = REFERENCE) -> dict[str, dict[str, Any]]:
    """Per checkpoint: Dice difference to ``reference`` on tumour slices and on volumes, and the
    difference in the share of tumour-free slices with a false alarm (paired bootstraps)."""
    if reference not in rows:
        return {}
    ref = rows[reference]
    out = {}
    for name, r in rows.items():
        entry: dict[str, Any] = {}
        for level in ("slices", "volumes"):
            pairs = [(a["dice"], b["dice"]) for a, b in zip(r[level], ref[level]) if a["tumour"]]
            if pairs:
                a, b = zip(*pairs)
                entry[f"dice_{level}"] = paired_difference(a, b)
        alarms = [(a["pred_size"] > 0, b["pred_size"] > 0) for a, b in zip(r["slices"], ref["slices"])
                  if not a["tumour"]]
        if alarms:
            a, b = zip(*alarms)
            entry["false_alarm_rate"] = paired_difference(np.array(a, float), np.array(b, float))
        out[name] = entry
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _ci(ci: Sequence[Any] | None, digits: int = 3) -> str:
    if not ci or any(v is None for v in ci):
        return ""
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _diff(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("diff") is None:
        return "n/a"
    lo, hi = entry["ci95"]
    mark = "" if lo is None or lo <= 0 <= hi else " *"
    return f"{entry['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"


def table(cards: Sequence[Mapping[str, Any]], paired: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of every checkpoint, sorted by test Dice (best first)."""
    def dice(card: Mapping[str, Any]) -> float:
        value = card["test_metrics"].get("dice")
        return value if isinstance(value, float) else -1.0

    from napari_segloss.metrics import card_scores, format_value

    scores = [(name, key) for name, key in card_scores().items() if key != "dice"]  # the registry's card keys
    head = ("| # | loss | family | test Dice [95% CI] | " + "".join(f"{name} | " for name, _ in scores)
            + "false alarms | 3D Dice | ΔDice vs dice (2D) | ΔDice vs dice (3D) | ECE px → after T (T) | "
            "slice ECE → after T | train s |\n"
            + "|---" * (len(scores) + 11) + "|\n")
    lines = []
    for rank, card in enumerate(sorted(cards, key=dice, reverse=True), 1):
        m = card["test_metrics"]
        p = paired.get(card["name"], {})
        vol = m.get("volumes", {})
        seconds = sum(h.get("seconds") or 0.0 for h in card["history"])
        cal = headline(card.get("calibration") or {})
        lines.append(
            f"| {rank} | {card['name']} | {card['family']} | {_fmt(m.get('dice'))}{_ci(m.get('ci95', {}).get('dice'))} | "
            + "".join(f"{format_value(key, m.get(name))} | " for name, key in scores) +
            f"{m.get('empty_slice_false_positives', 'n/a')}/{m.get('n_tumour_free', 'n/a')} | "
            f"{_fmt(vol.get('dice'))} | {_diff(p.get('dice_slices'))} | {_diff(p.get('dice_volumes'))} | "
            f"{_fmt(cal['ece'], 4)} → {_fmt(cal['ece_calibrated'], 4)} ({_fmt(cal['temperature'], 2)}) | "
            f"{_fmt(cal['slice_ece'])} → {_fmt(cal['slice_ece_calibrated'])} | {seconds:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def breakdown_table(cards: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of mean test Dice per tumour kind and size class, per checkpoint."""
    groups: list[tuple[str, str]] = []
    for card in cards:
        for field, values in card["test_metrics"].get("breakdown", {}).items():
            groups += [(field, g) for g in values if (field, g) not in groups]
    order = {"small": 0, "medium": 1, "large": 2}
    groups.sort(key=lambda fg: (fg[0], order.get(fg[1], -1), fg[1]))
    head = "| loss | " + " | ".join(g for _, g in groups) + " |\n|---|" + "---|" * len(groups) + "\n"
    rows = []
    for card in sorted(cards, key=lambda c: c["name"]):
        b = card["test_metrics"].get("breakdown", {})
        cells = [_fmt(b.get(f, {}).get(g, {}).get("mean")) for f, g in groups]
        rows.append(f"| {card['name']} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def curves_figure(cards: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training loss (min-max rescaled per loss) and validation Dice per epoch, every card.

    Losses live on different scales and some are negative (Combo, region-wise), so each loss curve
    is rescaled to [0, 1] over its own epochs (1 = its highest epoch, 0 = its lowest): the panel
    compares how fast and how smoothly each loss converges, not the values.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"pixel": "tab:blue", "region": "tab:orange", "boundary": "tab:green", "compound": "tab:purple"}
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for card in cards:
        epochs = [h["epoch"] + 1 for h in card["history"]]
        loss = np.array([h.get("train_loss") or np.nan for h in card["history"]], dtype=float)
        dice = [h.get("val_dice") for h in card["history"]]
        c = colours.get(card["family"], "grey")
        span = np.nanmax(loss) - np.nanmin(loss) if np.isfinite(loss).any() else 0.0
        if span > 0:
            ax_loss.plot(epochs, (loss - np.nanmin(loss)) / span, color=c, alpha=0.6, lw=1)
        ax_dice.plot(epochs, [np.nan if d is None else d for d in dice], color=c, alpha=0.6, lw=1)
    ax_loss.set(xlabel="epoch", ylabel="training loss, rescaled per loss",
               title="Training loss (each loss scaled to [0, 1])", ylim=(-0.02, 1.02))
    ax_dice.set(xlabel="epoch", ylabel="validation Dice", title="Validation Dice", ylim=(0, 1))
    for family, c in colours.items():
        ax_dice.plot([], [], color=c, label=family)
    ax_dice.legend(loc="lower right")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_figure(cards: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """One panel per loss family: every checkpoint's test-set pixel reliability diagram (15
    equal-width bins, before temperature) from its card; None when no card has a calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_segloss.interpret.plots import plot_reliability

    measured = [c for c in cards if (c.get("calibration") or {}).get("pixels")]
    if not measured:
        return None
    families = [f for f in ("pixel", "region", "boundary", "compound") if any(c["family"] == f for c in measured)]
    fig, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.9), squeeze=False,
                             constrained_layout=True)
    for ax, family in zip(axes[0], families):
        mine = sorted((c for c in measured if c["family"] == family), key=lambda c: c["name"])
        curves = {c["name"]: Reliability.from_dict(c["calibration"]["pixels"]["before"]["reliability"]["width"])
                  for c in mine}
        ax.set_prop_cycle(None)
        plot_reliability(ax, curves, f"{family} losses (test pixels)")
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def landscapes(checkpoints: Mapping[str, Any], test: Any, *, steps: int = 11, span: float = 1.0,
               seed: int = 0) -> dict[str, Any]:
    """1-D :func:`napari_segloss.interpret.landscape.checkpoint_landscape` of every checkpoint (name ->
    card path or ``LoadedCheckpoint``; its own loss, Dice and BCE) on the same fixed batch: the first
    four test slices of :func:`pick_grid_slices`."""
    from napari_segloss.interpret.landscape import checkpoint_landscape

    idx = pick_grid_slices(test)[:4]
    images, masks = test.images[idx], test.masks[idx]
    spacing = tuple(float(v) for v in np.median(test.spacing[idx], axis=0))
    return {name: checkpoint_landscape(checkpoint, images, masks, normalized=True, spacing=spacing, steps=steps,
                                       span=span, seed=seed) for name, checkpoint in checkpoints.items()}


def landscape_figure(curves: Mapping[str, Any], cards: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Small multiples, one per checkpoint (sorted by test Dice): own loss, Dice and BCE along one
    filter-normalised direction, each minus its value at the checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_segloss.interpret.plots import SERIES_COLORS

    order = [c["name"] for c in sorted(cards, key=lambda c: c["test_metrics"].get("dice") or -1.0, reverse=True)
             if c["name"] in curves]
    cols = 6
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.9 * rows), squeeze=False, sharex=True,
                             constrained_layout=True)
    for ax, name in zip(axes.ravel(), order):
        land = curves[name]
        for label, color in zip(land.values, SERIES_COLORS):
            ax.plot(land.alphas, land.values[label] - land.origin[label], color=color, lw=1.2, label=label)
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(order):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, ["own loss" if lab == "own" else lab for lab in labels], loc="outside upper center", ncol=3,
               fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def calibration_findings(cards: Sequence[Mapping[str, Any]], curves: Mapping[str, Any] | None = None) -> list[str]:
    """Markdown bullets generated from the cards (and the 1-D landscapes): the most over- and
    under-confident checkpoints (temperature), and the flattest and sharpest minima measured by the
    rise of the Dice loss at the two ends of the curve (bounded in [0, 1], so it compares across losses)."""
    from napari_segloss.interpret.landscape import landscape_sharpness

    out = []
    temps = sorted(((headline(c.get("calibration") or {})["temperature"], c["name"]) for c in cards),
                   reverse=True)
    temps = [(t, n) for t, n in temps if np.isfinite(t)]
    if temps:
        over = [f"{n} (T {t:.2f})" for t, n in temps[:5] if t > 1]
        under = [f"{n} (T {t:.2f})" for t, n in temps[::-1][:5] if t < 1]
        out.append(f"- **Over-confident** (temperature > 1 softens them most): {', '.join(over) or 'none'}.")
        out.append(f"- **Under-confident** (temperature < 1 sharpens them): {', '.join(under) or 'none'}.")
    if curves:
        collapsed = {c["name"] for c in cards if "Collapsed" in c.get("notes", "")}  # constant output: flat, trivially
        rise = sorted((landscape_sharpness(land, "dice"), name) for name, land in curves.items()
                      if "dice" in land.values and name not in collapsed)
        out.append("- **Flattest minima** (smallest Dice-loss rise at ±1 filter norm; collapsed checkpoints left out): "
                   + ", ".join(f"{n} ({r:+.3f})" for r, n in rise[:5]) + ".")
        out.append("- **Sharpest minima**: " + ", ".join(f"{n} ({r:+.3f})" for r, n in rise[::-1][:5]) + ".")
    return out


def pick_grid_slices(test: Any, n: int = 5) -> list[int]:
    """Indices of ``n`` test slices: the median-sized tumour of each kind, then the largest
    remaining tumours, and the first tumour-free slice last."""
    areas = test.masks.sum(axis=(1, 2))
    tumour = np.flatnonzero(areas > 0)
    picks: list[int] = []
    for kind in sorted({test.kinds[i] for i in tumour}):
        of_kind = sorted((i for i in tumour if test.kinds[i] == kind), key=lambda i: areas[i])
        picks.append(int(of_kind[len(of_kind) // 2]))
    by_size = [int(i) for i in tumour[np.argsort(-areas[tumour])] if i not in picks]
    picks = (picks + by_size)[: n - 1]
    empty = np.flatnonzero(areas == 0)
    return picks + [int(empty[0])] if empty.size else picks[:n]


def _zoom_box(truth: np.ndarray, size: int = 112) -> tuple[slice, slice]:
    """A square window of at least ``size`` pixels around the tumour (the image centre if none)."""
    h, w = truth.shape
    if truth.any():
        rows, cols = np.nonzero(truth)
        centre = ((rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2)
        size = max(size, int(1.5 * max(np.ptp(rows), np.ptp(cols))))
    else:
        centre = (h // 2, w // 2)
    size = min(size, h, w)
    top = int(np.clip(centre[0] - size // 2, 0, h - size))
    left = int(np.clip(centre[1] - size // 2, 0, w - size))
    return slice(top, top + size), slice(left, left + size)


def grid_figure(names: Sequence[str], checkpoints: Sequence[Any], test: Any, path: str | Path,
                indices: Sequence[int] | None = None) -> Path:
    """Rows: ground truth then every loaded checkpoint (in the given order); columns: the same test
    slices, zoomed on the tumour. Each panel shows TP/FP/FN colours (:func:`overlays.render_difference`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_segloss.overlays import DIFFERENCE_COLORS, DIFFERENCE_NAMES, difference_map, render_difference

    idx = list(indices if indices is not None else pick_grid_slices(test))
    images, truths = test.images[idx], test.masks[idx]
    boxes = [_zoom_box(t) for t in truths]
    rows = [("ground truth", truths)] + [
        (name, probabilities(c.model, images, image_size=c.card.image_size) >= THRESHOLD)
        for name, c in zip(names, checkpoints)
    ]
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(1.5 * len(idx) + 1.2, 1.5 * len(rows)),
                             squeeze=False, constrained_layout=True)
    for r, (label, preds) in enumerate(rows):
        for c, i in enumerate(idx):
            ax = axes[r][c]
            ax.imshow(render_difference(images[c], difference_map(preds[c], truths[c]))[boxes[c]])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            if r == 0:
                ax.set_title(f"{test.names[i]}\n{test.kinds[i]}", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=DIFFERENCE_COLORS[k]) for k in (1, 2, 3)]
    fig.legend(handles, [DIFFERENCE_NAMES[k] for k in (1, 2, 3)], loc="outside upper center", ncol=3, fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def findings(cards: Sequence[Mapping[str, Any]], margin: float = 0.15) -> list[str]:
    """One Markdown bullet per checkpoint that collapsed or scored ``margin`` below the median Dice.

    Collapse notes come from the cards; for the others the bullet says whether the loss
    over-segments (precision well below sensitivity) or under-segments (the reverse), from the
    card's test metrics, so the reader sees *how* a loss fails, not only that it does.
    """
    scores = [c["test_metrics"].get("dice") for c in cards]
    median = float(np.median([d for d in scores if d is not None])) if any(d is not None for d in scores) else 0.0
    out = []
    for card in sorted(cards, key=lambda c: c["test_metrics"].get("dice") or -1.0):
        m, notes = card["test_metrics"], card.get("notes", "")
        dice = m.get("dice")
        if "Collapsed" in notes:
            out.append(f"- **{card['name']}**: {notes}")
        elif dice is not None and dice < median - margin:
            precision, sensitivity = m.get("precision"), m.get("sensitivity")
            how = ""
            if precision is not None and sensitivity is not None:
                if precision < sensitivity - 0.2:
                    how = "over-segments: it finds the tumours but marks far too much around and beside them"
                elif sensitivity < precision - 0.2:
                    how = "under-segments: what it marks is mostly tumour, but it misses much of it"
                else:
                    how = "both misses tumour and marks background"
            out.append(f"- **{card['name']}**: test Dice {dice:.3f} (median {median:.3f}), precision "
                       f"{_fmt(precision)}, sensitivity {_fmt(sensitivity)}, false alarms on "
                       f"{m.get('empty_slice_false_positives')}/{m.get('n_tumour_free')} tumour-free slices"
                       + (f": {how}." if how else "."))
    return out


def _recipe_line(recipe: Mapping[str, Any]) -> str:
    keys = ("epochs", "batch", "patch", "downsample", "lr", "weight_decay", "warmup", "grad_clip", "seed",
            "n_train", "n_val", "n_test", "n_volumes", "optimizer", "schedule")
    return ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe)


#: the real-data targets of the bundled set (per-slice mean Dice on fold 4; false-alarm share)
TARGETS = {"best": 0.80, "dice": 0.75, "median": 0.70, "collapsed": 3, "best_false_alarms": 0.10}


def is_real(card: Mapping[str, Any]) -> bool:
    """Whether a card was trained on a labelled folder of real scans (not the synthetic phantom)."""
    return card.get("data", {}).get("source") == "labelled folder"


def seed_figures(path: str | Path) -> dict[str, float]:
    """The seed tool's published validation Dice per loss (our names) from ``seed_results.md``
    (``{}`` when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].replace("_", "").isalpha() and cells[1].islower():
            try:
                out[cells[1]] = float(cells[2])
            except ValueError:
                continue
    return out


def targets(cards: Sequence[Mapping[str, Any]], in_context: Mapping[str, float | None] | None = None) -> list[str]:
    """Markdown bullets: each real-data target, the measured figure and whether it is met
    (``in_context``: per checkpoint, the negatives' false-alarm rate seen in their whole slice)."""
    dice = {c["name"]: c["test_metrics"].get("dice") for c in cards}
    measured = [v for v in dice.values() if isinstance(v, float)]
    if not measured:
        return []
    best = max(cards, key=lambda c: c["test_metrics"].get("dice") or -1.0)
    rate = (best["test_metrics"].get("empty_slice_fp_rate") or {}).get("mean")
    collapsed = [n for n, v in dice.items() if isinstance(v, float) and v < 0.1]

    def line(text: str, ok: bool) -> str:
        return f"- {text}: **{'met' if ok else 'missed'}**"

    out = [line(f"best checkpoint ≥ {TARGETS['best']:.2f}: {best['name']} {measured and max(measured):.3f}",
                max(measured) >= TARGETS["best"])]
    if isinstance(dice.get("dice"), float):
        out.append(line(f"plain `dice` ≥ {TARGETS['dice']:.2f}: {dice['dice']:.3f}", dice["dice"] >= TARGETS["dice"]))
    out.append(line(f"median of the {len(measured)} retrained ≥ {TARGETS['median']:.2f}: {np.median(measured):.3f}",
                    float(np.median(measured)) >= TARGETS["median"]))
    out.append(line(f"at most {TARGETS['collapsed']} collapsed: {len(collapsed)}"
                    + (f" ({', '.join(collapsed)})" if collapsed else ""), len(collapsed) <= TARGETS["collapsed"]))
    if rate is not None:
        out.append(line(f"best checkpoint's false alarms ≤ {TARGETS['best_false_alarms']:.0%} of the negatives: "
                        f"{rate:.1%}", rate <= TARGETS["best_false_alarms"]))
    seen = (in_context or {}).get(best["name"])
    if seen is not None:
        out.append(line(f"the same, the negative windows seen in their whole slice: {seen:.1%}",
                        seen <= TARGETS["best_false_alarms"]))
    return out


def real_table(cards: Sequence[Mapping[str, Any]], paired: Mapping[str, Mapping[str, Any]],
               synthetic: Mapping[str, float], seed: Mapping[str, float],
               in_context: Mapping[str, float | None] | None = None) -> str:
    """The headline table: fold-4 figures from the cards, paired ΔDice vs ``dice``, false alarms on
    the negatives (run alone, and ``in_context``: seen in their whole slice), ECE, the synthetic
    test Dice and the seed tool's published validation Dice."""
    from napari_segloss.metrics import format_value

    head = ("| # | loss | family | fold-4 Dice [95% CI] | IoU | HD95 | sensitivity | precision | "
            "false alarms [95% CI] | in context | ΔDice vs dice | pixel ECE | synthetic test Dice | "
            "seed tool val Dice* |\n" + "|---" * 14 + "|\n")
    rows = []
    ranked = sorted(cards, key=lambda c: c["test_metrics"].get("dice") or -1.0, reverse=True)
    for rank, card in enumerate(ranked, 1):
        m = card["test_metrics"]
        rate = m.get("empty_slice_fp_rate") or {}
        cal = headline(card.get("calibration") or {})
        rows.append(
            f"| {rank} | {card['name']} | {card['family']} | {_fmt(m.get('dice'))}{_ci(m.get('ci95', {}).get('dice'))} | "
            f"{_fmt(m.get('iou'))} | {format_value('hd95', m.get('hd95'))} | {_fmt(m.get('sensitivity'))} | "
            f"{_fmt(m.get('precision'))} | {m.get('empty_slice_false_positives', 'n/a')}/{m.get('n_tumour_free', 'n/a')}"
            f"{_ci(rate.get('ci95'), 2)} | {_fmt((in_context or {}).get(card['name']), 2)} | "
            f"{_diff(paired.get(card['name'], {}).get('dice_slices'))} | "
            f"{_fmt(cal['ece'], 4)} | {_fmt(synthetic.get(card['name']))} | {_fmt(seed.get(card['loss']))} |"
        )
    return head + "\n".join(rows) + "\n"


def analysis_section(cards: Sequence[Mapping[str, Any]], paths: Sequence[Path], test: Any | None,
                     out_dir: Path, suffix: str = "") -> list[str]:
    """Markdown lines (and figures ``results_<name><suffix>.png`` in ``out_dir``) shared by the real
    and the synthetic set: findings, training curves, reliability per family and, with ``test``
    slices, 1-D loss landscapes on four of them."""
    notes = findings(cards)
    curves = curves_figure(cards, out_dir / f"results_curves{suffix}.png")
    reliability = reliability_figure(cards, out_dir / f"results_reliability{suffix}.png")
    curves_1d = landscapes({card["name"]: path for card, path in zip(cards, paths)}, test) if test is not None else {}
    lines = [
        "## Findings under the shared recipe",
        "",
        "Checkpoints that collapsed to empty predictions or scored more than 0.15 below the median test Dice, "
        "worst first (generated from the cards):",
        "",
        "\n".join(notes) if notes else "None: every checkpoint is within 0.15 of the median test Dice.",
        "",
        "## Training curves",
        "",
        "Left: each loss's training curve rescaled to [0, 1] over its own epochs (losses have different scales "
        "and some are negative, so only the shapes compare). Right: validation Dice per epoch. Colour = family.",
        "",
        f"![loss and validation Dice per epoch]({curves.name})",
        "",
        "## Calibration and loss landscapes",
        "",
        "What the loss does to the probabilities: reliability diagrams of the test pixels (15 equal-width bins, "
        "before the post-hoc temperature; the diagonal is perfect calibration), one panel per loss family, "
        "from the cards' `calibration` (`scripts/make_calibration.py`; definitions in "
        "`napari_segloss.interpret.calibration`). The ECE columns above give the pixel and tumour-presence "
        "ECE before → after the temperature T fitted on the validation slices.",
        "",
        f"![reliability per family]({reliability.name})" if reliability else "No card has a calibration yet.",
        "",
    ]
    if curves_1d:
        landscape = landscape_figure(curves_1d, cards, out_dir / f"results_landscapes{suffix}.png")
        lines += [
            "And around each minimum: the checkpoint's own loss, Dice and BCE along one filter-normalised random "
            "direction (Li et al., NeurIPS 2018; seed 0, the same four test slices), each minus its value at "
            "the checkpoint; x = step in units of each filter's own norm.",
            "",
            f"![1-D loss landscapes]({landscape.name})",
            "",
        ]
    lines += ["\n".join(calibration_findings(cards, curves_1d)), ""]
    return lines


def real_section(cards: Sequence[Mapping[str, Any]], paths: Sequence[Path], out_dir: Path,
                 data: Path | None, seed_results: Path | None) -> list[str]:
    """Markdown lines (and figures in ``out_dir``) of the real-data part of the results page.

    With ``data`` (the labelled folder the cards were trained on) every checkpoint is re-run on
    fold 4 and its negatives for the paired differences and a prediction grid, and on the
    synthetic test set for the second column; without it, the cards' figures alone.
    """
    from napari_segloss.checkpoints import load
    from napari_segloss.train.evaluate import DEFINITION
    from napari_segloss.train.loop import Recipe, load_splits

    first = cards[0]
    recipe = Recipe.from_dict(first["recipe"])
    checkpoints = {card["name"]: load(path) for card, path in zip(cards, paths)}
    paired: dict[str, dict[str, Any]] = {}
    synthetic: dict[str, float] = {}
    in_context: dict[str, float | None] = {}
    grid_lines = ["(The prediction grid needs the real data beside the checkout.)"]
    test = None
    if data is not None and (Path(data) / "labels.csv").is_file():
        splits = load_splits(data, recipe, first["normalization"])
        test = splits.test
        scored = {name: reevaluate(checkpoint, splits) for name, checkpoint in checkpoints.items()}
        rows = {name: r for name, (_, r) in scored.items()}
        in_context = {name: (m.get("empty_slice_fp_rate_in_context") or {}).get("mean")
                      for name, (m, _) in scored.items()}
        paired = paired_vs_reference(rows)
        # the phantom at its rendered resolution; each card's network sees it at its own pixel size
        phantom = load_splits("synthetic", dataclasses.replace(Recipe(), downsample=1), first["normalization"])
        for name, checkpoint in checkpoints.items():
            synthetic[name] = float(evaluate_synthetic(checkpoint, phantom))
        ranked = sorted(cards, key=lambda c: c["test_metrics"].get("dice") or -1.0, reverse=True)
        shown = ranked[:3] + [c for c in ranked if c["name"] == REFERENCE and c not in ranked[:3]]
        shown += [c for c in ranked[-2:] if c not in shown]
        grid = grid_figure([c["name"] for c in shown], [checkpoints[c["name"]] for c in shown], splits.test,
                           out_dir / "results_grid_real.png", indices=pick_grid_slices(splits.test, n=6))
        grid_lines = [
            "Rows: ground truth, the three best checkpoints, `dice`, the two worst; columns: fold-4 slices "
            "(the median-sized tumour of each type, then the largest others), zoomed on the tumour. Colours: "
            "true positive, false positive, false negative.",
            "",
            f"![fold-4 predictions]({grid.name})",
        ]
    data_info = first["data"]
    dataset = data_info.get("dataset", {})
    counts = data_info.get("counts", {})
    done = len(cards)
    return [
        "## Real scans: fold 4 of Cheng's figshare brain-tumour dataset (the headline)",
        "",
        f"{done} of 38 losses retrained on real scans so far (`make weights`, resumable; the others below are the "
        "previous synthetic set). " if done < 38 else "",
        f"**Data:** {dataset.get('name', 'real scans')} ({dataset.get('licence', '')}; "
        + "; ".join(dataset.get("citation", [])) + "). "
        f"Training folds {data_info.get('folds', {}).get('train')} ({counts.get('train')} slices; validation: "
        f"{data_info.get('folds', {}).get('val')}, {counts.get('val')} slices), test fold "
        f"{data_info.get('folds', {}).get('test')} ({counts.get('test')} tumour slices and "
        f"{counts.get('test_negatives')} negatives: {data_info.get('negatives', '')}). Fold 4 was used for no choice.",
        "",
        f"**Recipe (identical for every loss):** {_recipe_line(first['recipe'])}, shared loss-neutral pretraining "
        f"{first['recipe'].get('pretraining', {}).get('steps', 0)} steps.",
        "",
        f"**Definitions.** {DEFINITION}",
        "",
        "**Targets** (fold-4 per-slice mean Dice; a missed tumour counts 0):",
        "",
        *targets(cards, in_context),
        "",
        real_table(cards, paired, synthetic, seed_figures(seed_results) if seed_results else {}, in_context),
        "*The seed tool's figures are its published **validation** Dice on its authors' unpublished real "
        "data (split not known to be patient-disjoint, probably pooled over pixels), not a like-for-like "
        "target: ours are per-slice means on a held-out, patient-disjoint fold. Synthetic test Dice: the "
        "same checkpoint on the synthetic phantom's fixed test slices (the demo's data).",
        "",
        "### Fold-4 Dice by tumour type and size",
        "",
        breakdown_table(cards),
        "### The same fold-4 slices, selected checkpoints",
        "",
        *grid_lines,
        "",
        *analysis_section(cards, paths, test, out_dir, "_real"),
    ]


def evaluate_synthetic(checkpoint: Any, splits: Any) -> float:
    """Mean per-slice test Dice of a loaded checkpoint on the synthetic phantom's test slices
    (run at the card's training image size)."""
    from napari_segloss.train.evaluate import evaluate

    return evaluate(checkpoint.model, splits, image_size=checkpoint.card.image_size)[0].get("dice", float("nan"))


def write_report(weights: str | Path, out_dir: str | Path, *, data: str | Path | None = None,
                 seed_results: str | Path | None = None) -> Path:
    """Re-evaluate every checkpoint in ``weights`` on its cards' test set and write
    ``results.md`` and its figures into ``out_dir``.

    Real-data cards (:func:`is_real`) come first, re-run on ``data`` (their labelled folder) when
    given; synthetic cards follow, re-run on the synthetic test set. ``seed_results``: the seed
    tool's published per-loss table (``shared/seed_results.md``) for a side-by-side column.
    """
    import json

    from napari_segloss.checkpoints import load
    from napari_segloss.train.evaluate import DEFINITION
    from napari_segloss.train.loop import Recipe, load_splits

    weights, out_dir = Path(weights), Path(out_dir)
    paths = sorted(p for p in weights.glob("*.json") if p.with_suffix(".safetensors").exists())
    if not paths:
        raise FileNotFoundError(f"{weights}: no checkpoints (run `make weights`)")
    all_cards = [json.loads(p.read_text()) for p in paths]
    out_dir.mkdir(parents=True, exist_ok=True)
    real = [(c, p) for c, p in zip(all_cards, paths) if is_real(c)]
    real_lines = real_section([c for c, _ in real], [p for _, p in real], out_dir,
                              Path(data) if data else None, Path(seed_results) if seed_results else None) if real else []
    kept = [(c, p) for c, p in zip(all_cards, paths) if not is_real(c)]
    if not kept:
        report = out_dir / "results.md"
        report.write_text("\n".join(["# Results: one network, one recipe, one loss at a time", "",
                                      "Generated by `scripts/make_results.py` from the model cards in `weights/` "
                                      "(do not edit by hand).", "", *real_lines]))
        return report
    cards, paths = [c for c, _ in kept], [p for _, p in kept]
    first = cards[0]
    splits = load_splits("synthetic", Recipe.from_dict(first["recipe"]), first["normalization"])
    checkpoints = {card["name"]: load(path) for card, path in zip(cards, paths)}
    rows = {name: reevaluate(checkpoint, splits)[1] for name, checkpoint in checkpoints.items()}
    paired = paired_vs_reference(rows)

    ranked = sorted(cards, key=lambda c: c["test_metrics"].get("dice") or -1.0, reverse=True)
    grid = grid_figure([c["name"] for c in ranked], [checkpoints[c["name"]] for c in ranked], splits.test,
                       out_dir / "results_grid.png")
    minutes = sum(h.get("seconds") or 0.0 for c in cards for h in c["history"]) / 60
    text = "\n".join([
        "# Results: one network, one recipe, one loss at a time",
        "",
        "Generated by `scripts/make_results.py` from the model cards in `weights/` (do not edit by hand).",
        "",
        *real_lines,
        "## The previous set, trained on the synthetic phantom" if real_lines else "",
        "",
        f"{len(cards)} checkpoints; training took {minutes:.0f} min in total (sum of epoch times, "
        "validation included).",
        "",
        f"**Recipe (identical for every loss):** {_recipe_line(first['recipe'])}. Data: synthetic brain MRI, "
        f"cache `{first['data'].get('cache')}` (generator {first['data'].get('generator')}).",
        "",
        f"**Definitions.** {DEFINITION}",
        "",
        "ΔDice columns: paired difference to the plain `dice` checkpoint on the same test images (2D: tumour "
        "slices; 3D: volumes) with a paired bootstrap 95% interval; `*` marks intervals that exclude 0. "
        "False alarms: tumour-free test slices with any predicted pixel / all tumour-free slices.",
        "",
        "## All checkpoints, sorted by test Dice",
        "",
        table(cards, paired),
        "## Test Dice by tumour kind and size class",
        "",
        breakdown_table(cards),
        "## The same test slices, every checkpoint",
        "",
        "Rows: ground truth, then every checkpoint from best to worst test Dice. Colours: true positive, "
        "false positive, false negative (Okabe-Ito; see `napari_segloss.overlays`). The last column is a "
        "tumour-free slice (any colour there is a false alarm).",
        "",
        f"![grid of predictions]({grid.name})",
        "",
        *analysis_section(cards, paths, splits.test, out_dir),
    ])
    report = out_dir / "results.md"
    report.write_text(text)
    return report

