"""Benchmark the synthetic generator: time per 2D slice (256² by default) and per 3D volume.

    .venv/bin/python benchmarks/bench_synthetic.py [--size 256] [--n 50] [--volume]

Runs on one core (BLAS threads pinned to 1 before numpy loads). Reports the median and the best
per-slice time over ``n`` seeds: on a shared machine the best is the figure closest to an idle core.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from napari_segloss.data import generate_slice, generate_volume  # noqa: E402
from napari_segloss.data.template import load_template  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--plane", default="random")
    parser.add_argument("--volume", action="store_true", help="also time one default 64x256x256 volume")
    args = parser.parse_args()

    t0 = time.perf_counter()
    load_template()
    print(f"template load (once per process): {1e3 * (time.perf_counter() - t0):.0f} ms")
    generate_slice(0, args.size)  # warm-up
    times = []
    for seed in range(args.n):
        t0 = time.perf_counter()
        generate_slice(seed, args.size, plane=args.plane)
        times.append(time.perf_counter() - t0)
    ms = 1e3 * np.array(times)
    print(f"slice {args.size}x{args.size} ({args.plane}), {args.n} seeds: "
          f"median {np.median(ms):.1f} ms, best {ms.min():.1f} ms, p90 {np.percentile(ms, 90):.1f} ms")
    if args.volume:
        t0 = time.perf_counter()
        generate_volume(0)
        print(f"volume 64x256x256: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
