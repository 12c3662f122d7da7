"""Training throughput: one step of the committed recipe, split into its parts, old vs new path.

Prints, per configuration, seconds per step for augmentation, forward + backward + optimiser
step, and the total, on one CPU thread, interleaving the configurations (so a busy machine slows
them alike; the ratio is the figure to read). Configurations: the previous path (per-sample SciPy
augmentation, float32 forward), the recipe's current one (:meth:`Augment.batch` in one
``grid_sample``, float32: ``Recipe.bf16`` is False) and, where the CPU has native bfloat16, the
same under bfloat16 autocast. ``--profile`` adds torch.profiler's table of the recipe step's
operators (self CPU time); ``--alternatives`` times the recipe's forward + backward + step on one
fixed batch under the options that keep the network and the recipe (contiguous instead of
channels-last memory, fused AdamW, and with ``--compile`` ``torch.compile``, whose first step
is timed separately).

    python benchmarks/bench_training.py [--steps 10] [--rounds 3] [--loss dice] [--profile]
    python benchmarks/bench_training.py --alternatives [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import numpy as np
import torch
from scipy import ndimage

from napari_segloss.losses import build
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model
from napari_segloss.train.data import Augment
from napari_segloss.train.loop import Recipe, bf16_available


def _slices(n: int = 64, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = ndimage.gaussian_filter(rng.random((n, size, size)), (0, 3, 3)).astype(np.float32) * 3
    masks = np.zeros((n, size, size), bool)
    masks[:, 100:150, 90:170] = True
    return images, masks


def _step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion: torch.nn.Module, x: torch.Tensor,
          y: torch.Tensor, bf16: bool = False) -> None:
    """One forward (under bfloat16 autocast if ``bf16``), loss, backward and optimiser step."""
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        logits = net(x)
    loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _alternatives(x: torch.Tensor, y: torch.Tensor, criterion: torch.nn.Module, steps: int, compile_too: bool) -> None:
    """Median seconds of forward + backward + AdamW step on the batch ``(x, y)`` per option."""
    base = build_model(DEFAULT_ARCHITECTURE)
    options: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]] = {}

    def add(name: str, channels_last: bool, fused: bool = False, compiled: bool = False) -> None:
        model = copy.deepcopy(base)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
        net = torch.compile(model) if compiled else model
        options[name] = (net, optimizer, x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous())

    add("eager, channels-last (the recipe)", True)
    add("eager, contiguous", False)
    add("eager, channels-last, AdamW(fused=True)", True, fused=True)
    if compile_too:
        add("torch.compile (inductor), channels-last", True, compiled=True)
    print(f"forward + backward + step on one fixed batch, median of {steps} steps after 3 warm-up steps "
          "(the options take turns, step by step):")
    times: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(steps + 3):
        for name, (net, optimizer, inp) in options.items():
            tic = time.perf_counter()
            _step(net, optimizer, criterion, inp, y)
            times[name].append(time.perf_counter() - tic)
    for name, t in times.items():
        first = f"  (first step {t[0]:.1f} s)" if "compile" in name else ""
        print(f"  {name:45s} {1e3 * float(np.median(t[3:])):7.1f} ms{first}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loss", default="dice")
    parser.add_argument("--profile", action="store_true", help="print the operators of the recipe's step")
    parser.add_argument("--alternatives", action="store_true", help="time the options that keep the recipe")
    parser.add_argument("--compile", action="store_true", help="with --alternatives: torch.compile too (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = Recipe()
    images, masks = _slices()
    augment = recipe.augment
    criterion = build(args.loss)
    if args.alternatives:
        x, y = augment.batch(images[: recipe.batch], masks[: recipe.batch], np.random.default_rng(1), recipe.patch)
        _alternatives(x, y, criterion, max(args.steps, 10), args.compile)
        return
    model = build_model(DEFAULT_ARCHITECTURE).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = bf16_available(torch.device("cpu"))

    def old_batch(rng: np.random.Generator, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        crops = [augment(images[i], masks[i], rng, recipe.patch) for i in idx]
        x = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        return x, torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.float32))[:, None]

    def new_batch(rng: np.random.Generator, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return augment.batch(images[idx], masks[idx], rng, recipe.patch)

    configs = {"previous (per-sample SciPy, fp32)": (old_batch, False),
               "recipe (Augment.batch, fp32)": (new_batch, False)}
    if bf16:
        configs["Augment.batch, bf16 autocast (not the recipe)"] = (new_batch, True)
    timings = {name: {"augment": [], "step": []} for name in configs}
    for _ in range(args.rounds):
        for name, (make, use_bf16) in configs.items():
            rng = np.random.default_rng(1)
            aug_s = step_s = 0.0
            for k in range(args.steps):
                idx = np.arange(k * recipe.batch, (k + 1) * recipe.batch) % len(images)
                tic = time.perf_counter()
                x, y = make(rng, idx)
                x = x.contiguous(memory_format=torch.channels_last)
                aug_s += time.perf_counter() - tic
                tic = time.perf_counter()
                _step(model, optimizer, criterion, x, y, use_bf16)
                step_s += time.perf_counter() - tic
            timings[name]["augment"].append(aug_s / args.steps)
            timings[name]["step"].append(step_s / args.steps)
    print(f"batch {recipe.batch} x {recipe.patch}^2 crops of 256^2 slices, loss {args.loss}, 1 thread; best of "
          f"{args.rounds} rounds of {args.steps} steps (s per step)")
    totals = {}
    for name, t in timings.items():
        aug, step = min(t["augment"]), min(t["step"])
        totals[name] = aug + step
        print(f"  {name:55s} augment {aug:.4f}  forward+backward+step {step:.4f}  total {aug + step:.4f}"
              f"  ({1 / (aug + step):.1f} steps/s)")
    old, new = list(totals.values())[:2]
    print(f"  speed-up of the recipe's path over the previous one: {old / new:.2f}x")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        rng = np.random.default_rng(1)
        x, y = new_batch(rng, np.arange(recipe.batch))
        x = x.contiguous(memory_format=torch.channels_last)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                _step(model, optimizer, criterion, x, y)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
