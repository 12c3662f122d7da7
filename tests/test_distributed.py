"""Data-parallel training at world size 2 (gloo, CPU): the loss's learnable parameters stay in sync."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from napari_segloss.preprocess import DEFAULT_NORMALIZATION
from napari_segloss.train import Recipe, train
from napari_segloss.train.distributed import average_gradients
from napari_segloss.train.loop import load_splits
from napari_segloss.train.pretrain import Pretraining

#: 16 slices of 64x64, batch 2 per rank: 4 optimiser steps, each rank on its own half of every batch
RECIPE = Recipe(pretraining=Pretraining(), epochs=1, batch=2, patch=64, lr=1e-2, loss_lr=5e-2, n_train=16, n_val=2, n_test=2, n_volumes=1,
                volume_depth=4, render_size=64, threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, cache: str, out: str) -> None:
    """One DDP rank: train robust_t (learnable ``nu``) and write what it ended with to ``out/rank<r>.json``."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), NAPARI_SEGLOSS_CACHE_DIR=cache)
    try:
        result = train("robust_t", out=Path(out) / "checkpoint", recipe=RECIPE, device="cpu", progress=False)
        state = {"nu": result.card["loss_state"]["nu"], "history": result.history, "world": dist.get_world_size()}
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(state))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_learnable_loss_parameters_stay_identical_across_two_ranks(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_SEGLOSS_CACHE_DIR", str(cache))
    load_splits("synthetic", RECIPE, DEFAULT_NORMALIZATION)  # render the cache once, not in both ranks at once
    # forkserver: torch and smp are imported once, in the server, instead of once per rank
    multiprocessing.set_forkserver_preload(["segmentation_models_pytorch", "napari_segloss.train.loop"])
    mp.start_processes(_rank, args=(2, _free_port(), str(cache), str(tmp_path)), nprocs=2, join=True,
                       start_method="forkserver")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["history"][0]["train_loss"] != ranks[1]["history"][0]["train_loss"]  # each rank saw its own shard
    assert ranks[0]["nu"] != 1.0, "nu was not optimised"
    assert ranks[0]["nu"] == ranks[1]["nu"], "the ranks' copies of the loss drifted apart"
    card = json.loads((tmp_path / "checkpoint" / "robust_t.json").read_text())
    assert card["loss_state"]["nu"] == ranks[0]["nu"] and card["recipe"]["world_size"] == 2


def test_average_gradients_is_a_no_op_without_distribution():
    param = torch.nn.Parameter(torch.tensor(2.0))
    param.grad = torch.tensor(3.0)
    average_gradients([param], world=1)
    assert float(param.grad) == 3.0
