"""Recipe experiments on real data: train on folds 1-2, score on fold 3 (validation only).

Fold 4 (the test fold) is never read here. Each run trains one loss with one recipe variant and
appends a JSON line (variant, validation Dice per epoch, best and last, minutes) to ``--log``; the
chosen recipe's measurements are copied into the ``Recipe`` docstring from that log.

    python scripts/recipe_experiments.py --name base --loss dice
    python scripts/recipe_experiments.py --name pre1500 --loss dice --pretrain-steps 1500
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--loss", default="dice")
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--patch", type=int, default=Recipe.patch)
    parser.add_argument("--batch", type=int, default=Recipe.batch)
    parser.add_argument("--lr", type=float, default=Recipe.lr)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--arch", type=json.loads, default={}, help="JSON overrides of the architecture")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("build/recipe_experiments"))
    parser.add_argument("--log", type=Path, default=Path("build/recipe_experiments.jsonl"))
    args = parser.parse_args()

    recipe = replace(Recipe(), epochs=args.epochs, patch=args.patch, batch=args.batch, lr=args.lr,
                     threads=args.threads, train_folds=(1, 2), val_folds=(3,), test_folds=(),
                     pretraining=Pretraining(steps=args.pretrain_steps))
    architecture = {**DEFAULT_ARCHITECTURE, **args.arch}
    tic = time.perf_counter()
    result = train(args.loss, out=args.out, data=shared_data_dir() / "figshare", recipe=recipe, device="cpu",
                   name=f"{args.name}_{args.loss}", architecture=architecture, progress=False)
    dice = [row["val_dice"] for row in result.history]
    row = {"name": args.name, "loss": args.loss, "epochs": args.epochs, "patch": args.patch, "batch": args.batch,
           "lr": args.lr, "pretrain_steps": args.pretrain_steps, "arch": args.arch,
           "val_dice_fold3": [round(d, 4) for d in dice], "best": round(max(dice), 4), "last": round(dice[-1], 4),
           "minutes": round((time.perf_counter() - tic) / 60, 1)}
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
