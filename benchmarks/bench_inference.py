"""Inference speed and memory of one checkpoint: what a user waits for in the widget and CLI.

For the default checkpoint (the bundled Dice one; a randomly initialised DEFAULT_ARCHITECTURE
model when no checkpoint is installed, which runs at the same speed) on the CPU, and on CUDA
when present:

* model load time: cold (files -> model, cache cleared) and warm (LRU cache hit);
* single-slice latency of ``predict`` at 256² and 512² (median of ``--repeat`` runs after one
  warm-up; includes normalisation, padding and the copy back), side by side for a loaded
  checkpoint and for the registry name (``predict(image, "dice")``, what the CLI, batch and widget
  call: it adds the registry look-up, cached, and the model-cache hit);
* beside them the seed tool's path (``seed_baseline.predict``: PIL resize to 256², its FPN, resize
  back) and its ratio to ``predict`` by name (issue 17's targets: >= 5x at 256², >= 3x at 512²);
* 3D throughput in slices/s on a 64x256x256 uint16 volume;
* peak RSS of this process, and with ``--large`` the extra memory (peak RSS minus RSS with the
  input allocated, in a fresh process) of a 155x512x512 volume (the issue's 2 GB bound).

    python benchmarks/bench_inference.py                 # CPU, and CUDA when present
    python benchmarks/bench_inference.py --large --threads 2 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloss import checkpoints
from napari_segloss.checkpoints import (
    CHECKPOINTS_ENV,
    CheckpointError,
    ModelCard,
    default_checkpoint,
    load,
    save_checkpoint,
)
from napari_segloss.inference import predict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_baseline  # noqa: E402  (the seed tool's path: PIL resize to 256², its 15.5 M-parameter FPN)
from napari_segloss.backends import uses_onnx
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _checkpoint_path(tmp: Path) -> tuple[Path, str, str]:
    """``(card, registry name, label)`` of the default checkpoint, or of a random one written to
    ``tmp`` (and registered through ``NAPARI_SEGLOSS_CHECKPOINTS``)."""
    try:
        info = default_checkpoint()
        return info.path, info.name, info.name
    except CheckpointError:
        torch.manual_seed(0)
        save_checkpoint(build_model(DEFAULT_ARCHITECTURE), ModelCard(name="random_fpn", loss="dice"), tmp)
        os.environ[CHECKPOINTS_ENV] = os.pathsep.join(filter(None, [os.environ.get(CHECKPOINTS_ENV), str(tmp)]))
        return tmp / "random_fpn.json", "random_fpn", "random_fpn (random weights: no checkpoint installed)"


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, shape, dtype=np.uint16)


def _median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _paired_medians(fns: dict[str, Any], repeat: int) -> dict[str, float]:
    """Median seconds of each function, timed in alternation (the same machine load for all)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def bench_device(card: Path, name: str, device: str, repeat: int) -> dict[str, Any]:
    """Load times, 2D latencies (loaded checkpoint and registry name) and 3D throughput on one device."""
    cold = []
    for _ in range(3):
        checkpoints.clear_cache()
        start = time.perf_counter()
        load(card, device=device)
        cold.append(time.perf_counter() - start)
    start = time.perf_counter()
    loaded = load(card, device=device)
    warm = time.perf_counter() - start
    result: dict[str, Any] = {"load_cold_ms": 1e3 * statistics.median(cold), "load_warm_ms": 1e3 * warm}
    seed_model = seed_baseline.build_seed_model().eval().to(device)
    for size in (256, 512):
        image = _image((size, size))
        medians = _paired_medians({"loaded": lambda: predict(image, loaded, device=device),
                                   "by_name": lambda: predict(image, name, device=device),
                                   "seed": lambda: seed_baseline.predict(seed_model, image)}, repeat)
        result[f"latency_{size}_ms"] = 1e3 * medians["loaded"]
        result[f"latency_{size}_by_name_ms"] = 1e3 * medians["by_name"]
        result[f"by_name_overhead_{size}_pct"] = 100 * (medians["by_name"] / medians["loaded"] - 1)
        result[f"seed_{size}_ms"] = 1e3 * medians["seed"]
        result[f"seed_over_by_name_{size}_x"] = medians["seed"] / medians["by_name"]
    volume = _image((64, 256, 256))
    seconds = _median_seconds(lambda: predict(volume, loaded, device=device), max(1, repeat // 5))
    result["volume_64x256x256_slices_per_s"] = 64 / seconds
    if device == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def large_volume_child(card: str, device: str) -> None:
    """Run in a fresh process: extra peak memory of a 155x512x512 volume (printed as JSON)."""
    loaded = load(card, device=device)
    predict(_image((2, 256, 256)), loaded, device=device)
    volume = _image((155, 512, 512))
    before = _peak_rss_mb()
    start = time.perf_counter()
    predict(volume, loaded, device=device)
    seconds = time.perf_counter() - start
    print(json.dumps({"input_mb": volume.nbytes / 2**20, "extra_peak_mb": _peak_rss_mb() - before, "seconds": seconds}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all", help="all = CPU, and CUDA when present")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per 2D measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--large", action="store_true", help="also measure the 155x512x512 volume's memory")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--large-child", nargs=2, metavar=("CARD", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.large_child:
        large_volume_child(*args.large_child)
        return 0

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    with tempfile.TemporaryDirectory() as tmp:
        card, name, label = _checkpoint_path(Path(tmp))
        report: dict[str, Any] = {
            "checkpoint": label,
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "machine": platform.platform(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu_backend": "onnxruntime" if uses_onnx(torch.device("cpu")) else "torch",
            "results": {},
        }
        for device in devices:
            report["results"][device] = bench_device(card, name, device, args.repeat)
            if args.large:
                child = [sys.executable, __file__, "--large-child", str(card), device, "--threads", str(torch.get_num_threads())]
                out = subprocess.run(child, capture_output=True, text=True, check=True)
                report["results"][device]["volume_155x512x512"] = json.loads(out.stdout.strip().splitlines()[-1])
        report["peak_rss_mb"] = _peak_rss_mb()

    print(f"checkpoint: {label}; torch {report['torch']}, {report['cpu_threads']} CPU threads; GPU: {report['gpu']}; "
          f"CPU backend {report['cpu_backend']}")
    for device, figures in report["results"].items():
        print(f"[{device}]")
        for key, value in figures.items():
            text = ", ".join(f"{k} {v:.1f}" for k, v in value.items()) if isinstance(value, dict) else f"{value:.1f}"
            print(f"  {key:32s} {text}")
    print(f"peak RSS (this process): {report['peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
