"""Shared fixtures: tiny randomly initialised checkpoints and a registry that lists only them."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_segloss.threads import torch_threads

#: (name, loss, family) of the checkpoints in ``tiny_checkpoint_dir``
TINY_CHECKPOINTS = (("tiny_dice", "dice", "region"), ("tiny_focal", "focal", "pixel"), ("tiny_bce", "bce", "pixel"))


@pytest.fixture(autouse=True, scope="session")
def _isolated_backend_and_cache(tmp_path_factory: pytest.TempPathFactory):
    """For the whole session, module- and session-scoped fixtures included: torch, the reference
    the tests compare with at 1e-5/1e-6 (tests/test_backends.py runs ONNX Runtime, the CPU
    default, and checks it against torch), and derived files cached outside the real ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NAPARI_SEGLOSS_BACKEND", "torch")
        patch.setenv("NAPARI_SEGLOSS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "derived_cache"))
        yield


@pytest.fixture(autouse=True)
def _isolated_user_checkpoints(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own empty user checkpoint folder: tests never read or write the real
    ``~/.napari-segloss/checkpoints``, nor see each other's fine-tuned checkpoints."""
    monkeypatch.setenv("NAPARI_SEGLOSS_USER_DIR", str(tmp_path_factory.mktemp("user_checkpoints")))


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with ``tiny_dice``, ``tiny_focal`` and ``tiny_bce``: DEFAULT_ARCHITECTURE models
    with seeded random weights (seeds 0, 1, 2) and cards for losses ``dice``, ``focal``, ``bce``,
    written by ``save_checkpoint``. Session-scoped: do not modify the files."""
    import torch

    from napari_segloss.checkpoints import ModelCard, save_checkpoint
    from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model

    directory = tmp_path_factory.mktemp("tiny_checkpoints")
    for seed, (name, loss, family) in enumerate(TINY_CHECKPOINTS):
        torch.manual_seed(seed)
        model = build_model(DEFAULT_ARCHITECTURE)
        card = ModelCard(
            name=name,
            loss=loss,
            family=family,
            patch_size=(64, 64),
            pixel_spacing_mm=(1.0, 1.0),
            recipe={"epochs": 1, "seed": seed, "note": "random initialisation for tests"},
            history=[{"epoch": 0, "train_loss": 0.7, "val_dice": 0.1 * (seed + 1), "val_iou": 0.05, "seconds": 0.1}],
        )
        save_checkpoint(model, card, directory)
    return directory


@pytest.fixture
def tiny_registry(tiny_checkpoint_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the registry list exactly the tiny checkpoints: NAPARI_SEGLOSS_WEIGHTS points to an
    empty folder, NAPARI_SEGLOSS_CHECKPOINTS to ``tiny_checkpoint_dir`` (returned)."""
    empty = tmp_path / "no_bundled_weights"
    empty.mkdir()
    monkeypatch.setenv("NAPARI_SEGLOSS_WEIGHTS", str(empty))
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", str(tiny_checkpoint_dir))
    return tiny_checkpoint_dir


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tests (restored after): their tensors are tiny, and
    on the shared 2-core test machines two threads wait on each other. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    with torch_threads(1):
        yield
