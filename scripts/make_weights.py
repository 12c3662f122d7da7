"""Train every loss of the catalogue with the one shared recipe into ``weights/``, on real scans.

Usage: ``python scripts/make_weights.py [--data DIR] [--out weights] [--only NAME ...] [--part K/N]
[--pretrain-only] [--force] [--threads N]``. The data is Cheng's figshare brain-tumour dataset in
the labelled-folder layout (default ``shared/data/figshare`` beside the checkout, or
``$NAPARI_SEGLOSS_SHARED_DATA/figshare``; ``napari-segloss data figshare`` converts the original
release): folds 1-3 train and validate, fold 4 is the test set. ``make weights`` first computes the
loss-neutral pretraining once (``--pretrain-only``; cached under
``~/.cache/napari-segloss/pretrain``), then trains the two halves of the catalogue (``--part 1/2``,
``--part 2/2``) in two one-thread processes. A loss whose checkpoint (``<name>.json`` and
``<name>.safetensors``) already exists with the same recipe is skipped (a card with another
recipe, or trained with another frozen auxiliary file such as the InverseForm net, is
retrained, so the set never mixes recipes), and an interrupted loss resumes from its
``<name>.resume.pt`` state, so re-running the script continues where it stopped. Several
processes may split the losses between them with ``--only``. At the end it
prints the wall-clock and CPU time of this run (all threads) and a one-line summary per loss.
A loss that fails (diverges to NaN, raises) is reported and the script goes on with the next.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path

# OpenMP threads that spin while waiting cost several times their work when other processes
# share the two cores; passive waiting must be chosen before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from napari_segloss.losses import available, build  # noqa: E402
from napari_segloss.models import DEFAULT_ARCHITECTURE  # noqa: E402
from napari_segloss.paths import shared_data_dir, weights_dir  # noqa: E402
from napari_segloss.train.loop import Recipe, train  # noqa: E402


#: recipe entries that do not change the trained weights' meaning (speed, bookkeeping)
_NOT_RECIPE = {"threads", "world_size", "extras", "precision", "device"}


def same_recipe(card_path: Path, recipe: Recipe) -> bool:
    """Whether the card at ``card_path`` was trained with ``recipe`` (ignoring :data:`_NOT_RECIPE`),
    the network :func:`train` builds (``DEFAULT_ARCHITECTURE``) and the same frozen auxiliary
    files: every ``*_sha256`` entry of its ``loss_state`` (e.g. the InverseForm net's) must equal
    what the loss reports now."""
    card = json.loads(card_path.read_text())
    if card.get("architecture") != dict(DEFAULT_ARCHITECTURE):
        return False
    # through Recipe: a setting added since the card was written reads as its default, and what the
    # shared pretraining produced ("result") is not a setting
    recorded = Recipe.from_dict(card.get("recipe", {})).to_dict()
    current = recipe.to_dict()
    if not all(recorded.get(k) == v for k, v in current.items() if k not in _NOT_RECIPE):
        return False
    pinned = {k: v for k, v in card.get("loss_state", {}).items() if k.endswith("_sha256")}
    if not pinned:
        return True
    now = build(card["loss"], **card.get("loss_hparams", {})).state()
    return all(now.get(k) == v for k, v in pinned.items())


def pretrain_once(data: Path, recipe: Recipe) -> dict:
    """The shared pretraining, exactly as :func:`~napari_segloss.train.loop.train` starts it (cached)."""
    import torch

    from napari_segloss.models import build_model
    from napari_segloss.preprocess import DEFAULT_NORMALIZATION
    from napari_segloss.threads import torch_threads
    from napari_segloss.train.loop import load_splits
    from napari_segloss.train.pretrain import pretrained_start

    with torch_threads(recipe.threads or torch.get_num_threads()):
        splits = load_splits(data, recipe, dict(DEFAULT_NORMALIZATION))
        torch.manual_seed(recipe.seed)
        model = build_model(DEFAULT_ARCHITECTURE)
        return pretrained_start(model, DEFAULT_ARCHITECTURE, splits.train, recipe.pretraining, recipe.augment,
                                seed=recipe.seed, device=torch.device("cpu"), progress=sys.stderr.isatty())


def main(argv: list[str] | None = None) -> int:
    """Train the missing checkpoints; returns 1 if any loss failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "figshare",
                        help="labelled folder of real scans (default: shared/data/figshare)")
    parser.add_argument("--out", type=Path, default=weights_dir(), help="checkpoint folder (default: weights/)")
    parser.add_argument("--only", nargs="*", help="train only these losses")
    parser.add_argument("--part", default="1/1", help="K/N: train every N-th loss of the list, starting at the K-th")
    parser.add_argument("--pretrain-only", action="store_true",
                        help="compute (or check) the shared loss-neutral pretraining and stop")
    parser.add_argument("--force", action="store_true", help="retrain losses that already have a checkpoint")
    parser.add_argument("--device", default="cpu", help="training device (default cpu, as the bundled set)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine two threads are "
                        "about 1.5x slower; use 2 on an idle one)")
    args = parser.parse_args(argv)

    if not (args.data / "labels.csv").is_file():
        print(f"make_weights: no labelled data at {args.data} (labels.csv missing); see the README's "
              "'Real data' section", file=sys.stderr)
        return 2
    part, parts = (int(v) for v in args.part.split("/"))
    names = (args.only or available())[part - 1::parts]
    recipe = dataclasses.replace(Recipe(), threads=args.threads)
    if args.pretrain_only:
        info = pretrain_once(args.data, recipe)
        print(f"pretraining {info.get('key')}: {info.get('seconds', 0):.0f} s (0 = cached)", flush=True)
        return 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    failed: list[str] = []
    for i, name in enumerate(names, 1):
        card = args.out / f"{name}.json"
        if card.exists() and (args.out / f"{name}.safetensors").exists() and not args.force:
            if same_recipe(card, recipe):
                print(f"[{i}/{len(names)}] {name}: checkpoint exists, skipped", flush=True)
                continue
            print(f"[{i}/{len(names)}] {name}: checkpoint has another recipe or auxiliary net, retraining", flush=True)
        tic, ctic = time.perf_counter(), time.process_time()
        try:
            result = train(name, out=args.out, data=args.data, recipe=recipe, device=args.device,
                           resume=not args.force, progress=sys.stderr.isatty())
        except Exception:  # a failing loss is a finding: report it, go on with the others
            failed.append(name)
            print(f"[{i}/{len(names)}] {name}: FAILED\n{traceback.format_exc()}", flush=True)
            continue
        m = result.card.get("test_metrics", {})
        print(f"[{i}/{len(names)}] {name}: test Dice {m.get('dice')!s:.6} "
              f"(val {result.history[-1]['val_dice']:.3f}), empty-slice FP {m.get('empty_slice_false_positives')}, "
              f"{time.perf_counter() - tic:.0f} s wall, {time.process_time() - ctic:.0f} s CPU", flush=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"total: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU (all threads) for this run; "
          f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
