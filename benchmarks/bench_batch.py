"""Batch-mode throughput and memory: a folder of synthetic 256² image/mask pairs through run_batch.

Writes ``--n`` PNG pairs with :func:`napari_segloss.data.export.write_dataset` (or reuses
``--data``), runs :func:`napari_segloss.batch.run_batch` with one checkpoint (the default one; a
randomly initialised DEFAULT_ARCHITECTURE model when none is installed, which runs at the same
speed) and reports images/s (everything included: reading, inference, metrics, four renderings,
PNG encoding, the ZIP, the report) and the resident memory at each tenth of the run, also after
glibc's ``malloc_trim`` (freed heap pages kept by the allocator are not live memory). Bounded
memory shows as a flat trimmed RSS from the first tenth to the end.

    python benchmarks/bench_batch.py                      # 1,000 images, 1 torch thread
    python benchmarks/bench_batch.py --n 200 --workers 2 --threads 1 --json batch.json
"""

from __future__ import annotations

import argparse
import ctypes
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


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS shows live memory, not fragmentation."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def bench(data: Path, out: Path, checkpoint: str, workers: int) -> dict[str, Any]:
    """Run the batch; RSS is sampled at each tenth of the images, before and after malloc_trim."""
    samples: dict[int, tuple[float, float]] = {}

    def progress(p: BatchProgress) -> None:
        decile = 10 * p.done // max(p.total, 1)
        if p.done and decile not in samples:
            raw = _rss_mb()
            _malloc_trim()
            samples[decile] = (raw, _rss_mb())
            print(f"  {p.done}/{p.total} images, RSS {raw:.0f} MB ({samples[decile][1]:.0f} MB after malloc_trim)",
                  file=sys.stderr)

    start = time.perf_counter()
    result = run_batch(data, [checkpoint], out, device="cpu", workers=workers, progress=progress)
    seconds = time.perf_counter() - start
    total = len(result.items)
    first, middle, last = min(samples), sorted(samples)[len(samples) // 2], max(samples)
    return {
        "images": total,
        "failed": result.failed,
        "seconds": round(seconds, 1),
        "images_per_s": round(total / seconds, 2),
        "rss_mb_first_10pct_50pct_100pct": [round(samples[k][0]) for k in (first, middle, last)],
        "rss_mb_after_malloc_trim": [round(samples[k][1]) for k in (first, middle, last)],
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
