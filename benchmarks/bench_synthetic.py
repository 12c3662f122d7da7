"""Benchmark the synthetic generator: time per 2D slice (256² by default) and per 3D volume.

    .venv/bin/python benchmarks/bench_synthetic.py [--size 256] [--n 50] [--volume]

Runs on one core (the generator pins BLAS to one thread itself). Reports the median and best
wall time per slice over ``n`` seeds and the mean CPU time: on a shared machine the best wall time
and the CPU time are the figures closest to an idle core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_segloss.data import generate_slice, generate_volume
from napari_segloss.data.template import load_template


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
    cpu0 = time.process_time()
    for seed in range(args.n):
        t0 = time.perf_counter()
        generate_slice(seed, args.size, plane=args.plane)
        times.append(time.perf_counter() - t0)
    cpu = 1e3 * (time.process_time() - cpu0) / args.n
    ms = 1e3 * np.array(times)
    print(f"slice {args.size}x{args.size} ({args.plane}), {args.n} seeds: wall median {np.median(ms):.1f} ms, "
          f"best {ms.min():.1f} ms, p90 {np.percentile(ms, 90):.1f} ms; CPU {cpu:.1f} ms per slice")
    if args.volume:
        t0, cpu0 = time.perf_counter(), time.process_time()
        generate_volume(0)
        print(f"volume 64x256x256: wall {time.perf_counter() - t0:.2f} s, CPU {time.process_time() - cpu0:.2f} s")


if __name__ == "__main__":
    main()
