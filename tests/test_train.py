"""Training pipeline: data, augmentation, extras, loop (loss goes down, resume, DDP), evaluation, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import numpy as np
import pytest
import torch
from scipy import stats

from napari_segloss.checkpoints import ModelCard, load
from napari_segloss.losses import build, info
from napari_segloss.losses import SegLoss, signed_distance
from napari_segloss.metrics import compute
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model, forward_with_features
from napari_segloss.train import Augment, Extras, Recipe, folder_splits, synthetic_splits, train
from napari_segloss.train.data import downsample, downsample_mask, epoch_batches
from napari_segloss.preprocess import normalize
from napari_segloss.train.evaluate import (aggregate, bootstrap_ci, overlap, paired_difference, probabilities,
                                           size_class)
from napari_segloss.train.loop import _WithFeatures
from napari_segloss.train.pretrain import Pretraining

#: a recipe small enough for tests: 64x64 synthetic slices, 8 steps per epoch
TINY = Recipe(pretraining=Pretraining(), epochs=2, batch=4, patch=64, lr=1e-2, n_train=32, n_val=4, n_test=6, n_volumes=1,
              volume_depth=6, render_size=64, threads=1)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    old = os.environ.get("NAPARI_SEGLOSS_CACHE_DIR")
    os.environ["NAPARI_SEGLOSS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("NAPARI_SEGLOSS_CACHE_DIR")
    else:
        os.environ["NAPARI_SEGLOSS_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two uninterrupted epochs of BCE on the tiny synthetic splits."""
    out = tmp_path_factory.mktemp("straight")
    return train("bce", out=out, recipe=TINY, device="cpu", progress=False), out


def _weights(path):
    return load(path).model.state_dict()


# --- data -------------------------------------------------------------------------------------

def test_derived_training_files_go_to_the_one_cache_folder(tmp_path, monkeypatch):
    """Rendered splits and pretraining weights land under paths.user_cache_dir, never in the
    working directory (a user running ``napari-segloss train`` from their home folder)."""
    from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model
    from napari_segloss.paths import CACHE_DIR_ENV
    from napari_segloss.train.pretrain import Pretraining, pretrained_start

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "derived"))
    monkeypatch.chdir(tmp_path)
    splits = synthetic_splits(4, 1, 1, size=64, n_volumes=0)
    pretrained_start(build_model(DEFAULT_ARCHITECTURE), DEFAULT_ARCHITECTURE, splits.train,
                     Pretraining(steps=1, batch=2, patch=64), Augment(), seed=0, device=torch.device("cpu"),
                     progress=False)
    assert [p.name for p in (tmp_path / "derived" / "synthetic").iterdir()] == [splits.description["cache"]]
    assert len(list((tmp_path / "derived" / "pretrain").glob("pretrain_*.safetensors"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derived"]


def test_synthetic_splits_are_cached_disjoint_and_documented(tmp_path):
    from napari_segloss.data.synthetic import generate_slice, split_seeds

    a = synthetic_splits(6, 2, 3, size=64, factor=2, n_volumes=1, volume_shape=(4, 64, 64), cache_dir=tmp_path)
    files = list(tmp_path.glob("synthetic_*.npz"))
    assert len(files) == 1 and a.description["cache"] == files[0].name
    b = synthetic_splits(6, 2, 3, size=64, factor=2, n_volumes=1, volume_shape=(4, 64, 64), cache_dir=tmp_path)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert a.train.images.shape == (6, 32, 32) and a.train.masks.dtype == bool
    assert a.volumes.images.shape == (1, 4, 32, 32)
    assert not set(a.train.names) & set(a.test.names) and not set(a.val.names) & set(a.test.names)
    seed = split_seeds("test", 1)[0]
    sample = generate_slice(seed, 64)
    assert a.test.names[0] == f"seed{seed}"
    np.testing.assert_array_equal(a.test.masks[0], downsample_mask(sample.mask, 2))
    np.testing.assert_allclose(a.test.spacing[0], np.asarray(sample.spacing) * 2)
    assert a.test.kinds[0] == (sample.kind if sample.mask.any() else "none")


def test_downsample_is_a_block_mean():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(downsample(x, 2), [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.parametrize("layout", ["suffix", "folders"])
def test_folder_splits_read_pairs(tmp_path, layout):
    from napari_segloss.io.writers import write_array

    rng = np.random.default_rng(0)
    for i in range(5):
        mask = np.zeros((64, 64), np.uint8)
        mask[10 + i:30 + i, 20:40] = 255
        image = (rng.integers(0, 50, (64, 64)) + (mask > 0) * 150).astype(np.uint8)
        if layout == "suffix":
            write_array(tmp_path / f"s{i}.png", image)
            write_array(tmp_path / f"s{i}_mask.png", mask)
        else:
            write_array(tmp_path / "images" / f"s{i}.png", image)
            write_array(tmp_path / "masks" / f"s{i}.png", mask)
    splits = folder_splits(tmp_path, val_fraction=0.2)
    assert len(splits.train) == 4 and len(splits.val) == 1 and splits.test is None
    assert splits.train.images.shape[1:] == (64, 64)
    assert sorted(splits.train.names + splits.val.names) == [f"s{i}" for i in range(5)]
    k = (splits.train.names + splits.val.names).index("s0")
    masks = np.concatenate([splits.train.masks, splits.val.masks])
    assert masks[k].sum() == 400
    resized = folder_splits(tmp_path, size=32)
    assert resized.train.images.shape[1:] == (32, 32)
    np.testing.assert_allclose(resized.train.spacing / splits.train.spacing, 2.0)


def test_folder_volumes_are_normalised_as_inference_normalises_them(tmp_path):
    """A 3-D training volume is normalised as a whole (as ``predict`` does), not slice by slice:
    a dim slice stays dim relative to a bright one."""
    from napari_segloss.inference import Segmenter
    from napari_segloss.io.writers import write_array

    rng = np.random.default_rng(0)
    volume = np.stack([rng.integers(0, 100, (64, 64)) * (k + 1) for k in range(4)]).astype(np.uint16)
    mask = np.zeros(volume.shape, np.uint8)
    mask[:, 20:40, 20:40] = 1
    write_array(tmp_path / "vol.tif", volume, spacing=(2.0, 1.0, 1.0))
    write_array(tmp_path / "vol_mask.tif", mask, spacing=(2.0, 1.0, 1.0))
    splits = folder_splits(tmp_path, val_fraction=0.25)
    by_name = dict(zip(splits.train.names + splits.val.names, np.concatenate([splits.train.images, splits.val.images])))
    expected = Segmenter(torch.nn.Identity()).prepare(volume)[0][:, 0]  # what inference feeds the network
    for k in range(4):
        np.testing.assert_allclose(by_name[f"vol_{k}"], expected[k], atol=1e-6)
    assert by_name["vol_0"].max() < 0.5 < by_name["vol_3"].max()


def test_folder_without_pairs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no image/mask pairs"):
        folder_splits(tmp_path)


# --- augmentation and batches -----------------------------------------------------------------

def test_augment_is_deterministic_and_moves_image_and_mask_together():
    mask = np.zeros((96, 96), bool)
    mask[30:60, 40:55] = True
    geometric = Augment(gamma=(1, 1), contrast=(1, 1), brightness=0.0, noise=0.0, fg_crop=1.0)
    for seed in range(5):
        img, msk = geometric(mask.astype(np.float32), mask, np.random.default_rng(seed), 64)
        again, _ = geometric(mask.astype(np.float32), mask, np.random.default_rng(seed), 64)
        np.testing.assert_array_equal(img, again)
        assert img.shape == msk.shape == (64, 64)
        np.testing.assert_array_equal(img >= 0.5, msk)
        assert msk.any()  # fg_crop=1 centres the window on the tumour
        assert 0.75 * mask.sum() < msk.sum() < 1.3 * mask.sum()  # scale within 0.9..1.1 (area 0.81..1.21)


def test_tumour_free_windows_hold_no_tumour_under_any_rotation_and_zoom():
    rng = np.random.default_rng(0)
    masks = np.zeros((200, 128, 128), bool)
    for m in masks:
        r, c = rng.integers(20, 90, 2)
        m[r:r + rng.integers(5, 30), c:c + rng.integers(5, 30)] = True
    images = masks.astype(np.float32) + 0.5
    plain = Augment()
    negative = dataclasses.replace(plain, neg_crop=1.0)
    _, y = negative.batch(images, masks, np.random.default_rng(1), 64)
    found = np.array([negative._tumour_free_centre(m, (64, 64), np.random.default_rng(i)) is not None
                      for i, m in enumerate(masks)])
    empty = (y.sum(dim=(1, 2, 3)) == 0).numpy()
    assert found.mean() > 0.9 and empty.mean() > 0.9  # a window away from the tumour almost always exists...
    _, y_plain = plain.batch(images, masks, np.random.default_rng(1), 64)
    assert (y_plain.sum(dim=(1, 2, 3)) == 0).float().mean() < 0.5  # ...where the usual crops mostly hold tumour
    accepted = [negative(images[i], masks[i], np.random.default_rng(i), 64)[1] for i in range(50)]
    assert sum(not m.any() for m in accepted) >= 45
    # neg_crop = 0 (the bundled recipe) draws what the recipe drew before the option existed:
    # one random() for the foreground choice, then a tumour pixel or two uniform coordinates
    for seed in range(20):
        ours, old = np.random.default_rng(seed), np.random.default_rng(seed)
        centre = plain._centre(masks[seed], (64, 64), ours)
        if old.random() < plain.fg_crop:
            fg = np.argwhere(masks[seed])
            expected = fg[old.integers(len(fg))]
        else:
            expected = np.array([old.uniform(31.5, 95.5), old.uniform(31.5, 95.5)])
        np.testing.assert_array_equal(centre, expected)
        assert ours.random() == old.random()


def test_augment_intensity_jitter_stays_in_its_bounds():
    image = np.full((32, 32), 0.5, np.float32)
    aug = Augment(rotate_deg=0.0, scale=(1, 1), flip_p=0.0, noise=0.0)
    img, _ = aug(image, np.zeros((32, 32), bool), np.random.default_rng(1))
    lo, hi = 0.5 ** 1.25 * 0.9 - 0.05, 0.5 ** 0.8 * 1.1 + 0.05
    assert np.allclose(img, img[0, 0]) and lo <= img[0, 0] <= hi


def test_epoch_batches_shard_each_global_batch():
    full = [idx for idx, _ in epoch_batches(20, 4, seed=3, epoch=1)]
    assert len(full) == 5 and sorted(np.concatenate(full)) == list(range(20))
    r0 = [idx for idx, _ in epoch_batches(20, 2, seed=3, epoch=1, rank=0, world=2)]
    r1 = [idx for idx, _ in epoch_batches(20, 2, seed=3, epoch=1, rank=1, world=2)]
    for a, b, f in zip(r0, r1, full):
        assert sorted(np.concatenate([a, b])) == sorted(f)
    other = [idx for idx, _ in epoch_batches(20, 4, seed=3, epoch=2)]
    assert any((a != b).any() for a, b in zip(full, other))


# --- extras -----------------------------------------------------------------------------------

def test_extras_precompute_the_catalogue_distance_map():
    loss = build("distance_bce")
    extras = Extras(loss, info("distance_bce").needs)
    assert extras.maps == ("target_dist",)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 10:24] = True
    maps = extras.sample_maps(mask, (0.5, 0.5))
    np.testing.assert_allclose(maps["target_dist"], signed_distance(mask, (0.5, 0.5)), rtol=1e-6)
    logits, target = torch.randn(1, 1, 32, 32), torch.from_numpy(mask)[None, None].float()
    kwargs = extras.call_kwargs(maps={"target_dist": torch.from_numpy(maps["target_dist"])[None, None]},
                                features=None, spacing=np.array([0.5, 0.5]))
    assert kwargs["spacing"] == (0.5, 0.5)
    torch.testing.assert_close(loss(logits, target, **kwargs), loss(logits, target, spacing=(0.5, 0.5)))
    assert Extras(build("dice"), info("dice").needs).maps == ()  # no distance transform for a loss without maps


def test_extras_give_features_only_to_losses_that_need_them():
    model = build_model(DEFAULT_ARCHITECTURE)
    net = _WithFeatures(model).eval()
    x = torch.randn(2, 1, 64, 64)
    fess = Extras(build("fess"), info("fess").needs)
    logits, features = fess.forward(net, x)
    ref_logits, ref_features = forward_with_features(model, x)
    torch.testing.assert_close(logits, model(x))
    assert features.shape == ref_features.shape == (2, 32, 16, 16)
    assert Extras(build("dice"), info("dice").needs).forward(net, x)[1] is None


def test_extras_call_the_hooks():
    calf = build("calf")
    before = calf.state()
    masks = [np.zeros((16, 16), bool) for _ in range(20)]
    for i, m in enumerate(masks):
        m[: i % 7 + 1, : (i * i) % 11 + 1] = True
    Extras(calf, info("calf").needs).fit(masks)
    assert calf.state() != before

    class Spy(SegLoss):
        calls: list = []

        def on_epoch(self, epoch, total):
            self.calls.append((epoch, total))

    spy = Spy()
    Extras(spy, {"epoch"}).start_epoch(3, 10)
    assert spy.calls == [(3, 10)]


# --- the loop ---------------------------------------------------------------------------------

def _bce_on(model, split):
    with torch.no_grad():
        x = torch.from_numpy(split.images)[:, None]
        y = torch.from_numpy(split.masks.astype(np.float32))[:, None]
        return float(torch.nn.functional.binary_cross_entropy_with_logits(model.eval()(x), y))


def test_training_lowers_the_loss(straight):
    result, _ = straight
    splits = synthetic_splits(TINY.n_train, TINY.n_val, TINY.n_test, size=64, n_volumes=1, volume_shape=(6, 64, 64))
    torch.manual_seed(TINY.seed)
    initial = build_model(DEFAULT_ARCHITECTURE)
    trained = load(result.path).model
    assert _bce_on(trained, splits.train) < 0.5 * _bce_on(initial, splits.train)
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(0.0 <= h["val_dice"] <= 1.0 for h in result.history if h["val_dice"] is not None)


def test_resume_continues_exactly(straight, tmp_path):
    reference, _ = straight
    stopped = train("bce", out=tmp_path, recipe=TINY, device="cpu", progress=False, on_epoch_end=lambda row: False)
    assert stopped.path is None and len(stopped.history) == 1
    assert (tmp_path / "bce.resume.pt").exists() and not (tmp_path / "bce.json").exists()
    resumed = train("bce", out=tmp_path, recipe=TINY, device="cpu", progress=False, resume=True)
    assert not (tmp_path / "bce.resume.pt").exists()
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in reference.history])
    for key, value in _weights(reference.path).items():
        torch.testing.assert_close(_weights(resumed.path)[key], value)


def test_resume_state_holds_only_tensors_and_plain_data(tmp_path):
    train("bce", out=tmp_path, recipe=TINY, device="cpu", progress=False, on_epoch_end=lambda row: False)
    state = torch.load(tmp_path / "bce.resume.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "loss", "rng", "history", "epoch", "recipe"} <= set(state)
    other = dataclasses.replace(TINY, lr=1e-3)
    with pytest.warns(UserWarning, match="another recipe"):
        result = train("bce", out=tmp_path, recipe=other, device="cpu", progress=False, resume=True)
    assert len(result.history) == 2


def test_card_validates_loads_and_reproduces_through_the_engine(straight):
    from napari_segloss.data.synthetic import generate_slice
    from napari_segloss.inference import predict

    result, out = straight
    card = json.loads((out / "bce.json").read_text())
    assert ModelCard.from_dict(card).to_dict() == card
    assert card["recipe"]["batch"] == TINY.batch and card["data"]["source"] == "synthetic"
    assert card["loss"] == "bce" and card["family"] == "pixel" and len(card["history"]) == 2
    metrics = card["test_metrics"]
    for key in ("dice", "iou", "sensitivity", "specificity", "precision", "hd95", "empty_slice_false_positives",
                "ci95", "breakdown", "volumes", "definition"):
        assert key in metrics
    loaded = load(result.path)
    assert loaded.card.weights_sha256 == card["weights_sha256"]
    assert metrics["reference_slices"]
    for ref in metrics["reference_slices"]:
        sample = generate_slice(int(ref["name"].removeprefix("seed")), TINY.render_size)
        engine = predict(sample.image, loaded, device="cpu")
        # the engine sees exactly what training and evaluation saw: same normalisation, same weights
        ours = probabilities(loaded.model, normalize(sample.image, card["normalization"])[None])[0]
        np.testing.assert_allclose(engine.probability, ours, atol=1e-5)
        assert compute(engine.mask(), sample.mask)["dice"] == pytest.approx(ref["dice"], abs=0.02)


def test_ddp_world_size_one_matches_plain_training(straight, tmp_path, monkeypatch):
    import torch.distributed as dist

    reference, _ = straight
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    try:
        result = train("bce", out=tmp_path, recipe=TINY, device="cpu", progress=False)
        assert dist.is_initialized() and dist.get_backend() == "gloo"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert result.card["recipe"]["world_size"] == 1
    for key, value in _weights(reference.path).items():
        torch.testing.assert_close(_weights(result.path)[key], value)


def test_learnable_loss_parameters_are_optimised(tmp_path):
    recipe = dataclasses.replace(TINY, epochs=1)
    before = {k: v.clone() for k, v in build("robust_t").state_dict().items()}
    assert before, "robust_t should have a learnable parameter"
    train("robust_t", out=tmp_path, recipe=recipe, device="cpu", progress=False,
          on_epoch_end=lambda row: False)
    state = torch.load(tmp_path / "robust_t.resume.pt", weights_only=True)["loss"]
    assert any(not torch.equal(state[k], v) for k, v in before.items())


def test_cli_train_on_a_folder(tmp_path, capsys):
    from napari_segloss.cli import main
    from napari_segloss.io.writers import write_array

    rng = np.random.default_rng(1)
    for i in range(9):
        mask = np.zeros((64, 64), np.uint8)
        mask[rng.integers(5, 30):, :][:20, 10:30] = 1
        write_array(tmp_path / "data" / f"x{i}.png", (rng.integers(0, 60, (64, 64)) + mask * 120).astype(np.uint8))
        write_array(tmp_path / "data" / f"x{i}_mask.png", mask * 255)
    before = torch.get_num_threads()
    try:
        code = main(["train", "--loss", "dice", "--data", str(tmp_path / "data"), "--epochs", "1", "--patch", "64",
                     "--batch", "4", "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "out")])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    card = json.loads((tmp_path / "out" / "dice.json").read_text())
    assert card["data"]["source"] == "folder" and card["test_metrics"] == {}
    assert card["recipe"]["threads"] == 1
    assert "saved" in capsys.readouterr().out
    assert main(["train", "--loss", "dice", "--loss-args", "[1]", "--data", "synthetic", "--out", str(tmp_path)]) == 2


# --- evaluation -------------------------------------------------------------------------------

def test_overlap_matches_the_metrics_module():
    rng = np.random.default_rng(0)
    truth = np.zeros((4, 32, 32), bool)
    truth[0, 5:15, 5:15] = truth[1, 10:20, 3:9] = truth[3, 0:4, 0:4] = True
    pred = truth ^ (rng.random(truth.shape) < 0.05)
    expected = [compute(p, t) for p, t in zip(pred, truth) if t.any()]
    got = overlap(pred, truth)
    assert got["dice"] == pytest.approx(np.mean([m["dice"] for m in expected]))
    assert got["iou"] == pytest.approx(np.mean([m["iou"] for m in expected]))


def test_bootstrap_interval_agrees_with_scipy():
    values = np.random.default_rng(2).beta(5, 2, size=80)
    ours = bootstrap_ci(values, n_boot=4000)
    ref = stats.bootstrap((values,), np.mean, method="percentile", n_resamples=4000, random_state=0).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.01) and ours[1] == pytest.approx(ref.high, abs=0.01)
    assert np.isnan(bootstrap_ci([np.nan])[0])


def test_paired_difference_and_aggregate():
    a, b = np.array([0.9, 0.8, 0.7, np.nan]), np.array([0.8, 0.8, 0.6, 0.5])
    d = paired_difference(a, b)
    assert d["n"] == 3 and d["diff"] == pytest.approx(0.2 / 3)
    rows = [
        {"dice": 0.8, "iou": 0.67, "sensitivity": 0.9, "specificity": 1.0, "precision": 0.7, "hd95": 2.0,
         "pred_size": 10.0, "tumour": True, "kind": "glioma", "size": "large"},
        {"dice": 0.0, "iou": 0.0, "sensitivity": 0.0, "specificity": 1.0, "precision": np.nan, "hd95": np.nan,
         "pred_size": 0.0, "tumour": True, "kind": "pituitary", "size": "small"},
        {"dice": np.nan, "iou": np.nan, "sensitivity": np.nan, "specificity": 0.99, "precision": 0.0,
         "hd95": np.nan, "pred_size": 4.0, "tumour": False, "kind": "none", "size": "none"},
        {"dice": np.nan, "iou": np.nan, "sensitivity": np.nan, "specificity": np.nan, "precision": np.nan,
         "hd95": np.nan, "pred_size": 0.0, "tumour": False, "kind": "none", "size": "none"},
    ]
    out = aggregate(rows)
    assert out["dice"] == pytest.approx(0.4) and out["n_tumour"] == 2 and out["n_tumour_free"] == 2
    assert out["empty_slice_false_positives"] == 1 and out["empty_slice_fp_area_mm2"] == pytest.approx(2.0)
    assert out["n_undefined"] == {"precision": 1, "hd95": 1}
    assert out["breakdown"]["kind"]["pituitary"]["mean"] == 0.0
    assert [size_class(a, [10, 20]) for a in (5, 15, 25)] == ["small", "medium", "large"]


def test_findings_name_collapsed_and_low_checkpoints_and_how_they_fail():
    from napari_segloss.train.results import findings

    def card(name, dice, precision, sensitivity, notes=""):
        metrics = {"dice": dice, "precision": precision, "sensitivity": sensitivity,
                   "empty_slice_false_positives": 3, "n_tumour_free": 50}
        return {"name": name, "test_metrics": metrics, "notes": notes}

    cards = [card("good", 0.85, 0.9, 0.85), card("fine", 0.80, 0.8, 0.85), card("ok", 0.78, 0.8, 0.8),
             card("greedy", 0.40, 0.30, 0.98), card("timid", 0.45, 0.97, 0.35),
             card("dead", 0.0, None, 0.0, notes="Collapsed under the shared recipe: test Dice 0.000")]
    lines = findings(cards)
    assert [line.split("**")[1] for line in lines] == ["dead", "greedy", "timid"]  # worst first
    assert "over-segments" in lines[1] and "under-segments" in lines[2] and "Collapsed" in lines[0]
    assert "median 0.615" in lines[1]  # of all six, the collapsed one included


def test_batched_augmentation_equals_the_per_sample_recipe():
    """Augment.batch draws the same parameters as Augment.__call__ and warps in one grid_sample:
    the same crops except in the half pixel at the image's edge."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    images = ndimage.gaussian_filter(rng.random((6, 96, 96)), (0, 3, 3)).astype(np.float32) * 3
    masks = np.zeros((6, 96, 96), bool)
    masks[:, 30:60, 20:70] = True
    aug = Augment()
    one = [aug(images[i], masks[i], r, 64) for r in [np.random.default_rng(7)] for i in range(6)]
    x, y = aug.batch(images, masks, np.random.default_rng(7), 64)
    assert x.shape == (6, 1, 64, 64) and y.shape == (6, 1, 64, 64)
    diff = np.abs(x[:, 0].numpy() - np.stack([o[0] for o in one]))
    assert np.median(diff) < 1e-5 and (diff > 1e-3).mean() < 0.01
    assert (y[:, 0].numpy().astype(bool) == np.stack([o[1] for o in one])).mean() > 0.995


def test_recipe_round_trips_through_a_card():
    """A card's recipe (with the pretraining's recorded result and run details) gives the recipe back."""
    recipe = Recipe()
    recorded = {**recipe.to_dict(), "world_size": 1, "precision": "fp32", "device": "cpu"}
    recorded["pretraining"] = {**recorded["pretraining"], "result": {"key": "abc", "seconds": 3.0}}
    assert Recipe.from_dict(json.loads(json.dumps(recorded))) == recipe
    assert recipe.to_dict()["train_folds"] == [1, 2, 3]


# --- training at a coarser pixel size (Recipe.downsample on a labelled folder) ---------------

def _labelled_folder(folder, n=12, size=64):
    """``n`` phantom slices as a labelled folder (PNG images/masks, labels.csv, 1 mm pixels): the
    first two thirds fold 1, the rest fold 2."""
    from napari_segloss.data.synthetic import generate_slice
    from napari_segloss.io.writers import write_array

    rows = ["name,fold,tumour_type,pixel_mm"]
    for i in range(n):
        sample = generate_slice(100 + i, size)
        image = np.clip(sample.image / sample.image.max() * 255, 0, 255).astype(np.uint8)
        write_array(folder / "images" / f"s{i:02d}.png", image)
        write_array(folder / "masks" / f"s{i:02d}.png", sample.mask.astype(np.uint8) * 255)
        rows.append(f"s{i:02d},{1 if i < 2 * n // 3 else 2},{sample.kind},1.0")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_slices_made_coarser_are_resized_as_inference_resizes_a_scan():
    from napari_segloss.inference import resize_slices
    from napari_segloss.train.data import SliceSet

    rng = np.random.default_rng(0)
    images = rng.random((3, 64, 64)).astype(np.float32)
    masks = np.zeros((3, 64, 64), bool)
    masks[:, 10:40, 20:50] = True
    split = SliceSet(images, masks, np.full((3, 2), 0.5), ["a", "b", "c"], ["x", "y", "z"])
    coarse = split.coarser(2)
    assert coarse.images.shape == (3, 32, 32) and coarse.masks.shape == (3, 32, 32)
    np.testing.assert_allclose(coarse.spacing, 1.0)
    np.testing.assert_array_equal(coarse.images, resize_slices(images[:, None], (32, 32))[:, 0])
    assert coarse.masks.sum(axis=(1, 2)) * 4 == pytest.approx(masks.sum(axis=(1, 2)), rel=0.1)
    assert split.coarser(1) is split


def test_a_checkpoint_trained_coarser_is_scored_and_run_at_its_pixel_size(tmp_path):
    from napari_segloss.inference import predict
    from napari_segloss.io import read_scans

    folder = _labelled_folder(tmp_path / "data")
    recipe = dataclasses.replace(TINY, downsample=2, patch=32, epochs=1, batch=4, train_folds=(1,), test_folds=(2,))
    result = train("bce", out=tmp_path / "out", data=folder, recipe=recipe, device="cpu", progress=False)
    card = result.card
    assert card["pixel_spacing_mm"] == [2.0, 2.0] and card["image_size"] == [32, 32]
    assert "1/2" in card["data"]["training_scale"]
    loaded = load(result.path)
    assert card["test_metrics"]["reference_slices"]
    for ref in card["test_metrics"]["reference_slices"]:
        image = read_scans(folder / "images" / f"{ref['name']}.png")[0].data
        truth = read_scans(folder / "masks" / f"{ref['name']}.png")[0].data > 0
        prediction = predict(image, loaded, device="cpu", spacing=(1.0, 1.0))
        assert prediction.probability.shape == (64, 64)
        # the card's test Dice is what predict gives on the native 64x64 slice of known pixel size
        assert compute(prediction.mask(), truth)["dice"] == pytest.approx(ref["dice"], abs=0.02)


def test_progressive_resizing_trains_coarse_first_and_keeps_the_fine_scale(tmp_path, monkeypatch):
    from napari_segloss.train import loop

    seen = []
    real_batch = loop._batch
    monkeypatch.setattr(loop, "_batch", lambda split, idx, rng, augment, patch, *rest: (
        seen.append((split.images.shape[-1], float(split.spacing[0][0]), patch)),
        real_batch(split, idx, rng, augment, patch, *rest))[1])
    folder = _labelled_folder(tmp_path / "data")
    recipe = dataclasses.replace(TINY, coarse_epochs=1, epochs=2, patch=64, batch=4, train_folds=(1,), test_folds=(2,))
    result = train("bce", out=tmp_path / "out", data=folder, recipe=recipe, device="cpu", progress=False)
    steps = len(seen) // 2
    assert seen[:steps] == [(32, 2.0, 32)] * steps  # epoch 0: whole slices at 2 mm
    assert seen[steps:] == [(64, 1.0, 64)] * steps  # epoch 1: the recipe's own 1 mm crops
    card = result.card
    assert card["image_size"] == [64, 64] and card["pixel_spacing_mm"] == [1.0, 1.0]
    assert card["recipe"]["coarse_epochs"] == 1 and len(card["history"]) == 2
    with pytest.raises(ValueError, match="coarse_epochs"):
        train("bce", out=tmp_path / "bad", data=folder, recipe=dataclasses.replace(recipe, coarse_epochs=3),
              device="cpu", progress=False)


def test_in_context_false_alarms_look_inside_each_slice_s_negative_window():
    from napari_segloss.train.data import SliceSet, negative_crop, negative_windows
    from napari_segloss.train.evaluate import in_context_false_alarms

    yy, xx = np.mgrid[:160, :160]
    head = ((yy - 80) ** 2 + (xx - 80) ** 2 < 75**2).astype(np.float32) * 0.5
    mask = np.zeros((160, 160), bool)
    mask[20:30, 70:90] = True  # tumour near the top: the window lies below it
    split = SliceSet(np.stack([head, head]), np.stack([mask, mask]), np.ones((2, 2)), ["g", "g"], ["a", "b"])
    window = negative_crop(head, mask, (1.0, 1.0))
    assert window is not None and not mask[window].any()
    prob = np.zeros((2, 160, 160), np.float32)
    prob[:, mask] = 0.9  # the tumour itself is no false alarm
    rows, cols = window
    prob[1, rows.start + 5, cols.start + 5] = 0.6  # one pixel inside the second slice's window
    windows = negative_windows(split)
    assert windows == [(0, window), (1, window)]
    np.testing.assert_array_equal(in_context_false_alarms(prob, windows), [0.0, 1.0])


def test_results_page_shows_false_alarms_alone_and_in_context():
    from napari_segloss.train.results import real_table, targets

    def card(name, dice, rate):
        return {"name": name, "loss": name, "family": "region", "calibration": {},
                "test_metrics": {"dice": dice, "iou": dice - 0.1, "hd95": 10.0, "sensitivity": 0.8, "precision": 0.7,
                                 "ci95": {"dice": [dice - 0.02, dice + 0.02]}, "empty_slice_false_positives": 40,
                                 "n_tumour_free": 100, "empty_slice_fp_rate": {"mean": rate, "ci95": [rate, rate]}}}

    cards = [card("dice", 0.65, 0.4), card("focal", 0.70, 0.08)]
    lines = targets(cards, {"dice": 0.3, "focal": 0.12})
    assert any("≤ 10% of the negatives: 8.0%: **met**" in line for line in lines)
    assert any("whole slice: 12.0%: **missed**" in line for line in lines)
    assert not any("whole slice" in line for line in targets(cards))  # not measured: not claimed
    table = real_table(cards, {}, {}, {}, {"focal": 0.12})
    focal = next(line for line in table.splitlines() if "| focal |" in line)
    assert "| 0.12 |" in focal
    assert "| n/a |" in next(line for line in table.splitlines() if "| dice |" in line)


def test_a_crop_is_seen_at_its_slice_s_scale():
    from napari_segloss.train.evaluate import crop_network_size

    assert crop_network_size((96, 96), (256, 256), (128, 128)) == [48, 48]
    assert crop_network_size((96, 64), (256, 256), (256, 256)) == [96, 64]
