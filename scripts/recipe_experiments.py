"""Recipe experiments on real data: train on folds 1-2, score on fold 3 (validation only).

Fold 4 (the test fold) is never read here. Each run trains one loss with one recipe variant and
appends a JSON line (variant, validation Dice per epoch, best and last, minutes) to ``--log``; the
chosen recipe's measurements are copied into the ``Recipe`` docstring from that log.

    python scripts/recipe_experiments.py --name base --loss dice
    python scripts/recipe_experiments.py --name pre1500 --loss dice --pretrain-steps 1500
    python scripts/recipe_experiments.py --name neg300 --loss dice --pretrain-steps 1500 --synthetic-negatives 300
    python scripts/recipe_experiments.py --name ds2p128 --loss dice --pretrain-steps 1500 --downsample 2 \
        --patch 128 --pretrain-patch 128 [--seed 1] [--epochs 50]
    python scripts/recipe_experiments.py --name coarse30e40 --loss dice --pretrain-steps 1500 --epochs 40 \
        --coarse-epochs 30
    python scripts/recipe_experiments.py --name batchdice_neg25 --loss dice --pretrain-steps 1500 \
        --loss-args '{"per_image": false}' --neg-crop 0.25

Besides the validation Dice it logs ``val_false_alarms``: the share of the fold-3 negative crops
(:func:`~napari_segloss.train.data.negative_crops`, tumour-free 96x96 crops far from the tumour)
on which the trained network marks any pixel, and ``val_false_alarms_in_context``: the same
windows looked at in the prediction of their whole slice (a network trained on whole slices can
stay silent on a small crop run alone and still mark that tissue in the full slice).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from napari_segloss.models import DEFAULT_ARCHITECTURE
from napari_segloss.paths import shared_data_dir
from napari_segloss.train.loop import Recipe, train
from napari_segloss.train.pretrain import Pretraining


def val_false_alarms(checkpoint: Path, recipe: Recipe) -> tuple[float, float]:
    """Share of the validation fold's negative crops on which ``checkpoint`` marks any pixel: the
    crop run on its own (the cards' figure), and the same window in the prediction of its whole slice."""
    from napari_segloss.checkpoints import load
    from napari_segloss.preprocess import DEFAULT_NORMALIZATION
    from napari_segloss.train.data import negative_crops, negative_windows
    from napari_segloss.train.evaluate import THRESHOLD, crop_network_size, in_context_false_alarms, probabilities
    from napari_segloss.train.loop import load_splits

    val = load_splits(shared_data_dir() / "figshare", replace(recipe, synthetic_negatives=0),
                      dict(DEFAULT_NORMALIZATION)).val
    windows = negative_windows(val)
    crops = negative_crops(val, windows)
    loaded = load(checkpoint)
    size = loaded.card.image_size
    crop_size = crop_network_size(crops.images.shape[-2:], val.images.shape[-2:], size)
    alone = probabilities(loaded.model, crops.images, image_size=crop_size) >= THRESHOLD
    whole = probabilities(loaded.model, val.images, image_size=size)
    return float(alone.any(axis=(1, 2)).mean()), float(in_context_false_alarms(whole, windows).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--loss", default="dice")
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--patch", type=int, default=Recipe.patch)
    parser.add_argument("--batch", type=int, default=Recipe.batch)
    parser.add_argument("--lr", type=float, default=Recipe.lr)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--synthetic-negatives", type=int, default=0,
                        help="tumour-free phantom slices added to the training slices (Recipe.synthetic_negatives)")
    parser.add_argument("--neg-crop", type=float, default=0.0,
                        help="share of training windows placed away from the tumour (Augment.neg_crop)")
    parser.add_argument("--downsample", type=int, default=Recipe.downsample,
                        help="train on slices with this many times larger pixels (Recipe.downsample)")
    parser.add_argument("--pretrain-patch", type=int, default=Pretraining.patch)
    parser.add_argument("--coarse-epochs", type=int, default=Recipe.coarse_epochs,
                        help="first epochs at 2x coarser pixels (progressive resizing)")
    parser.add_argument("--arch", type=json.loads, default={}, help="JSON overrides of the architecture")
    parser.add_argument("--loss-args", type=json.loads, default={},
                        help='JSON hyper-parameters of the loss, e.g. \'{"per_image": false}\'')
    parser.add_argument("--seed", type=int, default=Recipe.seed,
                        help="seed of initialisation, batch order and augmentation (run-to-run noise)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("build/recipe_experiments"))
    parser.add_argument("--log", type=Path, default=Path("build/recipe_experiments.jsonl"))
    args = parser.parse_args()

    recipe = replace(Recipe(), epochs=args.epochs, patch=args.patch, batch=args.batch, lr=args.lr,
                     threads=args.threads, seed=args.seed, train_folds=(1, 2), val_folds=(3,), test_folds=(),
                     downsample=args.downsample, coarse_epochs=args.coarse_epochs,
                     pretraining=Pretraining(steps=args.pretrain_steps, patch=args.pretrain_patch),
                     synthetic_negatives=args.synthetic_negatives,
                     augment=replace(Recipe().augment, neg_crop=args.neg_crop))
    architecture = {**DEFAULT_ARCHITECTURE, **args.arch}
    tic = time.perf_counter()
    result = train(args.loss, out=args.out, data=shared_data_dir() / "figshare", recipe=recipe, device="cpu",
                   name=f"{args.name}_{args.loss}", architecture=architecture, loss_args=args.loss_args, progress=False)
    dice = [row["val_dice"] for row in result.history]
    alarms, in_context = val_false_alarms(result.path, recipe)
    row = {"name": args.name, "loss": args.loss, "epochs": args.epochs, "patch": args.patch, "batch": args.batch,
           "lr": args.lr, "pretrain_steps": args.pretrain_steps, "synthetic_negatives": args.synthetic_negatives,
           "neg_crop": args.neg_crop, "seed": args.seed, "downsample": args.downsample, "pretrain_patch": args.pretrain_patch,
           "arch": args.arch, "coarse_epochs": args.coarse_epochs, "loss_args": args.loss_args,
           "val_dice_fold3": [round(d, 4) for d in dice], "best": round(max(dice), 4), "last": round(dice[-1], 4),
           "val_false_alarms": round(alarms, 4), "val_false_alarms_in_context": round(in_context, 4),
           "minutes": round((time.perf_counter() - tic) / 60, 1)}
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
