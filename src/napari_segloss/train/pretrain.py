"""Loss-neutral pretraining: the network learns the images (not their masks) once, for every loss.

Masked-image denoising (a masked-autoencoder objective for a convolutional net): each training
crop, augmented exactly as in training (:class:`~napari_segloss.train.data.Augment`, the masks
only steer the crop), gets Gaussian noise and a random ``block x block`` grid of patches blanked
(``mask_ratio`` of them); the network's single output channel is trained with the mean squared
error to reproduce the clean crop. No segmentation label is used, so the start is identical and
neutral for every loss: each bundled checkpoint then trains from these weights with only its
loss differing. The segmentation head is re-initialised (seeded) after pretraining, so that no
loss starts from an image-shaped logit map.

The weights are cached (``pretrain/pretrain_<hash>.safetensors`` under
:func:`napari_segloss.paths.user_cache_dir`; the hash covers the
architecture, the training slices' names, the pretraining parameters and the seed), so
``make weights`` computes them once and every loss, on any run, loads the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloss.paths import user_cache_dir
from napari_segloss.train.data import Augment, SliceSet, epoch_batches


#: what the cached weights were trained with (part of the cache key)
OBJECTIVE = "masked-image denoising (MSE), Augment.batch crops"


@dataclass(frozen=True)
class Pretraining:
    """Parameters of the masked-image denoising pretraining.

    Attributes:
        steps: optimiser steps (0 = no pretraining).
        batch: crops per step.
        patch: crop size in pixels (a multiple of 32).
        lr: peak learning rate (AdamW, one-cycle).
        mask_ratio: share of ``block x block`` patches blanked in the input.
        block: patch side in pixels.
        noise: standard deviation of the added Gaussian noise (normalised intensities).
    """

    steps: int = 0
    batch: int = 8
    patch: int = 160
    lr: float = 5e-3
    mask_ratio: float = 0.4
    block: int = 16
    noise: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (for the card's recipe)."""
        return asdict(self)


def _corrupt(x: torch.Tensor, rng: np.random.Generator, settings: Pretraining) -> torch.Tensor:
    """``x`` ``(B, 1, P, P)`` with noise added and a random grid of blocks set to zero."""
    b, _, h, w = x.shape
    grid = (h // settings.block, w // settings.block)
    keep = rng.random((b, 1, *grid)) >= settings.mask_ratio
    keep_full = np.kron(keep, np.ones((settings.block, settings.block), dtype=bool))
    noise = rng.standard_normal(x.shape).astype(np.float32) * settings.noise
    return (x + torch.from_numpy(noise)) * torch.from_numpy(keep_full.astype(np.float32))


def cache_key(architecture: Mapping[str, Any], train: SliceSet, settings: Pretraining, augment: Augment,
              seed: int) -> str:
    """Hash of everything the pretrained weights depend on."""
    payload = json.dumps({"objective": OBJECTIVE, "architecture": dict(architecture), "names": list(train.names),
                          "shape": list(train.images.shape), "settings": settings.to_dict(),
                          "augment": augment.to_dict(), "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def pretrain(model: torch.nn.Module, train: SliceSet, settings: Pretraining, augment: Augment, *, seed: int,
             device: torch.device, progress: bool = True) -> list[float]:
    """Masked-image denoising of ``model`` in place on ``train``'s images; returns the loss per 100 steps."""
    from tqdm.auto import tqdm

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=settings.steps,
                                                    pct_start=0.1, anneal_strategy="cos")
    curve, running = [], []
    bar = tqdm(total=settings.steps, desc="pretraining (masked-image denoising)", disable=not progress,
               dynamic_ncols=True)
    step, epoch = 0, 0
    while step < settings.steps:
        for idx, rng in epoch_batches(len(train), settings.batch, seed + 7919, epoch):
            clean, _ = augment.batch(train.images[idx], train.masks[idx], rng, settings.patch)
            noisy = _corrupt(clean, rng, settings)
            out = model(noisy.to(device, memory_format=torch.channels_last))
            loss = torch.nn.functional.mse_loss(out.float(), clean.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if step % 100 == 0 or step == settings.steps:
                curve.append(float(np.mean(running)))
                running = []
                bar.set_postfix(mse=f"{curve[-1]:.4f}")
            if step == settings.steps:
                break
        epoch += 1
    bar.close()
    return curve


def reset_head(model: torch.nn.Module, seed: int) -> None:
    """Re-initialise the segmentation head's layers (seeded), keeping encoder and decoder."""
    head = getattr(model, "segmentation_head", None)
    if head is None:
        return
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    for module in head.modules():
        if hasattr(module, "reset_parameters") and module is not head:
            module.reset_parameters()
    torch.set_rng_state(generator_state)


def pretrained_start(model: torch.nn.Module, architecture: Mapping[str, Any], train: SliceSet,
                     settings: Pretraining, augment: Augment, *, seed: int, device: torch.device,
                     cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Load (or compute once and cache) the pretrained weights into ``model``; reset its head.

    Returns what the card records: the cache key, the loss curve and the seconds it took (0
    when loaded from the cache). With ``settings.steps == 0`` nothing happens.
    """
    from safetensors.torch import load_file, save_file

    if settings.steps <= 0:
        return {}
    key = cache_key(architecture, train, settings, augment, seed)
    folder = Path(cache_dir) if cache_dir else user_cache_dir() / "pretrain"
    path = folder / f"pretrain_{key}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        model.load_state_dict(load_file(str(path), device=str(device)))
        info = json.loads(meta_path.read_text())
    else:
        tic = time.perf_counter()
        curve = pretrain(model, train, settings, augment, seed=seed, device=device, progress=progress)
        info = {"key": key, "objective": OBJECTIVE, "settings": settings.to_dict(),
                "mse_per_100_steps": curve, "seconds": round(time.perf_counter() - tic, 1)}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
        meta_path.write_text(json.dumps(info))
    reset_head(model, seed)
    return info
