"""Fill ``calibration`` in the model cards of ``weights/`` (temperature, ECE/MCE/Brier/NLL, reliability).

Usage: ``python scripts/make_calibration.py [--weights weights] [--data synthetic|FOLDER] [--only NAME ...]``.

For every checkpoint: its validation and test slices come from its card's recipe
(:func:`napari_segloss.train.loop.load_splits`), its logits from the evaluation's prediction
path (:meth:`napari_segloss.inference.Segmenter.logits`), the numbers from
:func:`napari_segloss.interpret.calibration.calibration_summary`; only the card is rewritten
(:func:`napari_segloss.checkpoints.write_card`, which checks that the weights still have the
card's sha256; the weights file is never touched).
Re-run it after the bundled set is retrained; under a minute per checkpoint on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from napari_segloss.checkpoints import load, read_card, write_card
from napari_segloss.inference import Segmenter
from napari_segloss.interpret.calibration import calibration_summary
from napari_segloss.paths import weights_dir
from napari_segloss.train.loop import Recipe, load_splits


def calibrate(card_path: Path, data: str, splits_cache: dict[str, Any]) -> dict[str, Any]:
    """Compute and store the calibration of the checkpoint of ``card_path``; returns it."""
    card = read_card(card_path)
    recipe = Recipe.from_dict(card.recipe)
    key = json.dumps([data, recipe.to_dict(), card.normalization], sort_keys=True)
    if key not in splits_cache:
        splits_cache[key] = load_splits(data, recipe, card.normalization)
    splits = splits_cache[key]
    if splits.val is None or not len(splits.val) or splits.test is None or not len(splits.test):
        raise ValueError(f"{card.name}: the data {data!r} has no validation or no test slices")
    model = load(card_path).model
    segmenter = Segmenter(model, channels=card.input_channels)
    summary = calibration_summary(segmenter.logits(splits.val.images), splits.val.masks,
                                  segmenter.logits(splits.test.images), splits.test.masks)
    card.calibration = summary
    write_card(card, card_path.parent)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Calibrate every (or every ``--only``) checkpoint; prints one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=weights_dir(), help="checkpoint folder (default weights/)")
    parser.add_argument("--data", default="synthetic", help="'synthetic' (default) or the folder the cards were trained on")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these checkpoints")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.weights.glob("*.json") if p.with_suffix(".safetensors").exists())
    if args.only:
        unknown = sorted(set(args.only) - {p.stem for p in paths})
        if unknown:
            parser.error(f"unknown checkpoint(s) {', '.join(unknown)} in {args.weights}")
        paths = [p for p in paths if p.stem in args.only]
    if not paths:
        parser.error(f"{args.weights}: no checkpoints")
    splits: dict[str, Any] = {}
    for path in paths:
        start = time.perf_counter()
        s = calibrate(path, args.data, splits)
        px = s["pixels"]
        print(f"{path.stem:24s} T={s['temperature']:6.3f}  pixel ECE {px['before']['ece']:.4f} -> "
              f"{px['after']['ece']:.4f}  slice ECE {s['slices']['before']['ece']:.3f} -> "
              f"{s['slices']['after']['ece']:.3f}  ({time.perf_counter() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
