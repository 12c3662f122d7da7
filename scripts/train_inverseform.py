"""Retrain InverseForm's inverse-transformation net on the project's own mask boundaries.

The authors' weights (``distance_measures_regressor.pth``) are a release asset that is not in
their repository, and no training script for the net ships, so the ``inverseform`` loss uses a
net trained here (Borse et al. 2021, §3: regress the affine transformation between two boundary
maps). Recipe:

1. a pool of tumour masks of the project's synthetic T1-CE slices
   (:func:`napari_segloss.data.synthetic.generate_slice`, 256², axial, the three tumour kinds;
   training split seeds from 50 000 on, disjoint from the segmentation training slices):
   ``windows_per_slice`` 96² windows per tumour slice, each centred on a random pixel of the
   tumour's boundary moved by up to ±32 px, so a window holds the part of a contour a 64² tile of
   the loss sees (sometimes none, sometimes the whole lesion);
2. for each pair, a random similarity transform T about the canvas centre (rotation, scale,
   translation; the identity for a quarter of the pairs) is applied to a mask with bilinear
   resampling and a 0.5 threshold; half of the transformed masks are blurred into soft
   "probability" maps, as the loss sees them during training;
3. both are turned into boundary maps with the loss's operator ``x − erode3x3(x)`` and the
   central 64² tile is kept; the regression target is T's parameters relative to the identity,
   scaled to about [−1, 1] (zero when neither tile holds a boundary: nothing to align);
4. the MLP (2·64² → 256 → 32 → 4, ReLU) is fitted with MSE and Adam, then rounded to float16
   and evaluated on windows of the validation split.

Writes ``<out>/inverseform.safetensors`` and ``<out>/inverseform.json`` atomically. The card
follows the segmentation checkpoints' :class:`~napari_segloss.checkpoints.ModelCard` layout where
it applies (``schema_version``, ``name``, ``loss``, ``architecture``, ``recipe``, ``data``,
``history``, ``test_metrics``, ``notes``, ``created``, ``project_version``, ``weights_sha256``). Deterministic for a given seed and thread count on CPU.

Usage: ``python scripts/train_inverseform.py [--steps 1200] [--batch 256] [--pool 2000] [--seed 0] [--out weights/aux]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy import ndimage

import napari_segloss
from napari_segloss.losses._distance import inner_boundary
from napari_segloss.losses.boundary import InverseNet

CANVAS = 96
TILE = 64
HIDDEN = (256, 32)
#: half-ranges of the sampled transformation; targets are parameter / half-range
RANGES = {"rotation_rad": 0.2, "log_scale": 0.1, "translation_px": TILE / 10}
IDENTITY_FRACTION = 0.25
WINDOWS_PER_SLICE = 4
SOFT_FRACTION = 0.5


def tumour_pool(n: int, split: str, seed: int) -> torch.Tensor:
    """``n`` windows of synthetic tumour masks, bool ``(n, 1, CANVAS, CANVAS)``.

    Slices come from ``split`` of the synthetic generator (seeds from ``50_000 + seed``); tumour-free
    slices are skipped; each tumour slice gives :data:`WINDOWS_PER_SLICE` windows centred on a
    random boundary pixel moved by up to ``CANVAS / 3`` px.
    """
    from napari_segloss.data.synthetic import generate_slice, split_seeds

    rng = np.random.default_rng(seed)
    masks = np.empty((n, CANVAS, CANVAS), dtype=bool)
    half, jitter, filled = CANVAS // 2, CANVAS // 3, 0
    for slice_seed in split_seeds(split, 50 * n, base_seed=50_000 + seed):
        mask = generate_slice(slice_seed, 256).mask
        if not mask.any():
            continue
        padded = np.pad(mask, CANVAS)
        rows, cols = np.nonzero(padded & ~ndimage.binary_erosion(padded))
        for _ in range(WINDOWS_PER_SLICE):
            k = int(rng.integers(len(rows)))
            r, c = rows[k] + int(rng.integers(-jitter, jitter + 1)), cols[k] + int(rng.integers(-jitter, jitter + 1))
            masks[filled] = padded[r - half : r + half, c - half : c + half]
            filled += 1
            if filled == n:
                return torch.from_numpy(masks)[:, None]
    raise RuntimeError("not enough tumour slices")  # unreachable: 30 % of slices are tumour-free


def sample_transforms(n: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, 4)`` targets: rotation, log-scale, row and column shift, each / its half-range."""
    params = torch.rand(n, 4, generator=gen) * 2.0 - 1.0
    identity = torch.rand(n, generator=gen) < IDENTITY_FRACTION
    params[identity] = 0.0
    return params


def warp(masks: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Transform float masks (n, 1, CANVAS, CANVAS) by ``params`` (scaled targets).

    Returns the central ``(n, 1, TILE + 2, TILE + 2)`` window of the transformed canvas (one pixel
    of margin so the tile's boundary pixels see their true neighbours).
    """
    angle = params[:, 0] * RANGES["rotation_rad"]
    scale = torch.exp(params[:, 1] * RANGES["log_scale"])
    shift = params[:, 2:] * RANGES["translation_px"] * 2.0 / CANVAS  # normalised (row, col)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # grid_sample maps output (x=col, y=row) to input: x_in = R⁻¹ (x_out − t) / s; the output grid
    # covers only the central window, i.e. x_out = k·x_grid with k = window / canvas
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2) / scale[:, None, None]
    t_xy = torch.stack([shift[:, 1], shift[:, 0]], -1)
    window = TILE + 2
    theta = torch.cat([inv * (window / CANVAS), -(inv @ t_xy[:, :, None])], dim=2)
    grid = F.affine_grid(theta, [masks.shape[0], 1, window, window], align_corners=False)
    return F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur of (n, 1, H, W) with standard deviations ``sigma`` (n,) pixels."""
    r = torch.arange(-3, 4, dtype=x.dtype)
    kernels = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    n = x.shape[0]
    out = F.conv2d(x.transpose(0, 1), kernels.view(n, 1, 7, 1), padding=(3, 0), groups=n)
    out = F.conv2d(out, kernels.view(n, 1, 1, 7), padding=(0, 3), groups=n)
    return out.transpose(0, 1)


def window(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``² window of (..., H, W)."""
    lo_r, lo_c = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., lo_r : lo_r + size, lo_c : lo_c + size]


def make_pairs(pool: torch.Tensor, n: int, gen: torch.Generator, params: torch.Tensor | None = None):
    """``(pred_boundary, true_boundary, target)`` for ``n`` random masks of ``pool``."""
    idx = torch.randint(len(pool), (n,), generator=gen)
    masks = pool[idx].float()
    flips = torch.randint(0, 2, (n, 2), generator=gen).bool()
    masks = torch.where(flips[:, 0, None, None, None], masks.flip(-1), masks)
    masks = torch.where(flips[:, 1, None, None, None], masks.transpose(-1, -2), masks)
    if params is None:
        params = sample_transforms(n, gen)
    moved = (warp(masks, params) > 0.5).float()
    soft = torch.rand(n, generator=gen) < SOFT_FRACTION
    sigma = torch.rand(n, generator=gen) + 0.5
    if soft.any():
        moved[soft] = blur(moved[soft], sigma[soft])
    pred_b = window(inner_boundary(moved), TILE)
    true_b = window(inner_boundary(window(masks, TILE + 2)), TILE)
    informative = (true_b.flatten(1).amax(dim=1) > 0) | (pred_b.flatten(1).amax(dim=1) > 0)
    return pred_b, true_b, params * informative[:, None]


@torch.no_grad()
def evaluate(net: InverseNet, pool: torch.Tensor, seed: int, n: int = 2048) -> dict:
    """Held-out regression quality and the loss's behaviour on identical vs moved boundaries."""
    gen = torch.Generator().manual_seed(seed)
    pred_b, true_b, target = make_pairs(pool, n, gen)
    out = net(pred_b, true_b)
    mse = F.mse_loss(out, target).item()
    ss_res = ((out - target) ** 2).sum(dim=0)
    ss_tot = ((target - target.mean(dim=0)) ** 2).sum(dim=0)
    r2 = (1.0 - ss_res / ss_tot).tolist()
    norms = out.norm(dim=1)
    still = target.abs().sum(dim=1) == 0
    by_shift = {}
    for px in (0.0, 1.0, 2.0, 4.0, 6.0):
        params = torch.zeros(512, 4)
        params[:, 3] = px / RANGES["translation_px"]
        g = torch.Generator().manual_seed(seed + 1)
        p_b, t_b, _ = make_pairs(pool, 512, g, params)
        by_shift[f"{px:g}px"] = round(net(p_b, t_b).norm(dim=1).mean().item(), 4)
    return {
        "pairs": n,
        "mse": round(mse, 5),
        "r2": dict(zip(["rotation", "log_scale", "row_shift", "col_shift"], [round(v, 4) for v in r2])),
        "mean_norm_identity_or_uninformative": round(norms[still].mean().item(), 4),
        "mean_norm_transformed": round(norms[~still].mean().item(), 4),
        "mean_norm_by_column_shift": by_shift,
    }


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pool", type=int, default=2000, help="training mask windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(napari_segloss.weights_dir()) / "aux")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tic = time.perf_counter()
    train_pool = tumour_pool(args.pool, "train", seed=args.seed)
    val_pool = tumour_pool(256, "val", seed=args.seed)
    print(f"mask pools ready in {time.perf_counter() - tic:.0f}s", flush=True)
    gen = torch.Generator().manual_seed(args.seed)

    net = InverseNet(tile=TILE, hidden=HIDDEN, outputs=4)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    running, history = None, []
    for step in range(args.steps):
        pred_b, true_b, target = make_pairs(train_pool, args.batch, gen)
        loss = F.mse_loss(net(pred_b, true_b), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 99 or step == args.steps - 1:
            history.append({"step": step + 1, "train_mse": round(running, 5),
                            "seconds": round(time.perf_counter() - tic, 1)})
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  mse {running:.4f}  {time.perf_counter() - tic:.0f}s", flush=True)
    seconds = time.perf_counter() - tic

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "inverseform.safetensors"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    _atomic_write(weights, lambda p: save_file(state, str(p)))
    net.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    net.eval()
    validation = evaluate(net, val_pool, seed=args.seed + 20_000)
    print(json.dumps(validation, indent=1))

    card = {
        "schema_version": 1,
        "name": "inverseform",
        "kind": "auxiliary net (frozen) of the inverseform loss; not a segmentation checkpoint",
        "description": "InverseForm inverse-transformation MLP (Borse et al., CVPR 2021) retrained by this project: "
        "given the boundary map of a prediction and of the truth (64x64 tiles), it regresses the similarity "
        "transform between them; the loss is the norm of its output.",
        "architecture": {"type": "InverseNet", "tile": TILE, "hidden": list(HIDDEN), "outputs": 4,
                         "activation": "relu", "parameters": sum(p.numel() for p in net.parameters())},
        "inputs": "(pred_boundary, true_boundary), each (N, 1, 64, 64) in [0, 1], boundary = x - erode3x3(x) "
        "(napari_segloss.losses._distance.inner_boundary)",
        "outputs": [f"rotation / {RANGES['rotation_rad']} rad", f"log(scale) / {RANGES['log_scale']}",
                    f"row shift / {RANGES['translation_px']} px", f"column shift / {RANGES['translation_px']} px"],
        "loss": "mse",
        "data": {
            "source": "tumour masks (enhancing + necrotic core) of napari_segloss.data.synthetic.generate_slice "
            "(256x256 axial T1-CE slices, ~1 mm pixels, meningioma/glioma/pituitary; tumour-free slices skipped), "
            f"{WINDOWS_PER_SLICE} windows of {CANVAS}x{CANVAS} px per slice, each centred on a random boundary pixel "
            f"moved by up to +-{CANVAS // 3} px; random flips/transposes",
            "train_windows": args.pool, "train_split": "train", "validation_windows": 256,
            "validation_split": "val", "first_slice_seed_offset": 50_000 + args.seed,
            "transform": {"rotation_rad": [-RANGES["rotation_rad"], RANGES["rotation_rad"]],
                          "log_scale": [-RANGES["log_scale"], RANGES["log_scale"]],
                          "translation_px": [-RANGES["translation_px"], RANGES["translation_px"]],
                          "identity_fraction": IDENTITY_FRACTION},
            "soft_prediction_fraction": SOFT_FRACTION,
            "soft_prediction": "Gaussian blur, sigma 0.5-1.5 px, of the transformed mask",
            "uninformative_tiles": "target 0 when neither tile has a boundary",
        },
        "recipe": {"optimizer": "Adam", "lr": args.lr, "schedule": "cosine to 0", "batch": args.batch,
                   "steps": args.steps, "loss": "MSE", "threads": args.threads, "seconds": round(seconds, 1),
                   "device": "cpu"},
        "history": history,
        "test_metrics": validation,
        "notes": "test_metrics are on held-out windows of the validation split: MSE and R² of the four "
        "regressed parameters, and the mean output norm (the loss value) for identical vs transformed boundaries.",
        "dtype": "float16",
        "weights_file": weights.name,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "command": "python scripts/train_inverseform.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "project_version": napari_segloss.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "reference": "Borse S, Wang Y, Zhang Y, Porikli F. InverseForm: a loss function for structured "
        "boundary-aware segmentation. CVPR 2021. arXiv:2104.02745.",
    }
    _atomic_write(args.out / "inverseform.json", lambda p: p.write_text(json.dumps(card, indent=2) + "\n"))
    print(f"wrote {weights} and {weights.with_suffix('.json')} in {time.perf_counter() - tic:.0f}s")


if __name__ == "__main__":
    main()
