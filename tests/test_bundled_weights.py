"""The bundled checkpoints in ``weights/``: complete, small, intact, all trained on real scans
with one recipe (``make weights``; Cheng's figshare data, the current
:class:`~napari_segloss.train.loop.Recipe`). They reproduce their fold-4 figures in
``tests/test_real_data.py`` (it needs ``../shared/data``). Skipped (cleanly) only while ``weights/``
holds no checkpoint yet.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from napari_segloss.paths import weights_dir

CARDS = sorted(p for p in weights_dir().glob("*.json") if p.with_suffix(".safetensors").exists())
pytestmark = pytest.mark.skipif(not CARDS, reason="weights/ has no checkpoints yet (run `make weights`)")


def _card(path):
    return json.loads(path.read_text())


def _is_real(path) -> bool:
    return _card(path).get("data", {}).get("source") == "labelled folder"


REAL = [p for p in CARDS if _is_real(p)]


def test_one_checkpoint_per_loss_within_the_size_budget():
    from napari_segloss.losses import available

    assert sorted(p.stem for p in CARDS) == sorted(available())
    sizes = [p.with_suffix(".safetensors").stat().st_size for p in CARDS]
    assert max(sizes) <= 3 * 2**20
    total = sum(p.stat().st_size for p in weights_dir().rglob("*") if p.is_file())
    assert total < 100 * 2**20


def test_every_card_is_trained_on_real_scans_with_the_same_recipe_and_data():
    cards = CARDS
    assert REAL == CARDS, [p.stem for p in CARDS if p not in REAL]  # the phantom is the demo's, not theirs
    ignore = {"threads", "extras", "world_size", "device", "precision"}

    def settings(path):
        recipe = {k: v for k, v in _card(path)["recipe"].items() if k not in ignore}
        if isinstance(recipe.get("pretraining"), dict):  # what it produced is checked below
            recipe["pretraining"] = {k: v for k, v in recipe["pretraining"].items() if k != "result"}
        return recipe

    for p in cards:
        assert settings(p) == settings(cards[0]), p.stem
    assert len({json.dumps(_card(p)["data"], sort_keys=True) for p in cards}) == 1
    # one shared pretraining: recomputed on another machine it agrees to float noise, not bit for bit
    # (3 of the real cards started from a recomputation: final MSE 0.014003 against 0.013967)
    finals = [(_card(p)["recipe"].get("pretraining") or {}).get("result", {}).get("mse_per_100_steps", [None])[-1]
              for p in cards]
    if all(f is not None for f in finals):
        assert max(finals) <= 1.01 * min(finals), finals


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
def test_checkpoint_loads_and_matches_its_sha256(card_path):
    """Every card loads with its weights; their Dice on fold 4 is re-run in tests/test_real_data.py
    (it needs the real data)."""
    from napari_segloss.checkpoints import load

    card = _card(card_path)
    weights = card_path.with_suffix(".safetensors")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
    loaded = load(card_path)
    assert loaded.card.name == card["name"] and loaded.card.loss == card["loss"]
    assert card["test_metrics"]["reference_slices"]


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
    with."""
    import dataclasses

    from napari_segloss.train.loop import Recipe

    make_weights = _script("make_weights")
    recipe = dataclasses.replace(Recipe(), threads=1)
    stale = [p.stem for p in REAL if not make_weights.same_recipe(p, recipe)]
    assert stale == []
    card = _card(weights_dir() / "inverseform.json")
    card["loss_state"]["net_weights_sha256"] = "0" * 64  # trained with another net
    changed = tmp_path / "inverseform.json"
    changed.write_text(json.dumps(card))
    assert not make_weights.same_recipe(changed, recipe)
    assert not make_weights.same_recipe(weights_dir() / "dice.json", dataclasses.replace(recipe, epochs=3))
    assert not make_weights.same_recipe(weights_dir() / "dice.json", dataclasses.replace(recipe, synthetic_negatives=50))
    card = _card(weights_dir() / "dice.json")
    card["architecture"]["decoder_pyramid_channels"] = 128  # another network
    changed.write_text(json.dumps(card))
    assert not make_weights.same_recipe(changed, recipe)
