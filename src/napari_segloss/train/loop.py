"""The training loop: one recipe for every loss, resumable, optionally distributed.

:func:`train` builds the shared network, the loss (``napari_segloss.losses.build``) and its
:class:`~napari_segloss.train.extras.Extras`, trains for ``recipe.epochs`` epochs with AdamW and
a one-cycle schedule, validates after each epoch (mean per-slice Dice/IoU over validation slices
with tumour), and writes the released checkpoint with
:func:`napari_segloss.checkpoints.save_checkpoint` (fp16 safetensors + model card).

Resume state (``<out>/<name>.resume.pt``, written after every epoch): model, optimiser,
scheduler and loss state dicts, history and RNG state -- tensors and plain containers only,
saved with ``torch.save`` and read with ``torch.load(weights_only=True)``. It is deleted once
the checkpoint is written. Augmentation and batch order derive from ``(seed, epoch)``, so a
resumed run continues exactly where the interrupted one stopped.

Distributed: launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set), the model is wrapped in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU), each rank takes its share of every
global batch, and only rank 0 validates into the history, prints and writes files.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloss.jsonable import jsonable
from napari_segloss.train.data import Augment, Splits, epoch_batches
from napari_segloss.train.evaluate import THRESHOLD, overlap, probabilities
from napari_segloss.train.distributed import average_gradients
from napari_segloss.train.extras import Extras
from napari_segloss.train.pretrain import Pretraining, pretrained_start


@dataclass
class Recipe:
    """The shared training recipe (identical for every bundled checkpoint).

    Real scans (Cheng's figshare dataset, 256x256 at 0.98 mm): train on folds 1-3 less the last
    10 % of each fold (validation), test on fold 4. One loss-neutral masked-image denoising
    pretraining (1,500 steps, :mod:`~napari_segloss.train.pretrain`) is shared by every loss; each
    loss then trains 25 epochs of random 160x160 crops, batch 8, AdamW one-cycle at 1e-2.

    Chosen on validation data only (plain Dice loss, train folds 1-2, validate on fold 3; log in
    ``benchmarks/recipe_experiments.jsonl``, command ``scripts/recipe_experiments.py``): the
    previous synthetic recipe (15 epochs, 2,295 steps) reached val Dice 0.532; the same after the
    shared pretraining 0.548 (best 0.551; the last five epochs 0.545-0.551 against 0.518-0.532);
    bfloat16 autocast 0.524 and no faster on this CPU (``benchmarks/bench_training.py``: 0.124 s
    against 0.101 s per forward+backward), so training stays float32. The issue's own runs on the
    same split: 3x the steps lifted ``dice_focal`` from 0.59 to 0.67, so the epochs were raised to
    what the budget allows (about 12 CPU-minutes per loss on one thread: 25 epochs of ~200 steps).
    The previous synthetic recipe (15 epochs of 60 steps on 480 synthetic slices) measured Dice
    0.73-0.85 on synthetic data, which said nothing about real scans.
    Tumour-free synthetic slices mixed in (``synthetic_negatives``, same log, plain Dice, 25
    epochs after the pretraining): without them val Dice 0.596 and 90.4 % of the validation
    fold's negative crops flagged; with 300, 0.584 and 94.8 %. No help on either count, so the
    bundled recipe keeps 0.
    Also tried on the same split, not adopted (same log): a 3x longer shared pretraining (4,500
    steps) 0.585; batch 4 (twice the steps, 1.3x the time) 0.601, within the noise of 0.596;
    tumour-free training windows (``Augment.neg_crop`` = 0.25, against 1.5 % of windows without
    tumour in the recipe's crops) 0.567 with 92.5 % of the negatives still flagged -- the per-image
    Dice loss has next to no gradient on an empty target (smooth 1e-5: ``1 - s / (sum p + s)``
    is flat once anything is predicted), so tumour-free windows teach it nothing. With
    ``unified_focal`` (a focal cross-entropy term) the same windows gave 0.620 against 0.656 and
    48.0 % against 49.9 % of the negatives flagged: no help either.
    Training at 2 mm pixels (``downsample`` = 2: whole 128x128 slices, the network run at that
    size for validation, test and ``predict``; measured 2026-12-08 on one machine with today's code,
    seeds 0 and 1, false alarms = validation negatives flagged run alone / seen in their whole
    slice): at about half the compute per epoch, ``dice`` 0.597 / 0.583 against 0.567 / 0.588 at
    the recipe's 1 mm (the 0.596 above is an older code version), ``unified_focal`` 0.619 / 0.634
    against 0.656 / 0.631; 50 epochs ``dice`` 0.623, 37 epochs ``unified_focal`` 0.634; the
    MobileNetV3-small-100 encoder (1.1 M parameters) ``dice`` 0.609 in 1.3x the time; lr 3e-3
    0.588. False alarms fall (``dice`` 1-10 % alone / 21-22 % in context against 92-93 % / 30-34 %;
    ``unified_focal`` 0.2-3 % / 12-15 % against 46-50 % / 19-27 %), but the standalone crops' near-zero
    is partly an artefact: a network trained on whole slices stays silent on a small crop it marks
    in context. With the same seeds at 1 mm ``unified_focal`` gave 0.656 / 0.631 (seed noise of
    0.01-0.03), so at 2 mm both losses match the 1 mm recipe's Dice within the noise at half its
    compute, and more epochs keep lifting them; the MobileNetV3-small-100 encoder added about 0.01
    (``unified_focal`` 0.639). Tried for the whole set (40 epochs, folds 1-3, validation = the
    last 10 % of each fold): ``bce``, the first loss trained, reached val Dice 0.484 against the
    bundled ``bce``'s 0.531 (more conservative: fewer false alarms, lower sensitivity), so the
    set was stopped there: not adopted. On the experiments' split ``bce`` confirms it: 0.548 at
    2 mm against 0.616 at 1 mm (false alarms 1 % / 7 % against 6 % / 15 %): pixel-wise losses
    lose what Dice-type ones gain. Twice the epochs at 2 mm (50, about the 1 mm recipe's compute)
    do not close the gap: ``bce`` 0.574 (best 0.584), ``unified_focal`` 0.634 (2026-12-08).
    A lower peak learning rate (3e-3, 1 mm, same split, seeds 0 / 1) does not rescue the collapsed
    losses (``lovasz_hinge`` oscillates between 0.01 and 0.30 and ends at 0.07, ``region_wise``
    stays at 0, ``dice_simclr`` at 0.03) and splits the others: ``dice`` 0.603 / 0.611 against
    0.567 / 0.588 (false alarms 73-77 % alone, 25-26 % in context, against 92-93 % / 30-34 %), but
    ``unified_focal`` 0.646 / 0.630 against 0.656 / 0.631 and ``bce`` 0.606 against 0.616 (seed 0):
    +0.03 for the region losses, -0.01 for the others, so the bundled set keeps 1e-2.
    Progressive resizing (``coarse_epochs`` = 30 of 40 at 2 mm, then 10 at 1 mm: about the
    recipe's compute; ``--coarse-epochs 30 --epochs 40``): the switch to 1 mm costs 0.08-0.13
    Dice that the last, low-learning-rate epochs do not win back: ``dice`` 0.537 (0.607 before
    the switch), ``unified_focal`` 0.626 (0.642): not adopted.
    Batch Dice (the ``dice`` loss with ``per_image=False``: TP, FP and FN pooled over the batch,
    nnU-Net's choice; ``--loss-args '{"per_image": false}'``, seeds 0 / 1): val Dice 0.564 / 0.562
    against 0.567 / 0.588, validation negatives flagged 12 % alone (against 92-93 %) and 23-24 %
    in context (30-34 %); with tumour-free windows (``neg_crop`` = 0.25), which the pooled Dice
    does learn from, 0.484 / 0.489 at 6-9 % alone and 14-27 % in context. The catalogue's ``dice``
    stays the per-image Dice of its reference; ``per_image=False`` is there to train the variant.
    The MobileNetV3-small-100 encoder at 1 mm (1.07 M parameters against 0.57 M, 2.1 MB per fp16
    checkpoint against 1.2 MB; a training step 1.23x the time, batch 8 of 160², one thread;
    ``--arch '{"encoder_name": "timm-mobilenetv3_small_100"}'``, seeds 0 / 1): ``dice`` 0.632 /
    0.627 against 0.567 / 0.588, ``unified_focal`` 0.660 / 0.627 against 0.656 / 0.631, ``bce``
    0.617 against 0.616 (seed 0). It lifts the Dice-type losses only, and the set would need
    about 4.6 h (over the 4 h budget) at 25 epochs: measured, not adopted yet.

    Attributes:
        epochs: passes over the training slices.
        batch: slices per optimiser step (per process under DDP).
        patch: training crop size in pixels (square, a multiple of 32); validation and test
            run on whole slices, as inference does.
        downsample: integer factor by which the training pixels are made coarser (1 = the data's
            own grid): synthetic slices rendered at ``render_size`` are block-averaged down (all
            splits); a labelled folder's training slices are resized by ``1/downsample``
            (:meth:`~napari_segloss.train.data.SliceSet.coarser`) while validation and test keep
            their size, the network run at the training size as ``predict`` runs it.
        coarse_epochs: the first epochs of the ``epochs`` that train at ``coarse_factor`` times
            coarser pixels (progressive resizing: the training slices resized like ``downsample``
            does, whole slices when they fit in ``patch``, validation run at that size); the
            remaining epochs train at the recipe's own scale, which the checkpoint keeps. 0 = none.
        coarse_factor: how much coarser the pixels of the ``coarse_epochs`` are.
        lr: peak learning rate of the one-cycle schedule (AdamW) for the network.
        loss_lr: peak learning rate of learnable loss parameters (no weight decay).
        weight_decay: AdamW weight decay of the network.
        warmup: fraction of the steps spent warming up (one-cycle ``pct_start``).
        grad_clip: gradient-norm clip (``0`` disables).
        seed: seed of weight initialisation, batch order and augmentation.
        n_train, n_val, n_test, n_volumes: synthetic split sizes (slices; test volumes).
        volume_depth: slices per synthetic test volume (``volume_depth x render_size^2``).
        render_size: synthetic rendering size before downsampling.
        threads: torch CPU threads (0 = torch's default, all cores).
        train_folds, val_folds, test_folds: folds of a labelled folder (``labels.csv``) used for
            training, validation (empty: the last ``val_fraction`` of each training fold) and test.
        val_fraction: share of each training fold held out for validation when ``val_folds`` is empty.
        bf16: run the network's forward pass under bfloat16 autocast where the hardware has it
            natively (CUDA, CPUs with AVX-512 BF16 or AMX; :func:`bf16_available`); the loss, the
            gradients' master copy and the optimiser stay float32. Validation and test run in
            float32, as inference does.
        synthetic_negatives: tumour-free synthetic slices (the phantom at the real slices' size,
            :func:`~napari_segloss.train.data.synthetic_negatives`) added to a labelled folder's
            training slices, which all contain tumour; 0 adds none (the bundled set's recipe).
        pretraining: the loss-neutral masked-image denoising start shared by every loss
            (:mod:`napari_segloss.train.pretrain`; ``steps=0`` trains from random weights).
        augment: the augmentation parameters.
    """

    epochs: int = 25
    batch: int = 8
    patch: int = 160
    downsample: int = 1
    coarse_epochs: int = 0
    coarse_factor: int = 2
    lr: float = 1e-2
    loss_lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    n_train: int = 480
    n_val: int = 64
    n_test: int = 200
    n_volumes: int = 4
    volume_depth: int = 48
    render_size: int = 256
    threads: int = 0
    train_folds: tuple[int, ...] = (1, 2, 3)
    val_folds: tuple[int, ...] = ()
    test_folds: tuple[int, ...] = (4,)
    val_fraction: float = 0.1
    bf16: bool = False
    synthetic_negatives: int = 0
    pretraining: Pretraining = field(default_factory=lambda: Pretraining(steps=1500))
    augment: Augment = field(default_factory=Augment)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable recipe for the model card."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["augment"] = self.augment.to_dict()
        out["optimizer"] = "AdamW"
        out["schedule"] = "OneCycleLR (cosine annealing)"
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The recipe recorded in a card (keys that are not fields, e.g. ``optimizer``, are ignored)."""
        names = {f.name for f in fields(cls)} - {"augment", "pretraining"}
        aug = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(data.get("augment", {})).items()}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        settings = {f.name for f in fields(Pretraining)}
        pre = {k: v for k, v in dict(data.get("pretraining", {})).items() if k in settings}  # not its "result"
        return cls(**values, augment=Augment(**aug), pretraining=Pretraining(**pre))


@dataclass
class TrainResult:
    """What :func:`train` produced: the checkpoint path returned by ``save_checkpoint``
    (``None`` if stopped early), the card dict as written, and the per-epoch history."""

    path: Path | None
    card: dict[str, Any]
    history: list[dict[str, Any]]


def load_splits(data: str | Path, recipe: Recipe, normalization: Mapping[str, Any]) -> Splits:
    """``"synthetic"`` -> the cached synthetic splits; a labelled folder (``labels.csv`` with
    patient-disjoint folds) -> :func:`~napari_segloss.train.data.fold_splits` with the recipe's
    folds; any other folder of image/mask pairs -> :func:`~napari_segloss.train.data.folder_splits`."""
    from napari_segloss.data.figshare import is_labelled_folder
    from napari_segloss.train.data import fold_splits, folder_splits, synthetic_negatives, synthetic_splits

    from napari_segloss.models import SIZE_MULTIPLE

    if recipe.patch % SIZE_MULTIPLE:
        raise ValueError(f"patch {recipe.patch} must be a multiple of {SIZE_MULTIPLE}")
    if str(data) == "synthetic":
        if (recipe.render_size // recipe.downsample) % SIZE_MULTIPLE:
            raise ValueError(f"render_size / downsample must be a multiple of {SIZE_MULTIPLE}")
        return synthetic_splits(recipe.n_train, recipe.n_val, recipe.n_test, size=recipe.render_size,
                                factor=recipe.downsample, n_volumes=recipe.n_volumes,
                                volume_shape=(recipe.volume_depth, recipe.render_size, recipe.render_size),
                                normalization=normalization)
    if is_labelled_folder(data):
        splits = fold_splits(data, train_folds=recipe.train_folds, val_folds=recipe.val_folds,
                             test_folds=recipe.test_folds, val_fraction=recipe.val_fraction,
                             normalization=normalization)
        if recipe.synthetic_negatives:
            extra = synthetic_negatives(recipe.synthetic_negatives, splits.train.images.shape[-1], normalization)
            splits.train = splits.train.concat(extra)
            splits.description["synthetic_negatives"] = (
                f"{len(extra)} tumour-free synthetic slices added to the training slices")
        if recipe.downsample > 1:
            splits.train, splits.train_factor = splits.train.coarser(recipe.downsample), recipe.downsample
            splits.description["training_scale"] = (
                f"training slices resized to 1/{recipe.downsample} ({list(splits.train.images.shape[-2:])} pixels); "
                "validation and test slices are scored at their own size, the network run at the training "
                "size as predict runs a slice of unknown pixel size")
        return splits
    return folder_splits(data, seed=recipe.seed, normalization=normalization)


class _WithFeatures(torch.nn.Module):
    """Wraps a segmentation model so ``forward`` returns ``(logits, features)`` (DDP-friendly)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from napari_segloss.models import forward_with_features

        return forward_with_features(self.model, x)


def _distributed(device: torch.device) -> tuple[int, int]:
    """Initialise torch.distributed under torchrun; returns ``(rank, world_size)``."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _device(device: str) -> torch.device:
    from napari_segloss.models import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def _batch(split: Any, idx: np.ndarray, rng: np.random.Generator, augment: Augment, patch: int,
           extras: Extras, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], np.ndarray]:
    """Augmented ``patch``-sized batch ``(x, y)`` ``(B, 1, patch, patch)`` (one
    :meth:`~napari_segloss.train.data.Augment.batch` call), precomputed maps, and spacing ``(B, 2)`` mm."""
    x, y = augment.batch(split.images[idx], split.masks[idx], rng, patch)
    masks = y[:, 0].numpy().astype(bool)
    maps = [extras.sample_maps(msk, split.spacing[i]) for msk, i in zip(masks, idx)]
    x = x.to(device, memory_format=torch.channels_last)
    y = y.to(device)
    batched = {k: torch.from_numpy(np.stack([m[k] for m in maps]))[:, None].to(device) for k in extras.maps}
    return x, y, batched, split.spacing[idx]


def _save_state(path: Path, **state: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def _round_to_half(model: torch.nn.Module) -> None:
    """Round floating-point weights to float16 precision in place, so the test metrics recorded
    in the card are those of the released fp16 checkpoint."""
    for value in model.state_dict().values():
        if torch.is_floating_point(value):
            value.copy_(value.half().float())


def _card(name: str, loss_name: str, hparams: Mapping[str, Any], loss: Any, extras: Extras,
          architecture: Mapping[str, Any], recipe: Recipe, splits: Splits, normalization: Mapping[str, Any],
          history: list[dict[str, Any]], test_metrics: Mapping[str, Any], world: int,
          pretrained: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    from napari_segloss import __version__
    from napari_segloss.checkpoints import SCHEMA_VERSION
    from napari_segloss.losses import info

    meta = info(loss_name)
    spacing = [float(v) for v in np.median(splits.train.spacing, axis=0)]
    notes = []
    if meta.notes:
        notes.append(meta.notes)
    dice = test_metrics.get("dice")
    if dice is not None and np.isfinite(dice) and dice < 0.1:
        notes.append(f"Collapsed under the shared recipe: test Dice {dice:.3f} (finding, not hidden).")
    recipe_dict = {**recipe.to_dict(), "world_size": world, "extras": extras.describe(), **run}
    if pretrained:
        recipe_dict["pretraining"] = {**recipe_dict["pretraining"], "result": dict(pretrained)}
    return jsonable({
        "schema_version": SCHEMA_VERSION, "name": name, "loss": loss_name, "family": meta.family,
        "loss_hparams": dict(hparams), "loss_state": loss.state(),
        "architecture": dict(architecture), "input_channels": int(architecture.get("in_channels", 1)),
        "normalization": dict(normalization), "patch_size": [recipe.patch, recipe.patch],
        "pixel_spacing_mm": spacing, "image_size": [int(n) for n in splits.train.images.shape[-2:]],
        "recipe": recipe_dict, "data": dict(splits.description),
        "history": history, "test_metrics": dict(test_metrics), "notes": " ".join(notes),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "project_version": __version__, "weights_sha256": "",
    })


def bf16_available(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (CUDA with bf16, CPU with oneDNN bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _autocast(device: torch.device, precision: str) -> Any:
    import contextlib

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(
    loss: str,
    *,
    out: str | Path,
    loss_args: Mapping[str, Any] | None = None,
    data: str | Path = "synthetic",
    recipe: Recipe | None = None,
    device: str = "auto",
    name: str | None = None,
    resume: bool = False,
    architecture: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], bool | None] | None = None,
) -> TrainResult:
    """Train one checkpoint with the shared recipe.

    Args:
        loss: loss name or alias (``napari_segloss.losses.available()``).
        out: folder of the checkpoint (``<name>.safetensors`` + ``<name>.json``) and of the
            resume state ``<name>.resume.pt``.
        loss_args: hyper-parameters overriding the loss's paper defaults (recorded in the card).
        data: ``"synthetic"`` or a folder of image/mask pairs.
        recipe: training recipe (default :class:`Recipe`).
        device: ``"auto" | "cpu" | "cuda[:i]" | "mps"``.
        name: checkpoint name (default: the canonical loss name).
        resume: continue from ``<out>/<name>.resume.pt`` if it exists.
        architecture: model architecture dict (default ``models.DEFAULT_ARCHITECTURE``).
        progress: show a tqdm bar with the running loss and the validation Dice.
        on_epoch_end: called with each epoch's history row; returning ``False`` stops after
            saving the resume state (no checkpoint is written, ``path`` is ``None``).
    Returns:
        :class:`TrainResult`.
    """
    from tqdm.auto import tqdm

    from napari_segloss.checkpoints import ModelCard, save_checkpoint
    from napari_segloss.losses import build, info, resolve
    from napari_segloss.models import DEFAULT_ARCHITECTURE, SIZE_MULTIPLE, build_model
    from napari_segloss.preprocess import DEFAULT_NORMALIZATION
    from napari_segloss.train.evaluate import evaluate

    recipe = recipe or Recipe()
    if not 0 <= recipe.coarse_epochs <= recipe.epochs:
        raise ValueError(f"coarse_epochs {recipe.coarse_epochs} must be between 0 and epochs {recipe.epochs}")
    if recipe.coarse_factor < 1:
        raise ValueError(f"coarse_factor {recipe.coarse_factor} must be a whole number >= 1")
    architecture = dict(architecture or DEFAULT_ARCHITECTURE)
    loss_name = resolve(loss)
    name = name or loss_name
    hparams = {**info(loss_name).defaults, **(loss_args or {})}
    normalization = dict(DEFAULT_NORMALIZATION)
    out = Path(out)
    if recipe.threads > 0:
        torch.set_num_threads(recipe.threads)
    dev = _device(device)
    rank, world = _distributed(dev)
    precision = "bf16" if recipe.bf16 and bf16_available(dev) else "fp32"

    splits = load_splits(data, recipe, normalization)
    torch.manual_seed(recipe.seed)
    model = build_model(architecture).to(dev, memory_format=torch.channels_last)
    pretrained = pretrained_start(model, architecture, splits.train, recipe.pretraining, recipe.augment,
                                  seed=recipe.seed, device=dev, progress=progress and rank == 0)
    criterion = build(loss_name, **(loss_args or {})).to(dev)
    extras = Extras(criterion, info(loss_name).needs)
    extras.fit(list(splits.train.masks))
    net: torch.nn.Module = _WithFeatures(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    groups = [{"params": list(model.parameters()), "lr": recipe.lr, "weight_decay": recipe.weight_decay}]
    loss_params = [p for p in criterion.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": recipe.loss_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    steps = len(splits.train) // (recipe.batch * world)
    if steps == 0:
        raise ValueError(f"{len(splits.train)} training slices are fewer than one batch of {recipe.batch * world}")
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=recipe.epochs * steps,
        pct_start=recipe.warmup, anneal_strategy="cos",
    )

    state_path = out / f"{name}.resume.pt"
    history: list[dict[str, Any]] = []
    start = 0
    recipe_json = json.dumps({k: v for k, v in recipe.to_dict().items() if k != "threads"}, sort_keys=True)
    state = torch.load(state_path, map_location=dev, weights_only=True) if resume and state_path.exists() else None
    if state is not None and state.get("recipe") != recipe_json:
        warnings.warn(f"{state_path} was saved with another recipe; starting from scratch", stacklevel=2)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        criterion.load_state_dict(state["loss"])
        torch.set_rng_state(state["rng"]["torch"])
        history, start = list(state["history"]), int(state["epoch"]) + 1
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    coarse = splits.train.coarser(recipe.coarse_factor) if recipe.coarse_epochs else splits.train
    bar = tqdm(total=recipe.epochs * steps, initial=start * steps, desc=name, disable=not progress or rank > 0,
               dynamic_ncols=True)
    for epoch in range(start, recipe.epochs):
        tic = time.perf_counter()
        extras.start_epoch(epoch, recipe.epochs)
        net.train()
        total, count = 0.0, 0
        stage, patch = splits.train, recipe.patch
        if epoch < recipe.coarse_epochs:  # whole coarse slices when they fit in the patch
            stage, patch = coarse, min(recipe.patch, coarse.images.shape[-1] // SIZE_MULTIPLE * SIZE_MULTIPLE)
        for idx, rng in epoch_batches(len(splits.train), recipe.batch, recipe.seed, epoch, rank=rank, world=world):
            x, y, maps, spacing = _batch(stage, idx, rng, recipe.augment, patch, extras, dev)
            with _autocast(dev, precision):
                logits, features = extras.forward(net, x)
            logits = logits.float()
            features = features.float() if features is not None else None
            kwargs = extras.call_kwargs(maps=maps, features=features, spacing=np.median(spacing, axis=0))
            value = criterion(logits, y, **kwargs)
            if not torch.isfinite(value):
                raise FloatingPointError(f"{name}: loss became {value.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            average_gradients(loss_params, world)
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            total, count = total + float(value.detach()), count + 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}", val_dice=f"{history[-1]['val_dice']:.3f}" if history else "-")
        prob = probabilities(model, splits.val.images, device=dev, image_size=stage.images.shape[-2:])
        scores = overlap(prob >= THRESHOLD, splits.val.masks)
        row = {"epoch": epoch, "train_loss": total / count, "val_dice": scores["dice"], "val_iou": scores["iou"],
               "seconds": time.perf_counter() - tic}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_dice=f"{row['val_dice']:.3f}")
        if rank == 0:
            _save_state(state_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), loss=criterion.state_dict(), rng={"torch": torch.get_rng_state()},
                        history=history, epoch=epoch, recipe=recipe_json)
        if on_epoch_end is not None and on_epoch_end(dict(row)) is False:
            bar.close()
            return TrainResult(None, {}, history)
    bar.close()

    _round_to_half(model)
    test_metrics, _ = evaluate(model, splits, device=dev, seed=recipe.seed, image_size=splits.train.images.shape[-2:])
    card = _card(name, loss_name, hparams, criterion, extras, architecture, recipe, splits, normalization,
                 history, test_metrics, world, pretrained, {"precision": precision, "device": dev.type})
    if splits.test is not None and len(splits.test) and len(splits.val):
        from napari_segloss.inference import Segmenter
        from napari_segloss.interpret.calibration import calibration_summary

        # calibration of the network's own logits, on val/test slices at the training pixel size
        segmenter = Segmenter(model, device=dev)
        val, test = splits.val.coarser(splits.train_factor), splits.test.coarser(splits.train_factor)
        card["calibration"] = jsonable(calibration_summary(segmenter.logits(val.images), val.masks,
                                                            segmenter.logits(test.images), test.masks))
    path = None
    if rank == 0:
        path = save_checkpoint(model, ModelCard.from_dict(card), out)
        card = json.loads((out / f"{name}.json").read_text())
        state_path.unlink(missing_ok=True)
    return TrainResult(path, card, history)
