"""Is a collapsed loss broken, or does it only fail to leave an all-background start?

For each loss named, fine-tunes the bundled ``dice`` checkpoint (a network that already finds
tumours) with that loss on synthetic training slices, and reports the test Dice before and after,
next to the loss's own checkpoint trained from scratch. A loss that keeps (or improves) a good
network but collapses from scratch has a sound minimum that its gradient cannot reach from an
empty prediction; a loss that destroys a good network is suspect.

Usage: ``python scripts/probe_collapse.py [--losses hausdorff_dt region_wise dice] [--steps 150]``
(CPU, about a minute per loss). Prints one line per loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch

from napari_segloss.checkpoints import load
from napari_segloss.data.synthetic import generate_slice, split_seeds
from napari_segloss.inference import predict
from napari_segloss.interpret.finetune import fine_tune
from napari_segloss.metrics import compute


def mean_test_dice(model_or_name, n: int = 40) -> float:
    """Mean Dice over the tumour slices among the first ``n`` synthetic test slices (256²)."""
    scores = []
    for seed in split_seeds("test", n):
        sample = generate_slice(seed, 256)
        if sample.mask.any():
            scores.append(compute(predict(sample.image, model_or_name, device="cpu").mask(), sample.mask)["dice"])
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=["hausdorff_dt", "region_wise", "dice"])
    parser.add_argument("--start", default="dice", help="checkpoint to fine-tune (default: dice)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--slices", type=int, default=48, help="synthetic training slices")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    train = [generate_slice(seed, 256) for seed in split_seeds("train", args.slices, base_seed=20_000)]
    images, masks = [s.image for s in train], [s.mask for s in train]
    start = load(args.start, device="cpu")
    print(f"start {args.start}: test Dice {mean_test_dice(start):.3f}; {args.steps} steps, lr {args.lr}, "
          f"{args.slices} training slices", flush=True)
    for name in args.losses:
        model, card = fine_tune(start, images, masks, loss=name, steps=args.steps, lr=args.lr, device="cpu",
                                spacing=train[0].spacing)
        tuned = dataclasses.replace(start, model=model, card=card)
        scratch = mean_test_dice(name)
        print(f"{name:>16}: fine-tuned from {args.start} {mean_test_dice(tuned):.3f} | "
              f"its own checkpoint from scratch {scratch:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
