"""The seed tool's path next to this project's engine: one run, one machine, the same images.

Baseline: ``seed_baseline.py`` (one image at a time, PIL grey + resize to 256², the 15.5 M
parameter FPN-Bottleneck, Dice/IoU, PIL overlays). Engine: :func:`napari_segloss.inference.predict`
with a bundled checkpoint (random DEFAULT_ARCHITECTURE weights when none is installed: same
speed), :func:`napari_segloss.metrics.compute` and :mod:`napari_segloss.overlays`. Images come
from :mod:`napari_segloss.data.synthetic` (test split seeds, every slice holds a tumour).

Figures (medians; ratios are seed / engine for times and memory, engine / seed for rates):

* ``throughput_256``: images/s with 256² inputs (pre-processing + model + probability at the
  input size): seed one at a time vs engine one at a time and batched (16 per forward);
* ``e2e_512``: latency of one 512² slice end to end: pre-processing, model, threshold, metrics
  (seed: Dice/IoU; engine: all 21 keys incl. HD95/ASSD/NSD) and three RGB overlays; the engine's
  napari-layer variant (heatmap, mask, outline and difference labels) is listed beside it;
* ``volume``: a 155x240x240 volume with one checkpoint (seed: slice by slice, timed on a few
  slices and extrapolated); the engine is also timed with 3D metrics and layer overlays;
* ``all_checkpoints_256``: every checkpoint on one 256² slice, cold (loaded from disk) and warm
  (cached); the seed's count matches the engine's, its per-model time extrapolated;
* ``switch``: switching to a checkpoint already in the cache, by path and by registry name
  (seed: rebuild + torch.load, as it has no cache);
* ``memory``: RSS growth while each path runs for the first time in a fresh process (model
  loaded, input read; sampled every millisecond), model sizes and GFLOP per 256² slice;
* ``gpu`` (CUDA only): the model alone in batches (channels-last, autocast bf16/fp16, optional
  ``torch.compile``): slices/s at 256² and 512² and the fraction of the GPU's dense bf16 peak;
  ``predict`` on a stack of slices (normalisation and copies included); the seed one at a time.

    python benchmarks/bench_compare.py --threads 1           # < 3 minutes on a 2-core CPU
    python benchmarks/bench_compare.py --quick --json out.json

A developer script of the source repository (it needs ``seed_baseline.py`` beside it), so the
installed ``napari-segloss`` command has no ``bench``: run this file from a checkout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_baseline as seed  # noqa: E402  (a sibling script, not a package)

from napari_segloss import __version__, checkpoints, metrics, overlays  # noqa: E402
from napari_segloss.inference import predict_many  # noqa: E402
from napari_segloss.checkpoints import CHECKPOINTS_ENV, ModelCard, list_checkpoints, load, save_checkpoint  # noqa: E402
from napari_segloss.data.synthetic import generate_slice, generate_volume, split_seeds  # noqa: E402
from napari_segloss.inference import predict  # noqa: E402
from napari_segloss.losses import available  # noqa: E402
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model, resolve_device  # noqa: E402

#: targets of issue 10 (2-core CPU): figure -> (limit, "<=" or ">=")
TARGETS = {
    "e2e_512_ms": (150.0, "<="),
    "all_checkpoints_256_cold_s": (5.0, "<="),
    "volume_s": (20.0, "<="),
    "switch_ms": (50.0, "<="),
    "throughput_256_ratio": (5.0, ">="),
}
#: dense bf16 tensor-core peak in FLOP/s by GPU name fragment (vendor data sheets, no sparsity)
GPU_PEAK_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
TUMOURS = ("glioma", "meningioma", "pituitary")


@dataclass(frozen=True)
class Settings:
    """Repeat counts: ``repeat`` timed runs per latency, ``images`` for throughput, ``seed_slices``
    of the volume and ``seed_models`` checkpoint loads timed for the seed (then extrapolated)."""

    repeat: int
    images: int
    seed_slices: int
    seed_models: int
    volume_shape: tuple[int, int, int] = (155, 240, 240)


FULL = Settings(repeat=5, images=16, seed_slices=8, seed_models=4)
QUICK = Settings(repeat=2, images=6, seed_slices=3, seed_models=2)


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of ``repeat`` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _median(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls after one warm-up call."""
    return _timed(fn, repeat)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakRSS:
    """Context manager: the largest resident-set growth (MB) of this process while it is open,
    sampled from ``/proc/self/statm`` every millisecond by a background thread."""

    _PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self) -> None:
        self.extra_mb = float("nan")
        self._stop = threading.Event()

    @classmethod
    def rss(cls) -> int:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * cls._PAGE

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, self.rss())

    def __enter__(self) -> PeakRSS:
        self._start = self._peak = self.rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.extra_mb = (max(self._peak, self.rss()) - self._start) / 2**20


def _slices(size: int, count: int) -> list[Any]:
    """``count`` synthetic test-split slices of ``size``², each with a tumour."""
    kinds = itertools.cycle(TUMOURS)
    return [generate_slice(s, size, tumour=next(kinds)) for s in split_seeds("test", count)]


def _engine_checkpoints(tmp: Path) -> tuple[list[Path], bool]:
    """Card paths of the installed checkpoints, or of one random checkpoint per catalogue loss
    written to ``tmp`` and added to the registry (``NAPARI_SEGLOSS_CHECKPOINTS``) so that they
    load by name too. Second item: whether they were installed."""
    installed = [info.path for info in list_checkpoints()]
    if installed:
        return installed, True
    for i, loss in enumerate(available()):
        torch.manual_seed(i)
        save_checkpoint(build_model(DEFAULT_ARCHITECTURE), ModelCard(name=f"random_{loss}", loss=loss), tmp)
    os.environ[CHECKPOINTS_ENV] = str(tmp)
    return [info.path for info in list_checkpoints()], False


def engine_e2e(image: np.ndarray, truth: np.ndarray, spacing: Sequence[float], loaded: Any, device: torch.device) -> dict[str, float]:
    """One 2D slice through the engine; seconds per stage. ``rgb`` renders the three file overlays
    (what the seed shows), ``layers`` builds the napari widget's layer arrays (heatmap, mask,
    outline labels, difference labels)."""
    stages = {}
    start = time.perf_counter()
    prob = predict(image, loaded, device=device, spacing=spacing).probability
    stages["predict"] = time.perf_counter() - start
    start = time.perf_counter()
    mask = prob >= np.float32(0.5)
    metrics.compute(mask, truth, spacing)
    stages["metrics"] = time.perf_counter() - start
    start = time.perf_counter()
    overlays.render_heatmap(image, prob)
    overlays.render_contours(image, mask, truth)
    overlays.render_difference(image, overlays.difference_map(mask, truth))
    stages["rgb"] = time.perf_counter() - start
    start = time.perf_counter()
    overlays.heatmap(prob)
    mask.astype(np.uint8)
    overlays.contour_labels(mask)
    overlays.difference_map(mask, truth)
    stages["layers"] = time.perf_counter() - start
    return stages


def _stage_medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: 1e3 * statistics.median(run[key] for run in runs) for key in runs[0]}


def bench_throughput(samples: list[Any], seed_model: torch.nn.Module, loaded: Any, device: torch.device, repeat: int) -> dict[str, float]:
    """Images/s at 256² in: seed one by one; engine one by one and in batches of 16. The three are
    timed in turn, ``repeat`` rounds after a warm-up round, so load changes hit them alike."""
    images = [s.image for s in samples]
    card = str(loaded.info.path)
    paths = {
        "seed": lambda: [seed.predict(seed_model, im) for im in images],
        "engine": lambda: [predict(im, loaded, device=device) for im in images],
        "engine_batched": lambda: [predict_many(images[i : i + 16], card, device=device) for i in range(0, len(images), 16)],
    }
    seconds: dict[str, list[float]] = {key: [] for key in paths}
    for round_ in range(repeat + 1):
        for key, fn in paths.items():
            start = time.perf_counter()
            fn()
            if round_:  # round 0 warms up
                seconds[key].append(time.perf_counter() - start)
    return {key: len(images) / statistics.median(values) for key, values in seconds.items()}


def bench_e2e(sample: Any, seed_model: torch.nn.Module, loaded: Any, device: torch.device, repeat: int) -> dict[str, Any]:
    """512² end-to-end latency (ms): seed ``run_image`` vs the engine's stages."""
    truth = sample.mask
    seed_wall, seed_cpu = _timed(lambda: seed.run_image(seed_model, sample.image, truth), repeat)
    engine_e2e(sample.image, truth, sample.spacing, loaded, device)  # warm-up
    runs, cpu = [], []
    for _ in range(repeat):
        start_cpu = time.process_time()
        runs.append(engine_e2e(sample.image, truth, sample.spacing, loaded, device))
        cpu.append(time.process_time() - start_cpu)
    stages = _stage_medians(runs)
    return {
        "seed_ms": 1e3 * seed_wall,
        "engine_ms": stages["predict"] + stages["metrics"] + stages["rgb"],
        "engine_layers_ms": stages["predict"] + stages["metrics"] + stages["layers"],
        "engine_stages_ms": stages,
        "seed_cpu_ms": 1e3 * seed_cpu,
        "engine_cpu_ms": 1e3 * statistics.median(cpu),  # RGB and layer overlays both included
    }


def bench_volume(volume: Any, seed_model: torch.nn.Module, loaded: Any, device: torch.device, settings: Settings) -> dict[str, Any]:
    """Seconds for one volume: engine predict (and + 3D metrics + layer overlays); seed per slice, extrapolated."""
    image, truth = volume.image, volume.mask
    start = time.perf_counter()
    prob = predict(image, loaded, device=device, spacing=volume.spacing).probability
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    mask = prob >= np.float32(0.5)
    metrics.compute(mask, truth, volume.spacing)
    overlays.heatmap(prob)
    overlays.contour_labels(mask)
    overlays.difference_map(mask, truth)
    after_s = time.perf_counter() - start
    depth = image.shape[0]
    picks = np.linspace(0, depth - 1, settings.seed_slices).round().astype(int)
    start = time.perf_counter()
    for z in picks:
        seed.run_image(seed_model, image[z], truth[z])
    seed_s = (time.perf_counter() - start) / len(picks) * depth
    return {"seed_s_extrapolated": seed_s, "engine_s": predict_s, "engine_with_metrics_overlays_s": predict_s + after_s}


def bench_all_checkpoints(sample: Any, paths: list[Path], seed_file: Path, device: torch.device, settings: Settings) -> dict[str, float]:
    """Every checkpoint on one 256² slice: engine cold (cache cleared) and warm; seed extrapolated."""
    image = sample.image
    checkpoints.clear_cache()
    start = time.perf_counter()
    for path in paths:
        predict(image, load(path, device=device), device=device)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for path in paths:
        predict(image, load(path, device=device), device=device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(settings.seed_models):
        seed.predict(seed.load_seed_model(seed_file).to(device), image)
    seed_s = (time.perf_counter() - start) / settings.seed_models * len(paths)
    return {"count": len(paths), "seed_s_extrapolated": seed_s, "engine_cold_s": cold, "engine_warm_s": warm}


def bench_switch(paths: list[Path], seed_file: Path, device: torch.device, repeat: int) -> dict[str, float]:
    """Milliseconds to switch to a checkpoint in the cache, by card path and by registry name
    (a name is looked up in the registry first); the seed rebuilds and reads its model."""
    a, b = paths[0], paths[-1]
    first, last = checkpoints.read_card(a).name, checkpoints.read_card(b).name
    result = {
        "engine_ms": 1e3 * _median(lambda: (load(a, device=device), load(b, device=device)), repeat * 4) / 2,
        "engine_by_name_ms": 1e3 * _median(lambda: (load(first, device=device), load(last, device=device)), repeat) / 2,
        "seed_ms": 1e3 * _median(lambda: seed.load_seed_model(seed_file).to(device), max(1, repeat // 2)),
    }
    return result


MEMORY_RUNS = ("seed_512", "engine_512", "engine_volume")


def memory_child(kind: str, data: str, card: str, device_name: str) -> dict[str, float]:
    """In a fresh process: the RSS growth (MB) during the first run of ``kind`` once its model is
    loaded and its input read (``seed_512``/``engine_512``: one slice end to end; ``engine_volume``:
    the volume's predict, 3D metrics and layer overlays). (The process's ``ru_maxrss`` would not
    do: Linux carries the parent's peak across fork and exec.)"""
    arrays = np.load(data)
    device = resolve_device(device_name)
    if kind == "seed_512":
        model = seed.build_seed_model().to(device)
        image, truth = arrays["slice_image"], arrays["slice_mask"]
        job = lambda: seed.run_image(model, image, truth)  # noqa: E731
    elif kind == "engine_512":
        loaded = load(card, device=device)
        image, truth, spacing = arrays["slice_image"], arrays["slice_mask"], tuple(arrays["slice_spacing"])
        job = lambda: engine_e2e(image, truth, spacing, loaded, device)  # noqa: E731
    elif kind == "engine_volume":
        loaded = load(card, device=device)
        image, truth, spacing = arrays["volume_image"], arrays["volume_mask"], tuple(arrays["volume_spacing"])

        def job() -> None:
            prob = predict(image, loaded, device=device).probability
            mask = prob >= np.float32(0.5)
            metrics.compute(mask, truth, spacing)
            overlays.heatmap(prob), overlays.contour_labels(mask), overlays.difference_map(mask, truth)
    else:
        raise ValueError(f"unknown memory run {kind!r}; valid: {', '.join(MEMORY_RUNS)}")
    with PeakRSS() as peak:
        job()
    return {"extra_mb": peak.extra_mb}


def bench_memory(sample: Any, volume: Any, seed_model: torch.nn.Module, loaded: Any, device: torch.device, tmp: Path) -> dict[str, float]:
    """Peak memory, each run in a fresh process (:func:`memory_child`): RSS growth while it runs
    (model already loaded); parameter sizes and GFLOP per 256² slice of both models."""
    data = tmp / "memory_inputs.npz"
    np.savez(data, slice_image=sample.image, slice_mask=sample.mask, slice_spacing=sample.spacing,
             volume_image=volume.image, volume_mask=volume.mask, volume_spacing=volume.spacing)
    out = {}
    for kind in MEMORY_RUNS:
        command = [sys.executable, __file__, "--memory-child", kind, str(data), str(loaded.info.path),
                   "--device", str(device), "--threads", str(torch.get_num_threads())]
        child = subprocess.run(command, capture_output=True, text=True, check=True)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        out[f"{kind}_mb"] = figures["extra_mb"]
    out["volume_input_mb"] = volume.image.nbytes / 2**20
    out["seed_model_mb"] = sum(p.numel() * p.element_size() for p in seed_model.parameters()) / 2**20
    out["engine_model_mb"] = loaded.nbytes / 2**20
    out["seed_gflop_256"] = gflop_per_slice(seed_model, 256, device)
    out["engine_gflop_256"] = gflop_per_slice(loaded.model, 256, device)
    return out


def gflop_per_slice(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward GFLOP of one 1 x ``size``² slice (``torch.utils.flop_counter``: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 1, size, size, device=device))
    return counter.get_total_flops() / 1e9


def gpu_peak_flops(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU named ``name`` (None when not in :data:`GPU_PEAK_FLOPS`)."""
    return next((flops for fragment, flops in GPU_PEAK_FLOPS.items() if fragment in name), None)


def raw_throughput(model: torch.nn.Module, size: int, batch: int, device: torch.device, *, compile_model: bool = False, iters: int = 20) -> dict[str, float]:
    """The model alone: slices/s for ``batch`` x 1 x ``size``² inputs already on ``device``
    (channels-last; bf16/fp16 autocast on CUDA), and GFLOP per slice (``torch.utils.flop_counter``)."""
    model = model.to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
    run = torch.compile(model) if compile_model else model

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            run(x)

    for _ in range(3):  # warm-up (and compilation)
        forward()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        forward()
    _sync(device)
    rate = batch * iters / (time.perf_counter() - start)
    return {"slices_per_s": rate, "gflop_per_slice": gflop_per_slice(model, size, device)}


def bench_gpu(loaded: Any, seed_model: torch.nn.Module, device: torch.device, compile_model: bool, quick: bool) -> dict[str, Any]:
    """CUDA figures: engine model alone in batches; engine ``predict`` on a stack; seed one at a time."""
    name = torch.cuda.get_device_name(device)
    peak = gpu_peak_flops(name)
    out: dict[str, Any] = {"gpu": name, "peak_bf16_tflops": peak / 1e12 if peak else None}
    for size, batch in ((256, 256), (512, 64)):
        figures = raw_throughput(loaded.model, size, batch, device, compile_model=compile_model, iters=5 if quick else 20)
        if peak:
            figures["fraction_of_peak"] = figures["slices_per_s"] * figures["gflop_per_slice"] * 1e9 / peak
        out[f"model_{size}"] = figures
        stack = np.random.default_rng(size).integers(0, 4096, (batch * 2, size, size), dtype=np.uint16)
        seconds = _median(lambda: predict(stack, loaded, device=device), 1 if quick else 3)
        out[f"predict_{size}_slices_per_s"] = len(stack) / seconds
    image = np.random.default_rng(0).integers(0, 4096, (256, 256), dtype=np.uint16)
    out["seed_one_at_a_time_256_slices_per_s"] = 1.0 / _median(lambda: seed.predict(seed_model, image), 5 if quick else 20)
    torch.cuda.empty_cache()
    out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def summary_rows(r: dict[str, Any]) -> list[tuple[str, float, float, float, str]]:
    """``(figure, seed, engine, ratio, target)`` rows; ratio > 1 means the engine is better."""
    tp, e2e, vol, allc, sw, mem = (r[k] for k in ("throughput_256", "e2e_512", "volume", "all_checkpoints_256", "switch", "memory"))
    rows = [
        ("images/s, 256² in, one at a time", tp["seed"], tp["engine"], _ratio(tp["engine"], tp["seed"]), ">= 5x"),
        ("images/s, 256² in, engine batched", tp["seed"], tp["engine_batched"], _ratio(tp["engine_batched"], tp["seed"]), ">= 5x"),
        ("512² slice end to end, ms (RGB overlays)", e2e["seed_ms"], e2e["engine_ms"], _ratio(e2e["seed_ms"], e2e["engine_ms"]), "<= 150 ms"),
        ("512² slice end to end, ms (napari layers)", e2e["seed_ms"], e2e["engine_layers_ms"], _ratio(e2e["seed_ms"], e2e["engine_layers_ms"]), ""),
        (f"{r['volume_shape']} volume, s (predict)", vol["seed_s_extrapolated"], vol["engine_s"], _ratio(vol["seed_s_extrapolated"], vol["engine_s"]), "<= 20 s"),
        ("  + 3D metrics and layer overlays, s", vol["seed_s_extrapolated"], vol["engine_with_metrics_overlays_s"], _ratio(vol["seed_s_extrapolated"], vol["engine_with_metrics_overlays_s"]), ""),
        (f"all {allc['count']} checkpoints on one 256² slice, s (cold)", allc["seed_s_extrapolated"], allc["engine_cold_s"], _ratio(allc["seed_s_extrapolated"], allc["engine_cold_s"]), "<= 5 s"),
        (f"all {allc['count']} checkpoints, s (cached)", allc["seed_s_extrapolated"], allc["engine_warm_s"], _ratio(allc["seed_s_extrapolated"], allc["engine_warm_s"]), ""),
        ("model switch, ms (engine cached)", sw["seed_ms"], sw["engine_ms"], _ratio(sw["seed_ms"], sw["engine_ms"]), "<= 50 ms"),
        ("peak RSS growth, 512² end to end, MB", mem["seed_512_mb"], mem["engine_512_mb"], _ratio(mem["seed_512_mb"], mem["engine_512_mb"]), ""),
        ("model parameters, MB", mem["seed_model_mb"], mem["engine_model_mb"], _ratio(mem["seed_model_mb"], mem["engine_model_mb"]), ""),
        ("model GFLOP per 256² slice", mem["seed_gflop_256"], mem["engine_gflop_256"], _ratio(mem["seed_gflop_256"], mem["engine_gflop_256"]), ""),
    ]
    rows.insert(9, ("  switch by registry name, ms", sw["seed_ms"], sw["engine_by_name_ms"], _ratio(sw["seed_ms"], sw["engine_by_name_ms"]), "<= 50 ms"))
    return rows


def target_checks(r: dict[str, Any]) -> dict[str, bool]:
    """Each issue-10 target (:data:`TARGETS`) -> met or not, from the figures in ``r``."""
    values = {
        "e2e_512_ms": r["e2e_512"]["engine_ms"],
        "all_checkpoints_256_cold_s": r["all_checkpoints_256"]["engine_cold_s"],
        "volume_s": r["volume"]["engine_s"],
        "switch_ms": r["switch"]["engine_ms"],
        "throughput_256_ratio": _ratio(r["throughput_256"]["engine"], r["throughput_256"]["seed"]),
    }
    return {key: (values[key] <= limit if op == "<=" else values[key] >= limit) for key, (limit, op) in TARGETS.items()}


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, machine, threads and the load average (the CPU figures depend on it)."""
    import segmentation_models_pytorch as smp

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return {
        "napari_segloss": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "smp": smp.__version__,
        "numpy": np.__version__,
        "machine": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_average_start": os.getloadavg(),
    }


def run(device_name: str = "auto", *, quick: bool = False, compile_model: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every comparison on one device; returns the figures (see the module docstring)."""
    settings = QUICK if quick else FULL
    device = resolve_device(device_name)
    report: dict[str, Any] = {"environment": environment(device), "quick": quick, "volume_shape": settings.volume_shape}
    registry = os.environ.get(CHECKPOINTS_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        log("preparing checkpoints and synthetic images ...")
        paths, installed = _engine_checkpoints(Path(tmp))
        report["checkpoints"] = f"{len(paths)} installed" if installed else (
            f"{len(paths)} random DEFAULT_ARCHITECTURE checkpoints (none installed; their masks are noise, "
            "so metric and overlay times are a worst case)")
        seed_model = seed.build_seed_model().to(device)
        seed_file = Path(tmp) / "seed_fpn.pt"
        torch.save(seed_model.state_dict(), seed_file)
        loaded = load(paths[0], device=device)
        small, large = _slices(256, settings.images), _slices(512, 1)[0]
        volume = generate_volume(split_seeds("test", 1)[0], settings.volume_shape, tumour="glioma")
        steps = [
            ("throughput_256", lambda: bench_throughput(small, seed_model, loaded, device, settings.repeat)),
            ("e2e_512", lambda: bench_e2e(large, seed_model, loaded, device, settings.repeat)),
            ("volume", lambda: bench_volume(volume, seed_model, loaded, device, settings)),
            ("all_checkpoints_256", lambda: bench_all_checkpoints(small[0], paths, seed_file, device, settings)),
            ("switch", lambda: bench_switch(paths, seed_file, device, settings.repeat)),
            ("memory", lambda: bench_memory(large, volume, seed_model, loaded, device, Path(tmp))),
        ]
        if device.type == "cuda":
            steps.append(("gpu", lambda: bench_gpu(loaded, seed_model, device, compile_model, quick)))
        try:
            for key, step in steps:
                log(f"{key} ...")
                report[key] = step()
        finally:
            checkpoints.clear_cache()
            if registry is None:
                os.environ.pop(CHECKPOINTS_ENV, None)
            else:
                os.environ[CHECKPOINTS_ENV] = registry
    report["environment"]["load_average_end"] = os.getloadavg()
    report["targets_met"] = target_checks(report)
    return report


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def format_report(r: dict[str, Any]) -> str:
    """The figures as a plain-text table plus the engine's stage times."""
    env = r["environment"]
    lines = [
        f"napari-segloss {env['napari_segloss']} | torch {env['torch']} | smp {env['smp']} | numpy {env['numpy']} | Python {env['python']}",
        f"device {env['device']}{' (' + env['gpu'] + ')' if env['gpu'] else ''} | {env['cpu']} x{env['cpu_count']} | torch threads {env['torch_threads']}",
        f"load average at start {', '.join(f'{x:.1f}' for x in env['load_average_start'])}; at end {', '.join(f'{x:.1f}' for x in env['load_average_end'])}",
        f"checkpoints: {r['checkpoints']}",
        "",
        f"{'figure':52s} {'seed':>10s} {'engine':>10s} {'ratio':>8s}  target",
    ]
    for name, seed_value, engine_value, ratio, target in summary_rows(r):
        lines.append(f"{name:52s} {_number(seed_value):>10s} {_number(engine_value):>10s} {_number(ratio):>7s}x  {target}")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in r["e2e_512"]["engine_stages_ms"].items())
    lines += ["", f"engine 512² stages (ms): {stages}",
              f"engine e2e CPU time (ms, both overlay kinds): {r['e2e_512']['engine_cpu_ms']:.1f}; seed {r['e2e_512']['seed_cpu_ms']:.1f}",
              f"engine volume peak RSS growth (predict + metrics + layers): {r['memory']['engine_volume_mb']:.0f} MB "
              f"(input {r['memory']['volume_input_mb']:.0f} MB)",
              "targets met: " + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in r["targets_met"].items())]
    if "gpu" in r:
        gpu = r["gpu"]
        for size in (256, 512):
            m = gpu[f"model_{size}"]
            fraction = f", {100 * m['fraction_of_peak']:.1f} % of peak" if "fraction_of_peak" in m else ""
            lines.append(f"GPU {size}²: model {m['slices_per_s']:.0f} slices/s ({m['gflop_per_slice']:.2f} GFLOP/slice{fraction}); "
                         f"predict() {gpu[f'predict_{size}_slices_per_s']:.0f} slices/s")
        lines.append(f"GPU seed one at a time 256²: {gpu['seed_one_at_a_time_256_slices_per_s']:.0f} slices/s; peak {gpu['cuda_peak_mb']:.0f} MB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute on a quiet 2-core CPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads for both paths (0 = torch's default)")
    parser.add_argument("--compile", action="store_true", help="CUDA: also torch.compile the model for the batched figures")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--memory-child", nargs=3, metavar=("KIND", "DATA", "CARD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child, args.device)))
        return 0
    report = run(args.device, quick=args.quick, compile_model=args.compile, log=lambda text: print(text, file=sys.stderr))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
