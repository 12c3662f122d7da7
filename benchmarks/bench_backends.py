"""The CPU backend, measured: torch eager (contiguous and channels-last, under
``torch.inference_mode``), TorchScript frozen with ``optimize_for_inference`` (oneDNN fusion),
``torch.compile`` (inductor) and the exported ONNX graph run by ONNX Runtime
(:mod:`napari_segloss.backends`), on one checkpoint.

Figures per backend:

* latency of one padded 256² and 512² slice (network only, median of ``--repeat`` after a
  warm-up; the backends are timed in alternation so that a busy machine slows all alike) and the
  largest difference of its probabilities from torch eager's;
* volume throughput: slices/s of ``Segmenter.logits`` on a 32x256x256 volume (batches of 16),
  the path ``predict`` takes (eager and ONNX Runtime only: the shipped choices);
* start-up and memory, each backend in a fresh process: seconds from the interpreter's start to
  the first 256² result (imports, checkpoint, graph or compilation) and peak RSS after the volume.

    python benchmarks/bench_backends.py --threads 1 --json backends.json
    python benchmarks/bench_backends.py --threads 1 --compile        # + torch.compile (minutes per size)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

BACKENDS = ("eager", "eager-channels-last", "torchscript-frozen", "compile", "onnxruntime")


def _runners(checkpoint: str, names: list[str]) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], object]:
    """Callables ``(B, 1, H, W)`` float32 numpy -> logits numpy, one per backend name."""
    from napari_segloss.inference import Segmenter

    eager = Segmenter.load(checkpoint, device="cpu", backend="torch")
    model = eager.model.eval()
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def torch_runner(net: torch.nn.Module, channels_last: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(x)
            if channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                return net(t).numpy()
        return run

    for name in names:
        if name == "eager":
            runners[name] = torch_runner(model)
        elif name == "eager-channels-last":
            runners[name] = torch_runner(copy.deepcopy(model).to(memory_format=torch.channels_last), True)
        elif name == "torchscript-frozen":
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(copy.deepcopy(model), torch.zeros(1, 1, 256, 256), check_trace=False)
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            runners[name] = torch_runner(frozen)
        elif name == "compile":
            runners[name] = torch_runner(torch.compile(copy.deepcopy(model), dynamic=False))
        elif name == "onnxruntime":
            runners[name] = Segmenter.load(checkpoint, device="cpu", backend="onnx").backend  # type: ignore[assignment]
    return runners, eager


def export_seconds(segmenter, repeat: int = 3) -> tuple[float, float]:
    """Median seconds of one template export (once per architecture, after one warm-up export:
    the exporter's own imports) and of writing a checkpoint's graph from it (once per checkpoint)."""
    import tempfile

    from napari_segloss import backends

    exports, graphs = [], []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(repeat + 1):
            start = time.perf_counter()
            template = backends.export(segmenter.model, Path(folder) / f"{k}.onnx", segmenter.channels)
            exports.append(time.perf_counter() - start)
            start = time.perf_counter()
            backends.write_graph(template, segmenter.info.weights, segmenter.card.weights_sha256, Path(folder) / f"w{k}.onnx")
            graphs.append(time.perf_counter() - start)
    return statistics.median(exports[1:]), statistics.median(graphs[1:])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def latency(runners: dict[str, Callable], size: int, repeat: int, segmenter) -> dict[str, dict[str, float]]:
    """Median ms per ``size``² synthetic slice (normalised as ``segmenter`` does) and max
    |probability - eager's|, timed in alternation."""
    from napari_segloss.data import generate_slice

    x = segmenter.prepare(generate_slice(0, size).image)[0][:1]
    reference = _sigmoid(runners["eager"](x)) if "eager" in runners else None
    out: dict[str, dict[str, float]] = {}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for name, run in runners.items():
        start = time.perf_counter()
        y = run(x)  # warm-up (compile: the compilation for this shape)
        out[name] = {"first_call_s": time.perf_counter() - start,
                     "max_prob_diff": float(np.abs(_sigmoid(y) - reference).max()) if reference is not None else float("nan")}
    for _ in range(repeat):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    for name in runners:
        out[name]["ms"] = 1000 * statistics.median(times[name])
    return out


def child(backend: str, checkpoint: str) -> None:
    """Fresh process: seconds to the first 256² result, then the volume's slices/s and peak RSS."""
    from napari_segloss.inference import Segmenter

    image = np.random.default_rng(0).standard_normal((1, 1, 256, 256)).astype(np.float32)
    segmenter = Segmenter.load(checkpoint, device="cpu", backend="onnx" if backend == "onnxruntime" else "torch")
    segmenter.logits(image)
    ready = time.time() - float(os.environ["BENCH_START"])
    volume = np.random.default_rng(1).standard_normal((32, 1, 256, 256)).astype(np.float32)
    segmenter.logits(volume[:16])
    start = time.perf_counter()
    segmenter.logits(volume)
    slices_per_s = 32 / (time.perf_counter() - start)
    print(json.dumps({"ready_s": ready, "volume_slices_per_s": slices_per_s, "peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM on Linux (``ru_maxrss`` would report the parent's from before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh(backend: str, checkpoint: str, threads: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "NAPARI_SEGLOSS_THREADS": str(threads)}
    code = (f"import torch; torch.set_num_threads({threads}); import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_backends; bench_backends.child({backend!r}, {checkpoint!r})")
    env["BENCH_START"] = repr(time.time())
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{backend} child failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="dice", help="registry name or card path (default: dice)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every backend")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per latency figure")
    parser.add_argument("--compile", action="store_true", help="add torch.compile (each size compiles: minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in BACKENDS if args.compile or n != "compile"]

    runners, eager = _runners(args.checkpoint, names)  # also fills the ONNX graph cache for the children
    results: dict[str, dict[str, float]] = {name: {} for name in names}
    for size in (256, 512):
        for name, figures in latency(runners, size, args.repeat, eager).items():
            results[name].update({f"{key}_{size}": value for key, value in figures.items()})
    for name in ("eager", "onnxruntime"):
        results[name].update(fresh(name, args.checkpoint, args.threads))
    results["onnxruntime"]["export_s"], results["onnxruntime"]["graph_s"] = export_seconds(eager)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"checkpoint {args.checkpoint}, {args.threads} thread(s), torch {torch.__version__}, load average {load:.1f}")
    print(f"{'backend':<20} {'256² ms':>8} {'512² ms':>8} {'max |dp|':>9} {'1st call s':>10} "
          f"{'vol sl/s':>8} {'ready s':>8} {'RSS MB':>7}")
    for name in names:
        r = results[name]
        print(f"{name:<20} {r['ms_256']:8.1f} {r['ms_512']:8.1f} {max(r['max_prob_diff_256'], r['max_prob_diff_512']):9.1e} "
              f"{r['first_call_s_256']:10.2f} {r.get('volume_slices_per_s', float('nan')):8.1f} "
              f"{r.get('ready_s', float('nan')):8.2f} {r.get('peak_rss_mb', float('nan')):7.0f}")
    print(f"ONNX export, once per architecture: {results['onnxruntime']['export_s']:.2f} s; a checkpoint's graph "
          f"from it, once per checkpoint (cached by weights sha256): {results['onnxruntime']['graph_s']:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "load_average": load, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
