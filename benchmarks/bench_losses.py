"""Forward + backward time of every loss of the catalogue, and its ratio to BCE.

Input: a batch of ``--batch`` (16) ``--size``² (256²) logits ``(B, 1, H, W)`` with blob targets
(a quarter of the images tumour-free); losses that need ``"features"`` also get a
``(B, 32, H/4, W/4)`` tensor (the default FPN's decoder width) that requires grad; losses with
``"dataset_stats"`` are fitted on the targets; ``"epoch"`` losses are at epoch 1 of 10.

Each loss: one warm-up call, then the median of ``--repeat`` timed forward + backward calls.
A loss slower than ``--limit`` (10) x BCE is flagged ``SLOW`` unless its ``info(name).slow_reason``
explains it (per-step distance transforms, Cholesky, ...), then marked ``slow (explained)``.

    python benchmarks/bench_losses.py                   # CPU, and CUDA when present
    python benchmarks/bench_losses.py --device cpu --threads 1 --json benchmarks/losses.json
    python benchmarks/bench_losses.py --losses bce dice rmi --repeat 5

``--json`` merges ``{device_type: {"device", "torch", "threads", "batch", "size", "repeat",
"results": {name: {"ms", "ratio", "flag"}}}}`` into the file (per loss when the setting is the
same, so ``--losses`` can re-time a few);
``scripts/make_loss_table.py`` puts those ratios into ``docs/losses.md``. Exit status 1 when a loss
fails to run, or is flagged ``SLOW`` and ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloss.losses import available, build, info

FEATURE_CHANNELS = 32


def make_targets(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Binary (B, 1, size, size) float targets: ellipses of varied size; every 4th image empty."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((batch, 1, size, size), np.float32)
    for i in range(batch):
        if i % 4 == 3:
            continue
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.03, 0.2, 2) * size
        masks[i, 0] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return torch.from_numpy(masks)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loss(name: str, target: torch.Tensor, repeat: int, seed: int = 0) -> float:
    """Median seconds of one forward + backward call of ``build(name)`` on ``target``'s device."""
    device = target.device
    meta = info(name)
    loss = build(name).to(device)
    if "dataset_stats" in meta.needs:
        loss.fit_dataset([m[0] for m in target.cpu().numpy()])
    if "epoch" in meta.needs:
        loss.on_epoch(1, 10)
    gen = torch.Generator(device=device).manual_seed(seed)
    batch, _, h, w = target.shape
    base = torch.randn(target.shape, generator=gen, device=device) * 2.0
    extras: dict[str, Any] = {}
    if "features" in meta.needs:
        extras["features"] = torch.randn((batch, FEATURE_CHANNELS, h // 4, w // 4), generator=gen, device=device)
        extras["features"].requires_grad_(True)
    times = []
    for i in range(repeat + 1):
        logits = base.clone().requires_grad_(True)
        _sync(device)
        start = time.perf_counter()
        loss(logits, target, **extras).backward()
        _sync(device)
        if i:  # the first call warms up caches, kernels and lazy state
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(device: torch.device, names: list[str], batch: int, size: int, repeat: int, limit: float) -> dict[str, Any]:
    """Time ``names`` (BCE first, for the ratio) on ``device``; print one line per loss."""
    target = make_targets(batch, size).to(device)
    bce = time_loss("bce", target, repeat)
    print(f"\n{device.type.upper()}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"batch {batch} x {size}²  median of {repeat}")
    print(f"{'loss':24s} {'ms':>9s} {'x BCE':>7s}  flag")
    results: dict[str, Any] = {}
    for name in names:
        try:
            seconds = bce if name == "bce" else time_loss(name, target, repeat)
        except Exception as err:  # a broken loss is reported, the others are still timed
            results[name] = {"ms": None, "ratio": None, "flag": f"ERROR: {type(err).__name__}: {err}"}
            print(f"{name:24s} {'-':>9s} {'-':>7s}  {results[name]['flag']}", flush=True)
            continue
        ratio = seconds / bce
        reason = info(name).slow_reason
        flag = "" if ratio <= limit else ("slow (explained)" if reason else "SLOW")
        results[name] = {"ms": round(seconds * 1e3, 2), "ratio": round(ratio, 2), "flag": flag}
        print(f"{name:24s} {seconds * 1e3:9.1f} {ratio:7.1f}  {flag}" + (f": {reason}" if flag else ""), flush=True)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "size": size,
        "repeat": repeat,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (CPU, and CUDA when present)")
    parser.add_argument("--losses", nargs="*", help="subset of loss names (default: all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=float, default=10.0, help="flag losses slower than this x BCE")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="write the results (one device) to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 if an unexplained loss is flagged SLOW")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.losses or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown losses {unknown}")
    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    if args.device == "auto" and not torch.cuda.is_available():
        devices = ["cpu"]
    reports = [run(torch.device(d), names, args.batch, args.size, args.repeat, args.limit) for d in devices]
    if args.json:  # merged by device type (and by loss for runs of the same setting)
        saved = json.loads(args.json.read_text()) if args.json.exists() else {}
        for report in reports:
            previous = saved.get(report["device_type"], {})
            if all(previous.get(k) == report[k] for k in ("device", "torch", "threads", "batch", "size", "repeat")):
                report["results"] = {**previous["results"], **report["results"]}
            saved[report["device_type"]] = report
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")
    flagged = [n for r in reports for n, v in r["results"].items() if v["flag"] == "SLOW"]
    failed = [n for r in reports for n, v in r["results"].items() if v["flag"].startswith("ERROR")]
    if flagged:
        print(f"\nslower than {args.limit:g}x BCE without a slow_reason: {', '.join(flagged)}")
    if failed:
        print(f"failed to run: {', '.join(failed)}")
    return 1 if failed or (flagged and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
