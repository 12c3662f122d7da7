"""Loss landscapes (napari_segloss.interpret.landscape): tiny grids on a tiny random checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_segloss.checkpoints import load
from napari_segloss.interpret import landscape as ls
from napari_segloss.losses import build

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.normal(0.0, 1.0, (2, 64, 64)).astype(np.float32)
    rows, cols = np.mgrid[:64, :64]
    masks = np.stack([(rows - 32) ** 2 + (cols - 30) ** 2 < 100, (rows - 20) ** 2 + (cols - 40) ** 2 < 50])
    return images, masks


def _model(tiny_checkpoint_dir: Path, name: str = "tiny_dice") -> torch.nn.Module:
    return load(tiny_checkpoint_dir / f"{name}.json").model


def test_value_at_origin_is_the_loss_on_the_batch(tiny_checkpoint_dir: Path, batch: tuple) -> None:
    model = _model(tiny_checkpoint_dir)
    images, masks = batch
    losses = {"dice": build("dice"), "bce": build("bce")}
    with torch.no_grad():
        logits = model(torch.from_numpy(images)[:, None])  # eval mode: BN uses its running statistics
    target = torch.from_numpy(masks.astype(np.float32))[:, None]
    expected = {name: float(loss(logits, target)) for name, loss in losses.items()}
    curve = ls.loss_landscape(model, images, masks, losses, steps=3, span=0.5)
    surface = ls.loss_landscape(model, images, masks, losses, dims=2, steps=3, span=0.5)
    for name, value in expected.items():
        assert curve.origin[name] == pytest.approx(value, rel=1e-5)
        assert curve.values[name][1] == pytest.approx(value, rel=1e-5)
        assert surface.values[name][1, 1] == pytest.approx(value, rel=1e-5)
    assert curve.values["bce"][0] != pytest.approx(expected["bce"], rel=1e-3)  # moving the weights moves the loss
    assert surface.values["dice"].shape == (3, 3) and curve.alphas.tolist() == [-0.5, 0.0, 0.5]


def test_directions_are_filter_normalised(tiny_checkpoint_dir: Path) -> None:
    model = _model(tiny_checkpoint_dir)
    direction = ls.random_direction(model, torch.Generator().manual_seed(3))
    checked = 0
    for param, d in zip(model.parameters(), direction):
        assert d.shape == param.shape
        if param.dim() <= 1:  # biases and normalisation parameters
            assert not d.any()
            continue
        dims = tuple(range(1, param.dim()))
        norm = torch.linalg.vector_norm
        torch.testing.assert_close(norm(d, dim=dims), norm(param.detach(), dim=dims), rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked > 10


def test_same_seed_same_surface_and_model_untouched(tiny_checkpoint_dir: Path, batch: tuple) -> None:
    model = _model(tiny_checkpoint_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, masks = batch
    losses = {"dice": build("dice")}
    a = ls.loss_landscape(model, images, masks, losses, dims=2, steps=2, seed=5)
    b = ls.loss_landscape(model, images, masks, losses, dims=2, steps=2, seed=5)
    c = ls.loss_landscape(model, images, masks, losses, dims=2, steps=2, seed=6)
    np.testing.assert_array_equal(a.values["dice"], b.values["dice"])
    assert not np.allclose(a.values["dice"], c.values["dice"])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_progress_and_cancel(tiny_checkpoint_dir: Path, batch: tuple) -> None:
    model = _model(tiny_checkpoint_dir)
    images, masks = batch
    seen: list[tuple[int, int]] = []
    ls.loss_landscape(model, images[:1], masks[:1], {"bce": build("bce")}, steps=3, progress=lambda *p: seen.append(p))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ls.LandscapeCancelled, match="after 2 of 4"):
        ls.loss_landscape(model, images[:1], masks[:1], {"bce": build("bce")}, dims=2, steps=2,
                          cancel=lambda: len(seen) >= 5, progress=lambda *p: seen.append(p))


def test_checkpoint_landscape_uses_the_cards_own_loss(tiny_checkpoint_dir: Path, batch: tuple) -> None:
    images, masks = batch
    curve = ls.checkpoint_landscape(tiny_checkpoint_dir / "tiny_focal.json", images, masks, compare=("dice",),
                                    normalized=True, steps=3)
    assert set(curve.values) == {ls.OWN, "dice"}
    model = _model(tiny_checkpoint_dir, "tiny_focal")
    with torch.no_grad():
        logits = model(torch.from_numpy(images)[:, None])
    focal = float(build("focal")(logits, torch.from_numpy(masks.astype(np.float32))[:, None]))
    assert curve.origin[ls.OWN] == pytest.approx(focal, rel=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dims": 3}, "dims"), ({"steps": 1}, "steps"), ({"span": 0.0}, "span"),
])
def test_bad_options_are_clear_errors(tiny_checkpoint_dir: Path, batch: tuple, kwargs: dict, message: str) -> None:
    images, masks = batch
    with pytest.raises(ValueError, match=message):
        ls.loss_landscape(_model(tiny_checkpoint_dir), images, masks, {"bce": build("bce")}, **kwargs)


def test_mismatched_batch_is_a_clear_error(tiny_checkpoint_dir: Path, batch: tuple) -> None:
    images, masks = batch
    with pytest.raises(ValueError, match="one shape"):
        ls.loss_landscape(_model(tiny_checkpoint_dir), images, masks[:1], {"bce": build("bce")})


def test_odd_sized_slices_are_padded_like_inference(tiny_checkpoint_dir: Path, batch: tuple) -> None:
    from napari_segloss.inference import Segmenter

    model = _model(tiny_checkpoint_dir)
    images, masks = batch[0][:, :50, :45], batch[1][:, :50, :45]
    logits = torch.from_numpy(Segmenter(model).logits(images))[:, None]
    bce = float(build("bce")(logits, torch.from_numpy(masks.astype(np.float32))[:, None]))
    curve = ls.loss_landscape(model, images, masks, {"bce": build("bce")}, steps=2)
    assert curve.origin["bce"] == pytest.approx(bce, rel=1e-5)
