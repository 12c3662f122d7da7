"""The one forward path (inference.Segmenter): every consumer runs the network the same way.

Consumers: ``predict`` and ``predict_many`` (CLI, widget, batch), training validation and the
card's test evaluation (``train.evaluate.probabilities``), fine-tuning's fit score, the
interpretability loss maps, and the batch runner. At awkward sizes (32, 40, 257, 513) they must
agree to float precision (1e-5 between batch sizes); a second architecture (smp Unet) must run through all of them with no
change outside ``models.py`` and ``inference.py``.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from napari_segloss.checkpoints import ModelCard, load, save_checkpoint
from napari_segloss.inference import Segmenter, field_of_view_size, predict, predict_many
from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model
from napari_segloss.preprocess import normalize
from napari_segloss.train.evaluate import overlap, probabilities

#: a second network: smp Unet on the same small encoder (about 1 M parameters)
UNET = {"arch": "Unet", "encoder_name": "timm-mobilenetv3_small_minimal_100", "encoder_weights": None,
        "in_channels": 1, "classes": 1, "decoder_channels": [64, 32, 16, 16, 8]}


def _scan(shape, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None] / 2
    disc = ((grid - centre) ** 2).sum(0) < (min(shape) / 4) ** 2
    return np.clip(400 + 2500 * disc + rng.normal(0, 150, shape), 0, 4095).astype(np.uint16), disc


def _checkpoint(tmp_path, architecture, name, seed=0, **card):
    torch.manual_seed(seed)
    model = build_model(architecture)
    save_checkpoint(model, ModelCard(name=name, loss="bce", architecture=dict(architecture),
                                     pixel_spacing_mm=(1.0, 1.0), **card), tmp_path)
    return load(tmp_path / f"{name}.json", device="cpu")


@pytest.fixture(scope="module")
def fpn(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("fpn"), DEFAULT_ARCHITECTURE, "fpn_bce")


@pytest.mark.parametrize("size", [32, 40, 257, 513])
def test_every_consumer_runs_the_same_forward_path(fpn, size):
    """Before the seam, card evaluation padded bottom/right to 32 only: at 40x40 it differed from
    ``predict`` by up to 0.56 in probability, and at 32x32 it raised where ``predict`` works."""
    from napari_segloss.interpret.maps import checkpoint_loss_map

    image, disc = _scan((size, size))
    engine = predict(image, fpn, device="cpu", resample=False).probability
    normalised = normalize(image, fpn.card.normalization).astype(np.float32)
    evaluation = probabilities(fpn.model, normalised[None])[0]  # training validation + card test metrics
    np.testing.assert_allclose(evaluation, engine, atol=1e-6)
    batched = predict_many([image, image], fpn, device="cpu", resample=False)
    np.testing.assert_allclose(batched[1], engine, atol=1e-5)  # batch of 2: oneDNN sums in another order
    logits = Segmenter.load(fpn, device="cpu").logits(normalised[None])[0]
    expected = checkpoint_loss_map(fpn, image, disc, "bce")  # interpretability's gradient path
    from napari_segloss.interpret.maps import loss_map

    assert expected.value == pytest.approx(loss_map(logits.astype(np.float64), disc, "bce", kind="logits").value,
                                           rel=1e-5)


def test_segmenter_restores_training_mode_and_batches_with_progress(fpn):
    model = fpn.model
    model.train()
    segmenter = Segmenter(model, budget_bytes=2 * 64 * 64 * 256)  # two padded 64x64 slices per batch
    calls = []
    out = segmenter.probabilities(np.zeros((5, 40, 40), np.float32), progress=lambda d, t: calls.append(d))
    assert model.training and out.shape == (5, 40, 40)
    assert calls == [0, 2, 4, 5]
    model.eval()


def test_unknown_pixel_size_runs_at_the_training_field_of_view(tmp_path):
    loaded = _checkpoint(tmp_path, DEFAULT_ARCHITECTURE, "fov", image_size=(64, 64))
    image, _ = _scan((128, 128))
    seen = []
    segmenter = Segmenter.load(loaded, device="cpu")
    real = segmenter.logits
    segmenter.logits = lambda data, **kw: seen.append(data.shape) or real(data, **kw)  # type: ignore[method-assign]
    result = predict(image, segmenter)
    assert seen == [(1, 1, 64, 64)] and result.probability.shape == (128, 128)
    assert result.metadata["scaling"] == "field_of_view" and "unknown" in result.metadata["scaling_note"]
    native = predict(image, segmenter, resample=False)
    assert seen[-1] == (1, 1, 128, 128) and native.metadata["scaling"] == "none"
    known = predict(image, segmenter, spacing=(0.5, 0.5))
    assert seen[-1] == (1, 1, 64, 64) and known.metadata["scaling"] == "pixel_size"
    assert field_of_view_size((512, 384), (256, 256)) == (256, 192)


def test_second_architecture_through_every_consumer(tmp_path, monkeypatch):
    """smp Unet instead of FPN: training (validation + card evaluation), predict by path and by
    name, predict_many, fine-tuning, loss maps and the batch runner all run it unchanged."""
    from napari_segloss.batch.runner import run_batch
    from napari_segloss.interpret.finetune import fine_tune
    from napari_segloss.interpret.maps import checkpoint_loss_map
    from napari_segloss.train import Recipe, train
    from napari_segloss.train.pretrain import Pretraining

    monkeypatch.setenv("NAPARI_SEGLOSS_CACHE_DIR", str(tmp_path / "cache"))
    recipe = Recipe(pretraining=Pretraining(), epochs=1, batch=4, patch=64, n_train=8, n_val=2, n_test=3, n_volumes=1, volume_depth=3,
                    render_size=64, threads=1)
    result = train("dice", out=tmp_path / "ckpt", recipe=recipe, device="cpu", architecture=UNET,
                   progress=False, name="unet_dice")
    assert result.card["architecture"]["arch"] == "Unet" and np.isfinite(result.card["test_metrics"]["dice"])
    loaded = load(result.path, device="cpu")
    assert type(loaded.model).__name__ == "Unet"

    image, disc = _scan((70, 90))
    by_path = predict(image, result.path, device="cpu").probability
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", str(tmp_path / "ckpt"))
    np.testing.assert_allclose(predict(image, "unet_dice", device="cpu").probability, by_path, atol=1e-6)
    np.testing.assert_allclose(predict_many([image, image], loaded)[0], by_path, atol=1e-6)

    model, card = fine_tune(loaded, image, disc, loss="dice", steps=2, patch=64, batch=2, device="cpu")
    assert type(model).__name__ == "Unet" and card.architecture["arch"] == "Unet"
    assert np.isfinite(checkpoint_loss_map(loaded, image, disc, "dice").value)

    folder = tmp_path / "cohort"
    folder.mkdir()
    Image.fromarray((image // 16).astype(np.uint8)).save(folder / "case.png")
    Image.fromarray(disc.astype(np.uint8) * 255).save(folder / "case_mask.png")
    batch = run_batch(folder, ["unet_dice"], tmp_path / "out.zip", device="cpu")
    assert batch.failed == 0 and batch.rows and zipfile.is_zipfile(batch.out)
    assert overlap(by_path[None] >= 0.5, disc[None])["dice"] >= 0.0
