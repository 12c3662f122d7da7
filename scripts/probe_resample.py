"""What running at the checkpoint's pixel size buys on a finer scan.

Takes every ``--every``-th real fold-4 test slice of the labelled folder ``--data`` (default the
team's figshare copy: 256², about 0.98 mm pixels), upsamples each ``--factor`` times (about 0.49 mm
pixels, image bilinear, mask nearest, the pixel size scaled to match, as a finer DICOM would say)
and prints the mean Dice of ``--checkpoint`` (default: the best bundled one) without and with
``predict(resample=True)``, next to its Dice on the slices as stored.

Usage: ``python scripts/probe_resample.py [--data DIR] [--checkpoint NAME] [--every 40]
[--factor 2]`` (CPU, about half a minute).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_segloss.checkpoints import list_checkpoints
from napari_segloss.data.figshare import read_labels
from napari_segloss.inference import predict
from napari_segloss.io import read_scans
from napari_segloss.metrics import compute
from napari_segloss.paths import shared_data_dir


def best_checkpoint() -> str:
    """The registered checkpoint with the highest test Dice in its card."""
    return max(list_checkpoints(), key=lambda info: info.card.test_metrics.get("dice") or 0.0).name


def dice_at_finer_scale(checkpoint: str, data: str | Path, *, every: int = 40, factor: float = 2.0,
                        fold: int = 4) -> tuple[list[float], list[float], list[float]]:
    """Per-slice Dice of ``checkpoint`` on every ``every``-th slice of ``fold`` in the labelled folder
    ``data``, upsampled by ``factor``: ``(without resampling, with resampling, slices as stored)``."""
    rows = [r for r in sorted(read_labels(data), key=lambda r: r.name) if r.fold == fold][::every]
    plain, resampled, stored = [], [], []
    for row in rows:
        image = read_scans(Path(data) / "images" / f"{row.name}.png")[0].data.astype(np.float32)
        mask = read_scans(Path(data) / "masks" / f"{row.name}.png")[0].data > 0
        spacing = (row.pixel_mm or 1.0,) * 2
        fine = ndimage.zoom(image, factor, order=1)
        truth = ndimage.zoom(mask.astype(np.uint8), factor, order=0).astype(bool)
        fine_spacing = tuple(s * image.shape[0] / fine.shape[0] for s in spacing)
        for out, flag in ((plain, False), (resampled, True)):
            result = predict(fine, checkpoint, device="cpu", spacing=fine_spacing, resample=flag)
            out.append(compute(result.mask(), truth)["dice"])
        stored.append(compute(predict(image, checkpoint, device="cpu", spacing=spacing).mask(), mask)["dice"])
    return plain, resampled, stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "figshare", help="labelled folder")
    parser.add_argument("--checkpoint", help="checkpoint name or path (default: best bundled test Dice)")
    parser.add_argument("--every", type=int, default=40, help="take every N-th fold-4 slice")
    parser.add_argument("--factor", type=float, default=2.0, help="upsampling factor (2: 0.98 mm -> 0.49 mm)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    name = args.checkpoint or best_checkpoint()
    plain, resampled, stored = dice_at_finer_scale(name, args.data, every=args.every, factor=args.factor)
    print(f"{name}: {len(plain)} fold-4 slices upsampled x{args.factor:g}: mean Dice without resampling "
          f"{np.mean(plain):.3f}, with resampling {np.mean(resampled):.3f}; slices as stored {np.mean(stored):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
