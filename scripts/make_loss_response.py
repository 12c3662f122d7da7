"""Draw docs/loss_response.png: how six losses respond to one pixel's probability and to
over-/under-segmentation of a synthetic tumour (napari_segloss.interpret).

Usage: ``python scripts/make_loss_response.py [--out docs/loss_response.png]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from napari_segloss.data.synthetic import generate_slice
from napari_segloss.interpret import response_curves, size_response
from napari_segloss.interpret.plots import plot_response

LOSSES = ("bce", "focal", "dice", "tversky", "focal_tversky", "hausdorff_dt")
#: synthetic slice whose tumour is grown and shrunk (a glioma of about 600 pixels at 256 x 256)
SEED, SIZE = 6, 256
RADII = tuple(range(-6, 7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/loss_response.png"))
    args = parser.parse_args()
    curves = response_curves(LOSSES, np.linspace(0.01, 0.99, 99))
    sample = generate_slice(SEED, SIZE)
    size = size_response(LOSSES, sample.mask, RADII, spacing=sample.spacing)
    fig = Figure(figsize=(2.6 * len(LOSSES), 8.2), dpi=110, layout="constrained")
    plot_response(fig, curves, size, legend="outside upper right")
    fig.suptitle(f"How losses respond: one pixel's probability (32x32 context, tumour disc r=5 px) and a "
                 f"{sample.kind} mask ({int(sample.mask.sum())} px) eroded or dilated", fontsize=10, x=0.01,
                 ha="left")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
