"""Batch-mode throughput and memory: a folder of synthetic 256² image/mask pairs through run_batch.

Writes ``--n`` PNG pairs with :func:`napari_segloss.data.export.write_dataset` (or reuses
``--data``), runs :func:`napari_segloss.batch.run_batch` with one checkpoint (the default one; a
randomly initialised DEFAULT_ARCHITECTURE model when none is installed, which runs at the same
speed) and reports images/s (everything included: reading, inference, metrics, four renderings,
PNG encoding, the ZIP, the report) and the resident memory as the run progresses. Bounded memory
shows as a flat RSS from 10 % to 100 % of the images.

    python benchmarks/bench_batch.py                      # 1,000 images, 1 torch thread
    python benchmarks/bench_batch.py --n 200 --workers 2 --threads 1 --json batch.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from napari_segloss.batch import BatchProgress, run_batch
from napari_segloss.checkpoints import CheckpointError, ModelCard, default_checkpoint, save_checkpoint
from napari_segloss.data.export import write_dataset
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _checkpoint(tmp: Path) -> tuple[str, str]:
    """The default checkpoint's card, or a random one written to ``tmp``."""
    try:
        info = default_checkpoint()
        return str(info.path), info.name
    except CheckpointError:
        torch.manual_seed(0)
        save_checkpoint(build_model(DEFAULT_ARCHITECTURE), ModelCard(name="random_fpn", loss="dice"), tmp)
        return str(tmp / "random_fpn.json"), "random_fpn (random weights: no checkpoint installed)"


def bench(data: Path, out: Path, checkpoint: str, workers: int) -> dict[str, Any]:
    """Run the batch; RSS is sampled at every progress report."""
    samples: list[tuple[int, float]] = []

    def progress(p: BatchProgress) -> None:
        samples.append((p.done, _rss_mb()))
        if p.done and p.done % max(1, p.total // 10) == 0:
            print(f"  {p.done}/{p.total} images, RSS {samples[-1][1]:.0f} MB", file=sys.stderr)

    start = time.perf_counter()
    result = run_batch(data, [checkpoint], out, device="cpu", workers=workers, progress=progress)
    seconds = time.perf_counter() - start
    total = len(result.items)

    def rss_at(fraction: float) -> float:
        return next(rss for done, rss in samples if done >= fraction * total)

    return {
        "images": total,
        "failed": result.failed,
        "seconds": round(seconds, 1),
        "images_per_s": round(total / seconds, 2),
        "rss_mb_at_10pct": round(rss_at(0.1), 0),
        "rss_mb_at_50pct": round(rss_at(0.5), 0),
        "rss_mb_at_100pct": round(rss_at(1.0), 0),
        "peak_rss_mb": round(_peak_rss_mb(), 0),
        "result_zip_mb": round(out.stat().st_size / 2**20, 1),
        "mean_dice": result.summary[0]["dice_mean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="image/mask pairs to generate")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--data", type=Path, help="reuse (or create) this folder of pairs instead of a temporary one")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=1, help="run_batch worker threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp = Path(tmp)
        data = args.data or tmp / "data"
        if not (data / "manifest.csv").exists():
            start = time.perf_counter()
            write_dataset(data, args.n, fmt="png", size=args.size)
            print(f"wrote {args.n} pairs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        checkpoint, name = _checkpoint(tmp)
        figures = {
            "checkpoint": name,
            "size": args.size,
            "torch_threads": args.threads,
            "workers": args.workers,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "rss_mb_before": round(_rss_mb(), 0),
            **bench(data, tmp / "results.zip", checkpoint, args.workers),
        }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
