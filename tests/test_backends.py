"""The CPU backend (:mod:`napari_segloss.backends`): ONNX Runtime runs the exported graph of a
checkpoint inside :class:`~napari_segloss.inference.Segmenter`, within 1e-4 of torch's
probabilities; the graph is cached by the weights' sha256 and never outlives its weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from napari_segloss import backends  # noqa: E402
from napari_segloss.checkpoints import CheckpointError, read_card  # noqa: E402
from napari_segloss.inference import Segmenter, predict  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scan(shape, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(500 + 300 * rng.standard_normal(shape), 0, 4095).astype(np.uint16)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty graph cache of this test's own (and no sessions left from other tests)."""
    monkeypatch.setenv("NAPARI_SEGLOSS_CACHE_DIR", str(tmp_path / "cache"))
    backends.clear_sessions()
    yield tmp_path / "cache"
    backends.clear_sessions()


@pytest.mark.parametrize("shape", [(64, 64), (40, 72), (3, 48, 64), (96, 33)])
def test_onnx_probabilities_agree_with_torch(tiny_checkpoint_dir, cache, shape):
    """Same Segmenter, both backends, several sizes (padding, batches of a volume)."""
    card = tiny_checkpoint_dir / "tiny_focal.json"
    image = _scan(shape)
    onnx = Segmenter.load(card, device="cpu", backend="onnx")
    eager = Segmenter.load(card, device="cpu", backend="torch")
    assert onnx.backend is not None and eager.backend is None
    got = predict(image, onnx, resample=False).probability
    want = predict(image, eager, resample=False).probability
    assert got.shape == want.shape == shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_graph_is_cached_by_sha256_and_reused_without_building_torch(tiny_checkpoint_dir, cache):
    card_path = tiny_checkpoint_dir / "tiny_dice.json"
    sha = read_card(card_path).weights_sha256
    first = Segmenter.load(card_path, device="cpu", backend="onnx")
    path = backends.graph_path(sha)
    assert path.is_file() and path.parent.parent == cache and sha in path.name
    assert path.read_bytes()[:1] != b"\x80"  # a protobuf, not a pickle
    image = _scan((64, 64), 3)
    expected = predict(image, first, resample=False).probability
    backends.clear_sessions()
    again = Segmenter.load(card_path, device="cpu", backend="onnx")
    assert again._model is None  # the torch network was not built
    np.testing.assert_array_equal(predict(image, again, resample=False).probability, expected)
    assert again.card.name == "tiny_dice" and again.info.family == "region"
    assert again.model is not None  # built on demand (gradient paths, GPU)


def test_damaged_graph_is_exported_again(tiny_checkpoint_dir, cache):
    card_path = tiny_checkpoint_dir / "tiny_bce.json"
    Segmenter.load(card_path, device="cpu", backend="onnx")
    path = backends.graph_path(read_card(card_path).weights_sha256)
    path.write_bytes(path.read_bytes()[:100])
    backends.clear_sessions()
    segmenter = Segmenter.load(card_path, device="cpu", backend="onnx")
    assert path.stat().st_size > 1000
    eager = Segmenter.load(card_path, device="cpu", backend="torch")
    image = _scan((64, 64))
    np.testing.assert_allclose(predict(image, segmenter, resample=False).probability,
                               predict(image, eager, resample=False).probability, atol=1e-4)


def test_cached_graph_is_not_used_for_modified_weights(tiny_checkpoint_dir, cache, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint_dir, folder)
    Segmenter.load(folder / "tiny_dice.json", device="cpu", backend="onnx")
    weights = folder / "tiny_dice.safetensors"
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 1
    weights.write_bytes(bytes(payload))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        Segmenter.load(folder / "tiny_dice.json", device="cpu", backend="onnx")


def test_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert backends.uses_onnx(cpu, "auto") and backends.uses_onnx(cpu, "onnx")
    assert not backends.uses_onnx(cpu, "torch")
    assert not backends.uses_onnx(torch.device("cuda"), "auto")  # GPUs keep torch
    monkeypatch.setenv(backends.BACKEND_ENV, "Torch ")
    assert backends.configured_backend() == "torch"
    monkeypatch.setenv(backends.BACKEND_ENV, "tensorrt")
    with pytest.raises(ValueError, match=f"{backends.BACKEND_ENV} must be one of auto, torch, onnx"):
        backends.configured_backend()
    with pytest.raises(ValueError, match="backend must be one of"):
        Segmenter.load("anything", device="cpu", backend="jax")
    with pytest.raises(ValueError, match="64 lower-case hex"):
        backends.graph_path("../../etc/passwd")


def test_cli_refuses_a_bad_backend_value(tmp_path):
    env = {**os.environ, backends.BACKEND_ENV: "fast"}
    done = subprocess.run([sys.executable, "-m", "napari_segloss.cli", "predict", str(tmp_path / "x.png")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and backends.BACKEND_ENV in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_process_with_a_cached_graph_never_imports_smp(tiny_checkpoint_dir, cache):
    """Start-up: the expensive imports (smp -> timm -> torchvision -> torch._dynamo) are skipped."""
    card_path = tiny_checkpoint_dir / "tiny_dice.json"
    image = _scan((64, 64))
    expected = predict(image, Segmenter.load(card_path, device="cpu", backend="onnx"), resample=False).probability
    code = (
        "import sys, json, numpy as np\n"
        "from napari_segloss.inference import predict\n"
        f"rng = np.random.default_rng(0)\n"
        f"image = np.clip(500 + 300 * rng.standard_normal((64, 64)), 0, 4095).astype(np.uint16)\n"
        f"p = predict(image, {str(card_path)!r}, device='cpu', resample=False).probability\n"
        "print(json.dumps({'smp': 'segmentation_models_pytorch' in sys.modules, 'timm': 'timm' in sys.modules,\n"
        "                  'sum': float(p.astype(np.float64).sum())}))\n"
    )
    env = {**os.environ, backends.BACKEND_ENV: "auto", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["smp"] is False and report["timm"] is False
    assert report["sum"] == pytest.approx(float(expected.astype(np.float64).sum()), rel=1e-6)


def test_bundled_checkpoint_onnx_is_as_close_to_float64_as_torch(cache):
    """The shipped network's logits reach ~100, so float32 itself is ~1e-4 from the exact result
    at 512²: ONNX Runtime must stay within 2e-4 of torch (each is float32 noise away from the exact
    result, on either side) and no further from a float64 torch run than float32 torch is
    (measured on the real ``dice`` card: ONNX 5.0e-5 vs torch 7.1e-5 from float64 and 1.0e-4 from
    each other at 512², 2.4e-5 vs 2.3e-5 at 256²)."""
    import copy

    from napari_segloss.checkpoints import list_checkpoints
    from napari_segloss.data import generate_slice
    from napari_segloss.paths import weights_dir

    bundled = weights_dir() / "dice.json"
    if not bundled.is_file() or not any(info.name == "dice" for info in list_checkpoints()):
        pytest.skip("no bundled dice checkpoint")
    onnx = Segmenter.load(bundled, device="cpu", backend="onnx")
    eager = Segmenter.load(bundled, device="cpu", backend="torch")
    exact = copy.deepcopy(eager.model).double().eval()
    for size, seed in ((256, 0), (512, 1)):
        x = eager.prepare(generate_slice(seed, size).image)[0]
        with torch.inference_mode():
            want64 = torch.sigmoid(exact(torch.from_numpy(x).double())).numpy()
        got = torch.sigmoid(torch.from_numpy(onnx.logits(x))).numpy().astype(np.float64)
        ref = torch.sigmoid(torch.from_numpy(eager.logits(x))).numpy().astype(np.float64)
        assert np.abs(got - ref).max() <= 2e-4
        assert np.abs(got - want64[:, 0]).max() <= max(1e-5, 1.5 * np.abs(ref - want64[:, 0]).max())


def test_reused_backends_are_bounded(tiny_checkpoint_dir, cache, monkeypatch):
    monkeypatch.setattr(backends, "MAX_BACKENDS", 2)
    kept = [Segmenter.load(tiny_checkpoint_dir / f"{name}.json", device="cpu", backend="onnx")
            for name in ("tiny_dice", "tiny_focal", "tiny_bce")]
    assert list(backends._BACKENDS) == [str(s.backend.path) for s in kept[1:]]  # the oldest dropped
    assert kept[0].backend(np.zeros((1, 1, 64, 64), np.float32)).shape == (1, 1, 64, 64)  # still usable


def test_one_export_per_architecture(tiny_checkpoint_dir, cache, monkeypatch):
    """The second checkpoint of an architecture gets its graph from the template and its own
    safetensors tensors: no export, no torch model."""
    first = Segmenter.load(tiny_checkpoint_dir / "tiny_dice.json", device="cpu", backend="onnx")
    card = first.card
    assert backends.template_path(card.architecture, card.input_channels).is_file()
    exports = []
    monkeypatch.setattr(backends, "export", lambda *a, **k: exports.append(a))
    second = Segmenter.load(tiny_checkpoint_dir / "tiny_focal.json", device="cpu", backend="onnx")
    assert exports == [] and second._model is None
    image = _scan((48, 80), 5)
    eager = Segmenter.load(tiny_checkpoint_dir / "tiny_focal.json", device="cpu", backend="torch")
    np.testing.assert_allclose(predict(image, second, resample=False).probability,
                               predict(image, eager, resample=False).probability, atol=1e-4, rtol=0)
    assert not np.allclose(predict(image, first, resample=False).probability,
                           predict(image, second, resample=False).probability, atol=1e-3)  # its own weights


def test_a_failing_export_falls_back_to_torch_under_auto(tiny_checkpoint_dir, cache, monkeypatch):
    """A torch without the (deprecated) TorchScript exporter, say: ``auto`` warns and runs torch,
    with torch's probabilities; an explicit ``onnx`` reports the failure."""
    def no_exporter(*args, **kwargs):
        raise RuntimeError("torch.onnx.export was removed")

    monkeypatch.setattr(backends, "export", no_exporter)
    card = tiny_checkpoint_dir / "tiny_dice.json"
    with pytest.warns(RuntimeWarning, match="ONNX Runtime backend is unavailable.*removed.*running torch"):
        fallback = Segmenter.load(card, device="cpu", backend="auto")
    assert fallback.backend is None
    image = _scan((48, 64), 3)
    eager = Segmenter.load(card, device="cpu", backend="torch")
    np.testing.assert_array_equal(predict(image, fallback, resample=False).probability,
                                  predict(image, eager, resample=False).probability)
    with pytest.raises(RuntimeError, match="removed"):
        Segmenter.load(card, device="cpu", backend="onnx")


def test_a_template_from_an_untrained_network_serves_a_trained_one(tiny_checkpoint_dir, cache, tmp_path):
    """The template is exported once per architecture from whichever checkpoint comes first, here
    a freshly initialised one (every BatchNorm all ones/zeros, which the exporter would merge into
    one initializer); a trained checkpoint's graph written from it still agrees with torch."""
    from napari_segloss.checkpoints import ModelCard, save_checkpoint
    from napari_segloss.models import DEFAULT_ARCHITECTURE, build_model

    Segmenter.load(tiny_checkpoint_dir / "tiny_dice.json", device="cpu", backend="onnx")  # writes the template
    torch.manual_seed(5)
    trained = build_model(DEFAULT_ARCHITECTURE)
    with torch.no_grad():
        for module in trained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(-1.0, 1.0)  # negative scales: a merged variance would be NaN
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.2, 2.0)
    save_checkpoint(trained, ModelCard(name="trained_like", loss="dice", family="region", patch_size=(64, 64)),
                    tmp_path)
    image = _scan((64, 64), seed=3)
    onnx = Segmenter.load(tmp_path / "trained_like.json", device="cpu", backend="onnx")
    eager = Segmenter.load(tmp_path / "trained_like.json", device="cpu", backend="torch")
    got = predict(image, onnx, resample=False).probability
    want = predict(image, eager, resample=False).probability
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_a_template_with_merged_initializers_is_exported_again(tiny_checkpoint_dir, cache):
    """A template cached by an older export (initializers merged) is rejected and replaced."""
    import onnx

    card = read_card(tiny_checkpoint_dir / "tiny_focal.json")
    Segmenter.load(tiny_checkpoint_dir / "tiny_focal.json", device="cpu", backend="onnx")
    template = backends.template_path(card.architecture, card.input_channels)
    graph = onnx.load(str(template))
    dropped = graph.graph.initializer.pop()  # as if merged into another: its name no longer exists
    onnx.save(graph, str(template))
    backends.graph_path(card.weights_sha256).unlink()
    backends.clear_sessions()
    image = _scan((64, 64))
    got = predict(image, Segmenter.load(tiny_checkpoint_dir / "tiny_focal.json", device="cpu", backend="onnx"),
                  resample=False).probability
    want = predict(image, Segmenter.load(tiny_checkpoint_dir / "tiny_focal.json", device="cpu", backend="torch"),
                   resample=False).probability
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert dropped.name in {i.name for i in onnx.load(str(template)).graph.initializer}
