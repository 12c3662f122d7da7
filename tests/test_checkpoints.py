"""Checkpoint format, validation, safe loading, registry and cache (napari_segloss.checkpoints, models)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch

from napari_segloss import checkpoints
from napari_segloss.checkpoints import (
    CheckpointError,
    ModelCard,
    convert_pth,
    list_checkpoints,
    load,
    read_card,
    save_checkpoint,
)
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model, forward_with_features, resolve_device


@pytest.fixture(autouse=True)
def _fresh_cache():
    checkpoints.clear_cache()
    yield
    checkpoints.clear_cache()


def _copy(src_dir: Path, name: str, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".safetensors"):
        shutil.copy(src_dir / f"{name}{suffix}", dst_dir / f"{name}{suffix}")
    return dst_dir / f"{name}.json"


def _card_dict(**changes) -> dict:
    data = ModelCard(name="c", loss="dice", family="region").to_dict()
    data.update(changes)
    return data


# --- models -----------------------------------------------------------------------------------


def test_default_architecture_is_the_slim_fpn():
    model = build_model(DEFAULT_ARCHITECTURE)
    assert type(model).__name__ == "FPN"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.57e6, rel=0.01)


def test_forward_with_features_matches_forward():
    torch.manual_seed(0)
    model = build_model(DEFAULT_ARCHITECTURE).eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        logits, features = forward_with_features(model, x)
        assert torch.equal(logits, model(x))
    assert logits.shape == (2, 1, 64, 96)
    assert features.shape == (2, DEFAULT_ARCHITECTURE["decoder_segmentation_channels"], 16, 24)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arch": "NotANet"}, "arch"),
        ({"encoder_weights": "imagenet"}, "encoder_weights"),
        ({"classes": 2}, "classes"),
        ({"encoder_name": "no_such_encoder"}, "cannot build"),
        ({"unknown_argument": 3}, "cannot build"),
    ],
)
def test_build_model_rejects_bad_architectures(change, message):
    with pytest.raises(ValueError, match=message):
        build_model({**DEFAULT_ARCHITECTURE, **change})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_resolve_device_without_gpu():
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")


# --- model card ---------------------------------------------------------------------------------


def test_card_round_trip_through_json():
    card = ModelCard(
        name="fpn_focal",
        loss="focal",
        loss_hparams={"alpha": 0.25, "gamma": 2.0},
        patch_size=[256, 256],
        pixel_spacing_mm=[0.9, 0.9],
        history=[{"epoch": 0, "train_loss": 0.5, "val_dice": 0.61, "val_iou": 0.45, "seconds": 12.5}],
        test_metrics={"dice": 0.7, "hd95": float("nan")},
    )
    assert card.family == "pixel"  # from the loss catalogue
    assert card.patch_size == (256, 256)
    data = json.loads(json.dumps(card.to_dict(), allow_nan=False))
    assert data["test_metrics"]["hd95"] is None  # NaN stored as null, the file stays strict JSON
    again = ModelCard.from_dict(data)
    assert again.to_dict() == card.to_dict()
    assert again.history == card.history


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "all"}, "name"),
        ({"name": "../evil"}, "name"),
        ({"loss": ""}, "loss"),
        ({"family": "other"}, "family"),
        ({"architecture": {**DEFAULT_ARCHITECTURE, "arch": "NotANet"}}, "arch"),
        ({"architecture": {**DEFAULT_ARCHITECTURE, "in_channels": 3}}, "input_channels"),
        ({"architecture": "FPN"}, "architecture must be a JSON object"),
        ({"normalization": {"method": "zscore-ish"}}, "normalization"),
        ({"schema_version": 99}, "schema_version"),
        ({"created": "yesterday"}, "created"),
        ({"history": [{"train_loss": 1.0}]}, "history"),
        ({"history": [{"epoch": 1, "val_dice": "high"}]}, "val_dice"),
        ({"patch_size": [256.5, 256]}, "patch_size"),
        ({"weights_sha256": "abc"}, "weights_sha256"),
        ({"test_metrics": {"dice": object()}}, "JSON"),
    ],
)
def test_card_validation_errors(changes, message):
    with pytest.raises(CheckpointError, match=message):
        ModelCard.from_dict(_card_dict(**changes))


def test_card_missing_and_unknown_fields():
    data = _card_dict()
    del data["loss"]
    with pytest.raises(CheckpointError, match=r"missing field.*loss"):
        ModelCard.from_dict(data)
    with pytest.raises(CheckpointError, match=r"unknown field.*colour"):
        ModelCard.from_dict(_card_dict(colour="red"))
    with pytest.raises(CheckpointError, match="JSON object"):
        ModelCard.from_dict(["not", "a", "card"])


def test_read_card_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{ not json")
    with pytest.raises(CheckpointError, match="broken.json.*not valid JSON"):
        read_card(bad)


# --- save / load --------------------------------------------------------------------------------


def test_save_writes_pair_with_sha256_and_loads_equal_weights(tmp_path):
    torch.manual_seed(3)
    model = build_model(DEFAULT_ARCHITECTURE)
    card = ModelCard(name="m", loss="bce")
    weights = save_checkpoint(model, card, tmp_path)
    assert weights == tmp_path / "m.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temp files left
    assert card.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert read_card(tmp_path / "m.json").weights_sha256 == card.weights_sha256

    loaded = load(weights)
    assert not loaded.model.training
    assert loaded.info.name == "m" and loaded.info.family == "pixel"
    saved = model.state_dict()
    for key, value in loaded.model.state_dict().items():
        expected = saved[key].half().float() if saved[key].is_floating_point() else saved[key]
        assert torch.equal(value, expected), key

    full = save_checkpoint(model, ModelCard(name="m32", loss="bce"), tmp_path, half=False)
    assert full.stat().st_size > 1.8 * weights.stat().st_size
    for key, value in load(full).model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_save_rejects_model_that_does_not_match_card(tmp_path):
    other = build_model({**DEFAULT_ARCHITECTURE, "decoder_pyramid_channels": 32})
    with pytest.raises(CheckpointError, match="do not match"):
        save_checkpoint(other, ModelCard(name="x", loss="bce"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mismatched_card_architecture_is_a_clear_error(tiny_checkpoint_dir, tmp_path):
    card_path = _copy(tiny_checkpoint_dir, "tiny_bce", tmp_path)
    data = json.loads(card_path.read_text())
    data["architecture"]["decoder_pyramid_channels"] = 128
    card_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"tiny_bce.safetensors: weights do not match.*wrong shape"):
        load(card_path)


def test_tampered_weights_fail_the_sha256_check(tiny_checkpoint_dir, tmp_path):
    _copy(tiny_checkpoint_dir, "tiny_bce", tmp_path)
    weights = tmp_path / "tiny_bce.safetensors"
    payload = bytearray(weights.read_bytes())
    payload[-10] ^= 0xFF  # one weight changes, the file still parses
    weights.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load(weights)


def test_pth_loaded_with_weights_only_and_converted(tiny_checkpoint_dir, tmp_path):
    reference = load(tiny_checkpoint_dir / "tiny_focal.json")
    state = {k: v.clone() for k, v in reference.model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "legacy.pth")
    card = reference.card.to_dict() | {"name": "legacy", "weights_sha256": ""}
    (tmp_path / "legacy.json").write_text(json.dumps(card))

    with pytest.warns(UserWarning, match="weights_only=True"):
        legacy = load(tmp_path / "legacy.pth")
    for key, value in legacy.model.state_dict().items():
        assert torch.equal(value, state[key]), key

    converted = convert_pth(tmp_path / "legacy.pth")
    assert converted == tmp_path / "legacy.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load(tmp_path / "legacy.json")  # the card now points at safetensors with a sha256
    assert again.card.weights_sha256 == hashlib.sha256(converted.read_bytes()).hexdigest()
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, state[key]), key


class _Payload:
    """Unpickling this object writes a file: stands for arbitrary code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_pickle_that_would_run_code_is_refused(tiny_checkpoint_dir, tmp_path):
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"weight": _Payload(marker)}, evil)
    card = read_card(tiny_checkpoint_dir / "tiny_bce.json").to_dict() | {"name": "evil"}
    (tmp_path / "evil.json").write_text(json.dumps(card))

    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="refused"):
        load(evil)
    assert not marker.exists()

    # the same bytes disguised as safetensors, with a card whose sha256 matches them
    disguised = tmp_path / "evil2.safetensors"
    shutil.copy(evil, disguised)
    card2 = card | {"name": "evil2", "weights_sha256": hashlib.sha256(disguised.read_bytes()).hexdigest()}
    (tmp_path / "evil2.json").write_text(json.dumps(card2))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load(disguised)
    assert not marker.exists()

    torch.load(evil, weights_only=False)  # proof that the payload is live: plain unpickling runs it
    assert marker.read_text() == "code ran"


def test_unsupported_or_incomplete_paths(tiny_checkpoint_dir, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="unsupported file type"):
        load(tmp_path / "model.bin")
    shutil.copy(tiny_checkpoint_dir / "tiny_bce.safetensors", tmp_path / "lonely.safetensors")
    with pytest.raises(CheckpointError, match="no model card"):
        load(tmp_path / "lonely.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load(tmp_path / "absent.json")


# --- cache --------------------------------------------------------------------------------------


def test_cache_returns_same_object_fast(tiny_checkpoint_dir):
    start = time.perf_counter()
    first = load(tiny_checkpoint_dir / "tiny_dice.json")
    cold = time.perf_counter() - start
    start = time.perf_counter()
    second = load(tiny_checkpoint_dir / "tiny_dice.safetensors")
    warm = time.perf_counter() - start
    assert second is first
    assert warm < 0.05 and warm < cold / 5
    assert checkpoints.cache_info()["entries"] == 1


def test_cache_is_bounded_by_memory(tiny_checkpoint_dir, monkeypatch):
    one = load(tiny_checkpoint_dir / "tiny_dice.json")
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(2.5 * one.nbytes / 2**20))  # room for two models
    load(tiny_checkpoint_dir / "tiny_focal.json")
    load(tiny_checkpoint_dir / "tiny_bce.json")
    info = checkpoints.cache_info()
    assert info["entries"] == 2 and info["bytes"] <= info["limit_bytes"]
    assert load(tiny_checkpoint_dir / "tiny_dice.json") is not one  # least recently used was evicted


def test_resaving_invalidates_the_cache(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(build_model(DEFAULT_ARCHITECTURE), ModelCard(name="r", loss="bce"), tmp_path)
    before = load(tmp_path / "r.json")
    torch.manual_seed(1)
    save_checkpoint(build_model(DEFAULT_ARCHITECTURE), ModelCard(name="r", loss="bce"), tmp_path)
    after = load(tmp_path / "r.json")
    assert after is not before
    assert not torch.equal(after.model.segmentation_head[0].weight, before.model.segmentation_head[0].weight)


# --- registry -----------------------------------------------------------------------------------


def test_registry_sorted_by_family_then_name(tiny_registry, tmp_path):
    assert [i.name for i in list_checkpoints()] == ["tiny_bce", "tiny_focal", "tiny_dice"]
    # a loss outside the catalogue is placed by the card's family; extra_dirs are searched too
    extra = tmp_path / "extra"
    save_checkpoint(build_model(DEFAULT_ARCHITECTURE), ModelCard(name="a_custom", loss="my_loss", family="boundary"), extra)
    infos = list_checkpoints([extra])
    assert [(i.name, i.family) for i in infos] == [
        ("tiny_bce", "pixel"),
        ("tiny_focal", "pixel"),
        ("tiny_dice", "region"),
        ("a_custom", "boundary"),
    ]
    assert infos[0].path == tiny_registry / "tiny_bce.json" and infos[0].weights.suffix == ".safetensors"
    assert load("tiny_focal").card.loss == "focal"
    assert load("TINY_FOCAL").card.name == "tiny_focal"
    with pytest.raises(CheckpointError, match="unknown checkpoint 'nope'; available: tiny_bce, tiny_focal, tiny_dice"):
        load("nope")


def test_registry_reads_weights_dir_top_level_only_and_skips_bad_cards(tiny_checkpoint_dir, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    _copy(tiny_checkpoint_dir, "tiny_dice", weights)
    _copy(tiny_checkpoint_dir, "tiny_bce", weights / "aux")
    (weights / "broken.json").write_text('{"name": "broken"}')
    (weights / "broken.safetensors").write_bytes(b"")
    (weights / "notes.json").write_text("{}")  # no weights beside it: not a checkpoint, no warning
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(weights))
    monkeypatch.delenv("NAPARI_SEGLOSS_CHECKPOINTS", raising=False)
    with pytest.warns(UserWarning, match="broken.json.*missing field"):
        infos = list_checkpoints()
    assert [i.name for i in infos] == ["tiny_dice"]
    assert checkpoints.default_checkpoint().name == "tiny_dice"


def test_duplicate_names_keep_the_first_folder(tiny_checkpoint_dir, tmp_path, monkeypatch):
    _copy(tiny_checkpoint_dir, "tiny_bce", tmp_path / "w")
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", str(tiny_checkpoint_dir))
    with pytest.warns(UserWarning, match="already taken"):
        infos = list_checkpoints()
    assert [i.name for i in infos] == ["tiny_bce", "tiny_focal", "tiny_dice"]
    assert infos[0].path.parent == tmp_path / "w"
