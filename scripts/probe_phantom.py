"""How much the synthetic phantom looks like the real scans, measured with real checkpoints.

Prints, for each ``--checkpoints`` (default: the bundled real ``dice``, ``dice_focal`` and
``unified_focal``), the mean Dice on the tumour slices among the first ``--slices`` synthetic test
slices (256²) per tumour kind and the share of tumour-free ones it marks; then, with ``--data``
(default: the team's figshare copy, folds 1-3 only), per kind the median tumour area (mm²) and the
intensity ratios of the percentile-normalised image (tumour median, head 99th percentile, each
over the head's median) on synthetic and real slices side by side.

Usage: ``python scripts/probe_phantom.py [--checkpoints NAME ...] [--slices 80] [--data DIR]``
(CPU, about a minute).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from napari_segloss.checkpoints import load
from napari_segloss.data.figshare import read_labels
from napari_segloss.data.synthetic import generate_slice, split_seeds
from napari_segloss.inference import predict
from napari_segloss.io import read_scans
from napari_segloss.metrics import compute
from napari_segloss.paths import shared_data_dir
from napari_segloss.preprocess import normalize


def appearance(image: np.ndarray, mask: np.ndarray, pixel_mm: float) -> tuple[float, float, float]:
    """``(tumour area mm², tumour median / head median, head 99th percentile / head median)`` of a
    (H, W) slice after the checkpoints' percentile normalisation; head = normalised value > 0.08."""
    x = normalize(image.astype(np.float32))
    head = x > 0.08
    median = float(np.median(x[head]))
    return float(mask.sum()) * pixel_mm**2, float(np.median(x[mask])) / median, float(np.percentile(x[head], 99)) / median


def phantom_dice(names: list[str], slices: int) -> None:
    models = [load(n) for n in names]
    dice, alarms, empty = defaultdict(lambda: defaultdict(list)), defaultdict(int), 0
    for seed in split_seeds("test", slices):
        sample = generate_slice(seed, 256)
        empty += not sample.mask.any()
        for name, model in zip(names, models):
            pred = predict(sample.image, model, device="cpu", spacing=sample.spacing).mask()
            if sample.mask.any():
                dice[name][sample.kind].append(compute(pred, sample.mask)["dice"])
            else:
                alarms[name] += bool(pred.any())
    for name in names:
        kinds = ", ".join(f"{k} {np.mean(v):.3f} (n={len(v)})" for k, v in sorted(dice[name].items()))
        every = np.mean([d for v in dice[name].values() for d in v])
        print(f"{name}: synthetic test Dice {every:.3f} [{kinds}]; marks {alarms[name]}/{empty} tumour-free slices")


def compare_appearance(data: Path, slices: int) -> None:
    real, synthetic = defaultdict(list), defaultdict(list)
    for row in [r for r in sorted(read_labels(data), key=lambda r: r.name) if r.fold in (1, 2, 3)][::15]:
        image = read_scans(data / "images" / f"{row.name}.png")[0].data
        mask = read_scans(data / "masks" / f"{row.name}.png")[0].data > 0
        real[row.tumour_type].append(appearance(image, mask, row.pixel_mm or 1.0))
    for seed in split_seeds("train", slices):
        sample = generate_slice(seed, 256)
        if sample.mask.any():
            synthetic[sample.kind].append(appearance(sample.image, sample.mask, sample.spacing[0]))
    print("kind: median area mm², tumour/head median, head p99/head median -- synthetic | real (folds 1-3)")
    for kind in sorted(real):
        cols = [np.median(np.array(group[kind]), axis=0) if group[kind] else [np.nan] * 3 for group in (synthetic, real)]
        print(f"{kind}: " + " | ".join(f"{a:.0f}, {b:.2f}, {c:.2f}" for a, b, c in cols))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", default=["dice", "dice_focal", "unified_focal"])
    parser.add_argument("--slices", type=int, default=80)
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "figshare")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    phantom_dice(args.checkpoints, args.slices)
    if (args.data / "labels.csv").is_file():
        compare_appearance(args.data, 2 * args.slices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
