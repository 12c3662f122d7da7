"""What a collapsed real-data checkpoint outputs, and (for ``conditional_boundary``) why its loss likes it.

For each ``--checkpoints`` (default: the three that collapse on fold 4) prints, over 8 real
training slices (fold 1, every 60th), the largest predicted probability, the share of pixels at
p >= 0.5 and the median probability inside the tumour; then the terms of the conditional boundary
loss (BCE, A2P&N context, NCE, CN) on the same slices for its own collapsed network next to the
``dice`` and ``bce`` networks, which find the tumours.

Usage: ``python scripts/explain_collapse.py [--data DIR] [--checkpoints NAME ...]`` (CPU, 20 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_segloss.data.figshare import read_labels
from napari_segloss.inference import Segmenter, predict
from napari_segloss.io import read_scans
from napari_segloss.losses import build
from napari_segloss.losses.boundary import _bce
from napari_segloss.paths import shared_data_dir


def slices(data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    rows = [r for r in sorted(read_labels(data), key=lambda r: r.name) if r.fold == 1][::60][:8]
    return [(read_scans(data / "images" / f"{r.name}.png")[0].data,
             read_scans(data / "masks" / f"{r.name}.png")[0].data > 0) for r in rows]


def outputs(name: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    probs = [(predict(image, name, device="cpu").probability, mask) for image, mask in pairs]
    top = max(float(p.max()) for p, _ in probs)
    share = np.mean([(p >= 0.5).mean() for p, _ in probs])
    inside = np.mean([np.median(p[m]) for p, m in probs])
    return f"{name}: max p {top:.2e}, share of pixels at p >= 0.5 {share:.3f}, median p in the tumour {inside:.2e}"


def boundary_terms(name: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    loss = build("conditional_boundary")
    segmenter = Segmenter.load(name, device="cpu", backend="torch")
    x = torch.from_numpy(np.stack([segmenter.prepare(image)[0][0] for image, _ in pairs]))
    target = torch.from_numpy(np.stack([m[None].astype(np.float32) for _, m in pairs]))
    with torch.no_grad():
        logits, features = segmenter.forward_features(x)
        size = tuple(features.shape[-2:])
        labels = F.interpolate(target, size=size, mode="nearest")
        band = loss.band(target, size)
        context = loss.context(features, labels, band & (labels > 0.5))
        nce, cn = loss.neighbour_terms(features, F.interpolate(logits, size=size, mode="area"), labels, band)
        total = loss(logits, target, features=features)
    return (f"{name} network: BCE {_bce(logits, target).item():.3f}, context {context.item():.3f}, "
            f"NCE {nce.item():.3f}, CN {cn.item():.3f}; conditional_boundary loss {total.item():.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "figshare")
    parser.add_argument("--checkpoints", nargs="+", default=["region_wise", "lovasz_hinge", "conditional_boundary"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pairs = slices(args.data)
    for name in args.checkpoints:
        print(outputs(name, pairs))
    for name in ("conditional_boundary", "dice", "bce"):
        print(boundary_terms(name, pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
