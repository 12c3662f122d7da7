"""What running at the checkpoint's pixel size buys on a finer scan.

Takes the tumour slices among the first ``--slices`` synthetic test slices (256², ~1 mm pixels),
upsamples each twice (0.5 mm pixels, image bilinear, mask nearest) and prints the mean Dice of
``--checkpoint`` (default: the best bundled one) without and with ``predict(resample=True)``,
next to its Dice on the native slices.

Usage: ``python scripts/probe_resample.py [--checkpoint NAME] [--slices 30] [--factor 2]``
(CPU, about half a minute).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy import ndimage

from napari_segloss.checkpoints import list_checkpoints
from napari_segloss.data.synthetic import generate_slice, split_seeds
from napari_segloss.inference import predict
from napari_segloss.metrics import compute


def best_checkpoint() -> str:
    """The registered checkpoint with the highest test Dice in its card."""
    return max(list_checkpoints(), key=lambda info: info.card.test_metrics.get("dice") or 0.0).name


def dice_at_finer_scale(checkpoint: str, slices: int, factor: float) -> tuple[list[float], list[float], list[float]]:
    """Per-slice Dice of ``checkpoint`` on the tumour slices among the first ``slices`` synthetic
    test slices upsampled by ``factor``: ``(without resampling, with resampling, native slices)``."""
    plain, resampled, native = [], [], []
    for seed in split_seeds("test", slices):
        sample = generate_slice(seed, 256)
        if not sample.mask.any():
            continue
        image = ndimage.zoom(sample.image.astype(np.float32), factor, order=1)
        truth = ndimage.zoom(sample.mask.astype(np.uint8), factor, order=0).astype(bool)
        spacing = tuple(s * sample.image.shape[0] / image.shape[0] for s in sample.spacing)
        plain.append(compute(predict(image, checkpoint, device="cpu", spacing=spacing, resample=False).mask(),
                             truth)["dice"])
        resampled.append(compute(predict(image, checkpoint, device="cpu", spacing=spacing, resample=True).mask(),
                                 truth)["dice"])
        native.append(compute(predict(sample.image, checkpoint, device="cpu").mask(), sample.mask)["dice"])
    return plain, resampled, native


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint name or path (default: best bundled test Dice)")
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--factor", type=float, default=2.0, help="upsampling factor (2: 1 mm -> 0.5 mm)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    name = args.checkpoint or best_checkpoint()
    plain, resampled, native = dice_at_finer_scale(name, args.slices, args.factor)
    print(f"{name}: {len(plain)} tumour slices upsampled x{args.factor:g}: mean Dice without resampling "
          f"{np.mean(plain):.3f}, with resampling {np.mean(resampled):.3f}; native slices {np.mean(native):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
