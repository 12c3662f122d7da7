"""The bundled checkpoints in ``weights/``: complete, small, intact, and reproducing their cards.

The set is being retrained on real scans (``make weights``; resumable across sessions): until
every loss is done it holds two groups, each trained with one recipe on one dataset -- the real
cards (Cheng's figshare data, the current :class:`~napari_segloss.train.loop.Recipe`) and the
previous synthetic ones. Real cards reproduce their fold-4 figures in ``tests/test_real_data.py``
(it needs ``../shared/data``). Skipped (cleanly) only while ``weights/`` holds no checkpoint yet.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

import numpy as np
import pytest

from napari_segloss.paths import weights_dir

CARDS = sorted(p for p in weights_dir().glob("*.json") if p.with_suffix(".safetensors").exists())
pytestmark = pytest.mark.skipif(not CARDS, reason="weights/ has no checkpoints yet (run `make weights`)")

#: per-slice Dice tolerance when re-running a checkpoint on its card's reference slices
TOLERANCE = 0.02


def _card(path):
    return json.loads(path.read_text())


def _is_real(path) -> bool:
    return _card(path).get("data", {}).get("source") == "labelled folder"


REAL = [p for p in CARDS if _is_real(p)]
SYNTHETIC = [p for p in CARDS if not _is_real(p)]


@functools.lru_cache(maxsize=64)
def _slice(seed: int, size: int, factor: int):
    from napari_segloss.data.synthetic import generate_slice
    from napari_segloss.train.data import downsample, downsample_mask

    sample = generate_slice(seed, size)
    return np.round(downsample(sample.image, factor)).astype(np.uint16), downsample_mask(sample.mask, factor)


def test_one_checkpoint_per_loss_within_the_size_budget():
    from napari_segloss.losses import available

    assert sorted(p.stem for p in CARDS) == sorted(available())
    sizes = [p.with_suffix(".safetensors").stat().st_size for p in CARDS]
    assert max(sizes) <= 3 * 2**20
    total = sum(p.stat().st_size for p in weights_dir().rglob("*") if p.is_file())
    assert total < 100 * 2**20


@pytest.mark.parametrize("group", ["real", "synthetic"])
def test_every_card_of_one_dataset_uses_the_same_recipe_and_data(group):
    cards = REAL if group == "real" else SYNTHETIC
    if not cards:
        pytest.skip(f"no {group} cards in weights/")
    ignore = {"threads", "extras", "world_size", "device", "precision"}
    recipe = {k: v for k, v in _card(cards[0])["recipe"].items() if k not in ignore}
    for p in cards:
        assert {k: v for k, v in _card(p)["recipe"].items() if k not in ignore} == recipe, p.stem
    assert len({json.dumps(_card(p)["data"], sort_keys=True) for p in cards}) == 1


def test_real_cards_name_the_dataset_its_licence_and_folds_without_machine_paths():
    if not REAL:
        pytest.skip("no real-data cards in weights/ yet")
    for p in REAL:
        card = _card(p)
        data = card["data"]
        assert data["dataset"]["licence"] == "CC BY 4.0" and len(data["dataset"]["citation"]) == 2
        assert data["folds"]["train"] == [1, 2, 3] and data["folds"]["test"] == [4]
        assert data["counts"]["test"] == 613 and data["counts"]["test_negatives"] > 0
        assert card["image_size"] == [256, 256]
        strings = re.findall(r'"([^"]*)"', json.dumps(data))
        assert not [t for t in strings if t.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", t)], p.stem
        assert set(card["test_metrics"]["breakdown"]["kind"]) == {"meningioma", "glioma", "pituitary"}


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_checkpoint_loads_matches_sha256_and_reproduces_its_test_dice(card_path):
    """Synthetic cards re-run here; real ones in tests/test_real_data.py (it needs the real data)."""
    from napari_segloss.checkpoints import load
    from napari_segloss.inference import predict
    from napari_segloss.metrics import compute

    card = _card(card_path)
    weights = card_path.with_suffix(".safetensors")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
    loaded = load(card_path)
    assert loaded.card.name == card["name"] and loaded.card.loss == card["loss"]
    refs = card["test_metrics"]["reference_slices"]
    assert refs
    if _is_real(card_path):
        return
    recipe = card["recipe"]
    for ref in refs:
        image, truth = _slice(int(ref["name"].removeprefix("seed")), recipe["render_size"], recipe["downsample"])
        pred = predict(image, loaded, device="cpu").mask()
        assert compute(pred, truth)["dice"] == pytest.approx(ref["dice"], abs=TOLERANCE), ref["name"]


def _script(name: str):
    """A module of ``scripts/`` (not a package), loaded by path."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_weights_sees_the_bundled_set_as_up_to_date(tmp_path):
    """The committed default Recipe and InverseForm net are what the real-data cards were trained
    with (the synthetic ones are the previous set, waiting to be retrained)."""
    import dataclasses

    from napari_segloss.train.loop import Recipe

    make_weights = _script("make_weights")
    recipe = dataclasses.replace(Recipe(), threads=1)
    stale = [p.stem for p in REAL if not make_weights.same_recipe(p, recipe)]
    assert stale == []
    assert not any(make_weights.same_recipe(p, recipe) for p in SYNTHETIC)  # they will be retrained
    card = _card(weights_dir() / "inverseform.json")
    card["loss_state"]["net_weights_sha256"] = "0" * 64  # trained with another net
    changed = tmp_path / "inverseform.json"
    changed.write_text(json.dumps(card))
    assert not make_weights.same_recipe(changed, recipe)
    assert not make_weights.same_recipe(weights_dir() / "dice.json", dataclasses.replace(recipe, epochs=3))
    assert not make_weights.same_recipe(weights_dir() / "dice.json", dataclasses.replace(recipe, synthetic_negatives=50))
