"""Draw docs/samples.png: synthetic T1-CE slices, three planes x (three tumour kinds + none).

    .venv/bin/python scripts/make_sample_grid.py [out.png]

Columns 1-4: the images as generated (test-split seeds). Columns 5-8: other seeds with the
ground truth outlined (red: tumour mask = enhancing + necrotic core; yellow: oedema, not in the mask).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from napari_segloss.data import PLANES, generate_slice, split_seeds  # noqa: E402
from napari_segloss.preprocess import normalize  # noqa: E402

KINDS = ("meningioma", "glioma", "pituitary", None)
SIZE = 256


def _rgb(sample, outline: bool) -> np.ndarray:
    grey = normalize(sample.image, {"method": "percentile", "low": 0.5, "high": 99.8})
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if outline:
        rgb[find_boundaries(sample.regions == 3, mode="inner") & ~sample.mask] = (1.0, 0.85, 0.1)
        rgb[find_boundaries(sample.mask, mode="inner")] = (1.0, 0.15, 0.15)
    return rgb


def main(out: Path) -> None:
    seeds = split_seeds("test", 2 * len(PLANES) * len(KINDS))
    fig, axes = plt.subplots(len(PLANES), 2 * len(KINDS), figsize=(16, 6.6), facecolor="black")
    k = 0
    for r, plane in enumerate(PLANES):
        for c in range(2 * len(KINDS)):
            kind = KINDS[c % len(KINDS)]
            sample = generate_slice(seeds[k], SIZE, plane=plane, tumour=kind or "none")
            k += 1
            ax = axes[r, c]
            ax.imshow(_rgb(sample, outline=c >= len(KINDS)), interpolation="nearest")
            ax.set_axis_off()
            area = 100 * sample.mask.sum() / sample.brain.sum()
            label = f"{plane} · {kind or 'no tumour'}" + (f" · {area:.1f} %" if kind else "")
            ax.set_title(label, color="white", fontsize=8)
    fig.suptitle("napari-segloss synthetic T1-CE brain MRI (MNI ICBM152 2009 anatomy); right half: ground truth "
                 "(red tumour mask, yellow oedema)", color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor="black")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "samples.png")
