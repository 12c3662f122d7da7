"""GPU figures (run by ``benchmarks/gpu_check.sh``): slices/s at 256² and 512², one 155x240x240
volume, every installed checkpoint on one slice, and peak GPU memory.

Everything runs through the public path (:class:`~napari_segloss.inference.Segmenter` and
:func:`~napari_segloss.inference.predict`: autocast, channels-last, batches sized by the memory
budget); ``network`` rows add the network alone at a batch of 128 (its capacity, beyond the
per-batch budget). Times include the copy back to the host. Goal (issue 17): more than 2,000
slices/s at 256² on an H100.

    python benchmarks/bench_gpu.py                      # on CUDA
    python benchmarks/bench_gpu.py --device cpu --smoke # every figure once, small, on the CPU (tested)
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from napari_segloss.checkpoints import default_checkpoint, list_checkpoints
from napari_segloss.inference import Segmenter, _amp_dtype, predict


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _slices(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(800 + 400 * rng.standard_normal((n, size, size)), 0, 4095).astype(np.uint16)


def slices_per_second(segmenter: Segmenter, n: int, size: int, repeat: int) -> float:
    """Best of ``repeat`` runs of ``Segmenter.logits`` on ``n`` normalised ``size``² slices (after a warm-up)."""
    data, _ = segmenter.prepare(_slices(n, size))
    segmenter.logits(data[: min(n, 16)])
    best = float("inf")
    for _ in range(repeat):
        _sync(segmenter.device)
        start = time.perf_counter()
        segmenter.logits(data)
        best = min(best, time.perf_counter() - start)
    return n / best


def network_slices_per_second(segmenter: Segmenter, batch: int, size: int, repeat: int) -> float:
    """The network alone on a device-resident ``(batch, C, size, size)`` input, autocast as predict runs it."""
    device = segmenter.device
    x = torch.randn(batch, segmenter.channels, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    amp = _amp_dtype(device)
    model = segmenter.model.eval()
    best = float("inf")
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        model(x)
        for _ in range(repeat):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return batch / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="each figure once at small sizes (checks the code on a CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, autocast {_amp_dtype(device)}")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}")
    sizes = (64,) if args.smoke else (256, 512)
    counts = {64: 8, 256: 2048, 512: 512}
    repeat = 1 if args.smoke else 3
    volume_shape = (4, 64, 64) if args.smoke else (155, 240, 240)

    default = default_checkpoint()
    segmenter = Segmenter.load(default.path, device=device, backend="torch")
    print(f"checkpoint: {default.name}")
    for size in sizes:
        rate = slices_per_second(segmenter, counts[size], size, repeat)
        net = network_slices_per_second(segmenter, 4 if args.smoke else 128, size, repeat)
        print(f"slices/s at {size}²: {rate:,.0f} (predict path, {counts[size]} slices)   network alone, batch "
              f"{4 if args.smoke else 128}: {net:,.0f}")

    volume = _slices(volume_shape[0], volume_shape[1])
    predict(volume[:2], segmenter, resample=False)
    _sync(device)
    start = time.perf_counter()
    result = predict(volume, segmenter, resample=False)
    seconds = time.perf_counter() - start
    print(f"volume {'x'.join(map(str, volume_shape))}: {seconds:.3f} s ({volume_shape[0] / seconds:,.0f} slices/s), "
          f"device {result.metadata['device']}")

    image = _slices(1, 64 if args.smoke else 256)[0]
    print("every checkpoint on one slice (load incl. files, first predict, second predict):")
    for info in list_checkpoints():
        start = time.perf_counter()
        each = Segmenter.load(info.path, device=device, backend="torch")
        _sync(device)
        loaded = time.perf_counter() - start
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            predict(image, each, resample=False)
            timings.append(time.perf_counter() - start)
        print(f"  {info.name:<28} load {1000 * loaded:7.1f} ms   predict {1000 * timings[0]:7.1f} / {1000 * timings[1]:6.1f} ms")

    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB allocated, "
              f"{torch.cuda.max_memory_reserved(device) / 2**20:,.0f} MiB reserved")
    else:
        print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB RSS (CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
