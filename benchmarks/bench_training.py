"""Training throughput: one step of the committed recipe, split into its parts, old vs new path.

Prints, per configuration, seconds per step for augmentation, forward + backward + optimiser
step, and the total, on one CPU thread, interleaving the configurations (so a busy machine slows
them alike; the ratio is the figure to read). Configurations: the previous path (per-sample SciPy
augmentation, float32 forward) and the current one (:meth:`Augment.batch` in one ``grid_sample``,
bfloat16 autocast where the CPU has it natively).

    python benchmarks/bench_training.py [--steps 10] [--rounds 3] [--loss dice]
"""

from __future__ import annotations

import argparse
import contextlib
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loss", default="dice")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = Recipe()
    images, masks = _slices()
    augment = recipe.augment
    model = build_model(DEFAULT_ARCHITECTURE).to(memory_format=torch.channels_last)
    criterion = build(args.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = bf16_available(torch.device("cpu"))

    def old_batch(rng: np.random.Generator, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        crops = [augment(images[i], masks[i], rng, recipe.patch) for i in idx]
        x = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        return x, torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.float32))[:, None]

    def new_batch(rng: np.random.Generator, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return augment.batch(images[idx], masks[idx], rng, recipe.patch)

    configs = {"previous (per-sample SciPy, fp32)": (old_batch, False),
               f"current (Augment.batch, {'bf16' if bf16 else 'fp32: no native bf16 here'})": (new_batch, bf16)}
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
                cast = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
                with cast:
                    logits = model(x)
                loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
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
    old, new = totals.values()
    print(f"  speed-up: {old / new:.2f}x")


if __name__ == "__main__":
    main()
