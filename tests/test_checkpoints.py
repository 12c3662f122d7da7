"""Checkpoint format, validation, safe loading, registry and cache (napari_segloss.checkpoints, models)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from napari_segloss import checkpoints, models
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
        ({"encoder_name": "no_such_encoder"}, "encoder_name must be one of"),
        ({"unknown_argument": 3}, r"disallowed key\(s\) \['unknown_argument'\]"),
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


def test_network_stack_is_bounded_to_safe_loaders(tmp_path):
    """pyproject bounds torch, torchvision, timm and smp on both sides, the installed versions lie
    inside, and in that range both torch's default loader and timm's refuse a code-running pickle."""
    import timm.models
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    requirements = {Requirement(r).name: Requirement(r).specifier for r in pyproject["project"]["dependencies"]}
    for name in ("torch", "torchvision", "timm", "segmentation-models-pytorch"):
        operators = {spec.operator for spec in requirements[name]}
        assert {">=", "<"} <= operators, f"{name} {requirements[name]} is not bounded on both sides"
        assert requirements[name].contains(version(name), prereleases=True), f"installed {name} {version(name)}"
    assert not requirements["torch"].contains("2.5.1")  # torch.load defaults to weights_only=True from 2.6

    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"weight": _Payload(marker)}}, evil)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil)
    with pytest.raises(RuntimeError, match="weights_only=True blocked"):
        timm.models.load_checkpoint(torch.nn.Linear(1, 1), str(evil))
    assert not marker.exists()

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
    with pytest.raises(CheckpointError, match="unknown checkpoint 'TINY_FOCAL' \\(did you mean 'tiny_focal'\\?"):
        load("TINY_FOCAL")  # names are exact
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
    with pytest.warns(UserWarning, match="broken.json"):
        assert checkpoints.default_checkpoint().name == "tiny_dice"


def test_duplicate_names_keep_the_first_folder(tiny_checkpoint_dir, tmp_path, monkeypatch):
    _copy(tiny_checkpoint_dir, "tiny_bce", tmp_path / "w")
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", str(tiny_checkpoint_dir))
    with pytest.warns(UserWarning, match="already taken"):
        infos = list_checkpoints()
    assert [i.name for i in infos] == ["tiny_bce", "tiny_focal", "tiny_dice"]
    assert infos[0].path.parent == tmp_path / "w"


def test_a_user_folder_cannot_shadow_a_bundled_name(tiny_checkpoint_dir, tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    _copy(tiny_checkpoint_dir, "tiny_dice", bundled)
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(bundled))
    monkeypatch.delenv("NAPARI_SEGLOSS_CHECKPOINTS", raising=False)
    user = checkpoints.registry.user_checkpoint_dir()
    # the user's cards claim the bundled name, once in upper case and once exactly
    for stem, name in (("shouting", "TINY_DICE"), ("copy", "tiny_dice")):
        card = json.loads((tiny_checkpoint_dir / "tiny_dice.json").read_text()) | {"name": name}
        user.mkdir(parents=True, exist_ok=True)
        (user / f"{stem}.json").write_text(json.dumps(card))
        shutil.copy(tiny_checkpoint_dir / "tiny_dice.safetensors", user / f"{stem}.safetensors")
    scan = checkpoints.scan_checkpoints()
    assert [(i.name, i.path) for i in scan.checkpoints] == [("tiny_dice", bundled / "tiny_dice.json")]
    assert len(scan.problems) == 2
    for stem, problem in zip(("copy", "shouting"), scan.problems):  # sorted by file name
        assert str(user / f"{stem}.json") in problem and str(bundled / "tiny_dice.json") in problem
        assert "already taken" in problem
    with pytest.warns(UserWarning, match="already taken"):
        assert load("tiny_dice").info.path == bundled / "tiny_dice.json"
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="did you mean 'tiny_dice'"):
        load("TINY_DICE")


# --- cards are data: the architecture allow-list ------------------------------------------------

#: the options each allowed architecture may set, at non-default values
_ALLOWED_OPTIONS = {
    "FPN": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 64, "decoder_dropout": 0.1},
    "Unet": {"decoder_channels": [64, 32, 16, 16, 8]},
}


def test_allow_list_options_are_all_exercised():
    assert {name: set(options) for name, options in _ALLOWED_OPTIONS.items()} == {
        name: set(keys) for name, keys in models.ARCHITECTURES.items()
    }


@pytest.mark.parametrize("encoder", models.ENCODERS)
@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_every_allowed_architecture_builds_offline_and_runs(arch, encoder):
    architecture = {"arch": arch, "encoder_name": encoder, "encoder_weights": None, "in_channels": 1, "classes": 1,
                    **_ALLOWED_OPTIONS[arch]}
    assert models.validate_architecture(architecture) == architecture
    model = build_model(architecture).eval()
    with torch.no_grad():
        logits, _ = forward_with_features(model, torch.randn(1, 1, 64, 96))
    assert logits.shape == (1, 1, 64, 96)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"checkpoint_path": "/etc/passwd"}, r"disallowed key\(s\) \['checkpoint_path'\]"),
        ({"encoder_name": "tu-hf-hub:timm/mobilenetv3_small_100.lamb_in1k"}, "encoder_name must be one of"),
        ({"encoder_name": "tu-mobilenetv3_small_100"}, "encoder_name must be one of"),
        ({"aux_params": {"classes": 2}}, "aux_params"),
        ({"pretrained_cfg_overlay": {"file": "x"}}, "pretrained_cfg_overlay"),
        ({"arch": "fpn"}, "'arch' must be one of"),  # exact class names
        ({"arch": "Unet"}, r"disallowed key.*decoder_pyramid_channels"),  # options are per architecture
        ({"encoder_weights": "imagenet"}, "encoder_weights must be null"),
        ({"classes": True}, "classes must be 1"),
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": 5}, "in_channels"),
        ({"decoder_segmentation_channels": 48}, "multiple of 32"),
        ({"decoder_pyramid_channels": 10**6}, "decoder_pyramid_channels"),
        ({"decoder_dropout": 1.0}, "decoder_dropout"),
    ],
)
def test_architectures_outside_the_allow_list_are_refused(change, message):
    architecture = {**DEFAULT_ARCHITECTURE, **change}
    with pytest.raises(ValueError, match=message):
        models.validate_architecture(architecture)
    with pytest.raises(CheckpointError, match=message):
        ModelCard.from_dict(_card_dict(architecture=architecture))


def test_unet_decoder_channels_are_checked():
    unet = {**DEFAULT_ARCHITECTURE, "arch": "Unet"}
    for key in ("decoder_pyramid_channels", "decoder_segmentation_channels"):
        del unet[key]
    for bad in ([64, 32, 16], [64, 32, 16, 16, 0], "64"):
        with pytest.raises(ValueError, match="decoder_channels"):
            models.validate_architecture({**unet, "decoder_channels": bad})


_NETWORK_MODULES = ("segmentation_models_pytorch", "timm", "torchvision", "huggingface_hub", "requests", "urllib3",
                    "httpx")


def test_card_validation_imports_no_network_library(tiny_checkpoint_dir, tmp_path):
    hub = _card_dict(architecture={**DEFAULT_ARCHITECTURE, "encoder_name": "tu-hf-hub:timm/x"})
    code = f"""
import json, sys
from napari_segloss.checkpoints import CheckpointError, ModelCard, read_card, scan_checkpoints
read_card({str(tiny_checkpoint_dir / "tiny_dice.json")!r})
assert len(scan_checkpoints([{str(tiny_checkpoint_dir)!r}]).checkpoints) >= 3
try:
    ModelCard.from_dict(json.loads({json.dumps(hub)!r}))
except CheckpointError:
    pass
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({list(_NETWORK_MODULES)!r}))))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NAPARI_SEGLOSS_WEIGHTS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _hub_card(tiny_checkpoint_dir: Path, folder: Path) -> Path:
    """A card whose encoder would make timm fetch its configuration from the Hugging Face Hub."""
    folder.mkdir(parents=True, exist_ok=True)
    card = json.loads((tiny_checkpoint_dir / "tiny_bce.json").read_text())
    card["name"] = "hub"
    card["architecture"]["encoder_name"] = "tu-hf-hub:timm/mobilenetv3_small_100.lamb_in1k"
    (folder / "hub.json").write_text(json.dumps(card))
    shutil.copy(tiny_checkpoint_dir / "tiny_bce.safetensors", folder / "hub.safetensors")
    return folder / "hub.json"


def test_loading_a_hub_card_with_the_network_blocked(tiny_checkpoint_dir, tmp_path, monkeypatch):
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(tmp_path / "no_bundled_weights"))
    monkeypatch.delenv("NAPARI_SEGLOSS_CHECKPOINTS", raising=False)
    card = _hub_card(tiny_checkpoint_dir, tmp_path / "cards")
    with pytest.raises(CheckpointError, match="hub.json.*encoder_name must be one of"):
        load(card)
    with pytest.warns(UserWarning, match="hub.json.*encoder_name"):
        assert list_checkpoints([card.parent]) == []
    assert attempts == []


def test_loading_a_hub_card_sends_nothing_to_a_loopback_hub(tiny_checkpoint_dir, tmp_path):
    """The child process may use the network, its Hub and proxies point at a local server: the
    server must receive nothing (before the allow-list, timm asked it for the model's config)."""
    received: list[bytes] = []

    class Hub(socketserver.BaseRequestHandler):
        def handle(self):
            received.append(self.request.recv(4096) or b"(connected)")
            self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    card = _hub_card(tiny_checkpoint_dir, tmp_path / "cards")
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hub) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HF_", "HUGGINGFACE", "NO_PROXY"))}
        env |= {"HF_ENDPOINT": url, "HTTP_PROXY": url, "HTTPS_PROXY": url, "ALL_PROXY": url, "OMP_NUM_THREADS": "1",
                "HF_HUB_DOWNLOAD_TIMEOUT": "5", "HF_HUB_ETAG_TIMEOUT": "5"}
        code = f"""
from napari_segloss.checkpoints import CheckpointError, load
try:
    load({str(card)!r})
except CheckpointError as exc:
    print("refused:", exc)
"""
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        server.shutdown()
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "encoder_name" in out.stdout
    assert received == []


# --- bounded, fault-tolerant card reading -------------------------------------------------------


def _bad_cards(folder: Path, tiny_checkpoint_dir: Path) -> dict[str, str]:
    """Hostile cards in ``folder`` (each with weights beside it): stem -> expected reason."""
    folder.mkdir(parents=True, exist_ok=True)
    good = json.loads((tiny_checkpoint_dir / "tiny_dice.json").read_text())
    os.mkfifo(folder / "fifo.json")
    (folder / "zero.json").symlink_to("/dev/zero")
    with open(folder / "huge.json", "wb") as handle:  # sparse: 100 MB on paper, nothing on disk
        handle.truncate(100 * 2**20)
    (folder / "deep.json").write_text('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}")
    nested: object = 1
    for _ in range(checkpoints.MAX_CARD_DEPTH + 1):
        nested = [nested]
    (folder / "nested.json").write_text(json.dumps(good | {"name": "nested", "data": {"x": nested}}))
    (folder / "digits.json").write_text(json.dumps(good | {"name": "digits"})[:-1] + ', "notes": ' + "9" * 5000 + "}")
    (folder / "binary.json").write_bytes(b"\xff\xfe" + b"\0" * 100)
    (folder / "wordy.json").write_text(json.dumps(good | {"name": "wordy", "family": "x" * 500_000}))
    for stem in ("fifo", "zero", "huge", "deep", "nested", "digits", "binary", "wordy"):
        shutil.copy(tiny_checkpoint_dir / "tiny_dice.safetensors", folder / f"{stem}.safetensors")
    return {"fifo": "not a regular file", "zero": "not a regular file", "huge": "104857600 bytes",
            "deep": "nests deeper", "nested": "nests deeper", "digits": "not valid JSON", "binary": "not valid JSON",
            "wordy": "family must be one of"}


def _in_thread(fn, timeout: float = 60.0):
    """``fn()`` in a daemon thread; fails the test if it does not return within ``timeout`` s."""
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "reading the cards hung"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_hostile_cards_are_refused_one_line_each(tiny_checkpoint_dir, tmp_path):
    reasons = _bad_cards(tmp_path, tiny_checkpoint_dir)
    for stem, reason in reasons.items():
        with pytest.raises(CheckpointError, match=reason) as info:
            _in_thread(lambda stem=stem: read_card(tmp_path / f"{stem}.json"))
        message = str(info.value)
        assert message.startswith(str(tmp_path / f"{stem}.json")) and "\n" not in message
        assert len(message) < len(str(tmp_path)) + 420


def test_one_bad_card_is_reported_and_skipped_the_others_listed(tiny_checkpoint_dir, tmp_path, monkeypatch):
    folder = tmp_path / "mixed"
    reasons = _bad_cards(folder, tiny_checkpoint_dir)
    _copy(tiny_checkpoint_dir, "tiny_focal", folder)
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(folder))
    monkeypatch.delenv("NAPARI_SEGLOSS_CHECKPOINTS", raising=False)
    scan = _in_thread(checkpoints.scan_checkpoints)
    assert [i.name for i in scan.checkpoints] == ["tiny_focal"]
    assert len(scan.problems) == len(reasons)
    for stem, reason in reasons.items():
        assert sum(f"{stem}.json" in p and reason in p for p in scan.problems) == 1, stem
    for _ in range(2):  # the cache does not hide the problems: every call reports them
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert [i.name for i in list_checkpoints()] == ["tiny_focal"]
        assert len(caught) == len(reasons)


# --- the registry cache -------------------------------------------------------------------------


#: the cache's window for fresh changes in these tests (s); Linux time stamps tick in <= 10 ms
_RACY_S = 0.2


class _CountingReads:
    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        original = checkpoints.registry.read_card
        monkeypatch.setattr(checkpoints.registry, "read_card", lambda p: self.paths.append(Path(p).name) or original(p))


def test_registry_is_cached_and_rereads_only_what_changed(tiny_checkpoint_dir, tmp_path, monkeypatch):
    folder = tmp_path / "w"
    for name in ("tiny_dice", "tiny_focal", "tiny_bce"):
        _copy(tiny_checkpoint_dir, name, folder)
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(folder))
    monkeypatch.delenv("NAPARI_SEGLOSS_CHECKPOINTS", raising=False)
    monkeypatch.setattr(checkpoints.registry, "_RACY_NS", int(_RACY_S * 1e9))
    time.sleep(1.5 * _RACY_S)
    reads = _CountingReads(monkeypatch)
    first = checkpoints.scan_checkpoints()
    assert sorted(reads.paths) == ["tiny_bce.json", "tiny_dice.json", "tiny_focal.json"]
    assert checkpoints.scan_checkpoints() is first and len(reads.paths) == 3  # nothing read again

    # a card rewritten in place with the same size and its old mtime: the inode's ctime tells
    card = folder / "tiny_focal.json"
    stat_before = card.stat()
    card.write_text(card.read_text().replace('"notes": ""', '"notes":"x"'))  # same length
    assert card.stat().st_size == stat_before.st_size
    os.utime(card, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    reads.paths.clear()
    second = checkpoints.scan_checkpoints()
    assert reads.paths == ["tiny_focal.json"]  # the other two cards came from the cache
    assert next(i for i in second.checkpoints if i.name == "tiny_focal").card.notes == "x"

    # a checkpoint added, then one removed: the folder's listing changed
    shutil.copy(tiny_checkpoint_dir / "tiny_dice.safetensors", folder / "other.safetensors")
    data = json.loads((tiny_checkpoint_dir / "tiny_dice.json").read_text()) | {"name": "other"}
    (folder / "other.json").write_text(json.dumps(data))
    assert "other" in [i.name for i in checkpoints.scan_checkpoints().checkpoints]
    (folder / "tiny_bce.json").unlink()
    assert [i.name for i in checkpoints.scan_checkpoints().checkpoints] == ["tiny_focal", "other", "tiny_dice"]

    # refresh() forgets everything
    time.sleep(1.5 * _RACY_S)
    checkpoints.scan_checkpoints()
    reads.paths.clear()
    checkpoints.scan_checkpoints()
    assert reads.paths == []
    checkpoints.refresh()
    checkpoints.scan_checkpoints()
    assert sorted(reads.paths) == ["other.json", "tiny_dice.json", "tiny_focal.json"]


def test_fresh_changes_are_not_trusted_to_the_cache(tiny_checkpoint_dir, tmp_path, monkeypatch):
    """Files changed within the time-stamp resolution of a scan (2 s by default: FAT's) are read
    again on every call."""
    folder = tmp_path / "w"
    _copy(tiny_checkpoint_dir, "tiny_dice", folder)
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(folder))
    monkeypatch.delenv("NAPARI_SEGLOSS_CHECKPOINTS", raising=False)
    reads = _CountingReads(monkeypatch)
    checkpoints.scan_checkpoints()
    checkpoints.scan_checkpoints()
    assert reads.paths == ["tiny_dice.json", "tiny_dice.json"]
