"""The CPU backend of :class:`napari_segloss.inference.Segmenter`: the network as an ONNX graph
run by ONNX Runtime.

On the CPU the exported graph is 2-2.5x faster than torch eager at one thread, and a process
that finds the graph cached never imports segmentation_models_pytorch/timm/torchvision (several
seconds of start-up); ``benchmarks/bench_backends.py`` measures it, ``benchmarks/README.md``
records it. Torch stays the backend on GPUs and for training, fine-tuning and gradients.

The graph is derived data, never the source of truth. Once per architecture the torch network is
exported (``torch.onnx.export`` without constant folding, so the graph's initializers keep the
state dict's names) into a template, ``onnx/arch-<sha256 of the architecture>-v<EXPORT_VERSION>.onnx``
under :func:`napari_segloss.paths.user_cache_dir`; a checkpoint's graph,
``onnx/<weights sha256>-v<EXPORT_VERSION>.onnx``, is that template with its initializers replaced
by the checkpoint's safetensors tensors (20 ms, no torch model). A graph is a protobuf file (no
code runs when it is loaded); it is used only for a card whose weights file still has the sha256
the card records (checked on every load), and a damaged or unreadable graph is written again.

``NAPARI_SEGLOSS_BACKEND`` chooses: ``auto`` (default: ONNX Runtime on the CPU when it is
installed, else torch), ``torch``, or ``onnx`` (ONNX Runtime on the CPU, an error where it is not
installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloss.paths import user_cache_dir

BACKEND_ENV = "NAPARI_SEGLOSS_BACKEND"
#: the values :data:`BACKEND_ENV` (and ``Segmenter.load(backend=...)``) accept
BACKENDS = ("auto", "torch", "onnx")
#: part of every cached graph's name: bump it when the export settings below change
EXPORT_VERSION = 3
#: ONNX operator set of the exported graphs
OPSET = 17
#: side of the square example input the graph is traced with (height, width and batch stay dynamic)
_TRACE_SIZE = 64


def configured_backend(choice: str | None = None) -> str:
    """``choice``, else :data:`BACKEND_ENV`, else ``"auto"``; checked against :data:`BACKENDS`.

    Raises:
        ValueError: an unknown value (the message names the variable and the choices).
    """
    text = (choice if choice is not None else os.environ.get(BACKEND_ENV, "")).strip().lower() or "auto"
    if text not in BACKENDS:
        where = "backend" if choice is not None else BACKEND_ENV
        raise ValueError(f"{where} must be one of {', '.join(BACKENDS)}, got {text!r}")
    return text


def onnx_available() -> bool:
    """Whether ONNX Runtime can be imported (without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def uses_onnx(device: torch.device, choice: str | None = None) -> bool:
    """Whether a :class:`~napari_segloss.inference.Segmenter` on ``device`` runs ONNX Runtime.

    Only on the CPU: ``auto`` when ONNX Runtime is installed, ``onnx`` always (an error without
    it), ``torch`` never. Raises ``ValueError`` for a bad choice or ``onnx`` without ONNX Runtime.
    """
    backend = configured_backend(choice)
    if backend == "onnx" and not onnx_available():
        raise ValueError(f"backend 'onnx' needs the onnxruntime package (pip install onnxruntime); "
                         f"set {BACKEND_ENV}=torch to run without it")
    return torch.device(device).type == "cpu" and backend != "torch" and onnx_available()


def graph_path(weights_sha256: str) -> Path:
    """Where the ONNX graph of the weights with this sha256 is cached."""
    if len(weights_sha256) != 64 or any(c not in "0123456789abcdef" for c in weights_sha256):
        raise ValueError(f"weights_sha256 must be 64 lower-case hex digits, got {weights_sha256!r}")
    return user_cache_dir() / "onnx" / f"{weights_sha256}-v{EXPORT_VERSION}.onnx"


def _signature(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


_VERIFIED: dict[tuple, Any] = {}
_VERIFIED_LOCK = threading.Lock()


def verified_card(card_path: Path, weights_path: Path) -> Any:
    """The card at ``card_path`` when its graph (or its architecture's template) is cached and ``weights_path`` is a safetensors
    file with the sha256 the card records, else None (the caller loads through torch, which
    exports the graph or reports the bad weights).

    Remembered per (card, weights) file identity (inode, mtime, size): a repeated call on
    unchanged files reads and hashes nothing.
    """
    from napari_segloss.checkpoints import read_card

    card_path, weights_path = Path(card_path), Path(weights_path)
    if weights_path.suffix.lower() != ".safetensors":
        return None
    try:
        key = (str(card_path), _signature(card_path), str(weights_path), _signature(weights_path))
    except OSError:
        return None
    with _VERIFIED_LOCK:
        card = _VERIFIED.get(key)
    if card is None:
        card = read_card(card_path)
        try:
            digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        except OSError:
            return None
        if not card.weights_sha256 or digest != card.weights_sha256:
            return None
        with _VERIFIED_LOCK:
            if len(_VERIFIED) >= 1024:
                _VERIFIED.clear()
            _VERIFIED[key] = card
    cached = cached_graph(card.weights_sha256) or template_path(card.architecture, card.input_channels).is_file()
    return card if cached else None


def template_path(architecture: Mapping[str, Any], channels: int) -> Path:
    """Where the template graph of an architecture (a card's ``architecture`` dict) is cached."""
    text = json.dumps({"architecture": dict(architecture), "channels": int(channels)}, sort_keys=True)
    return user_cache_dir() / "onnx" / f"arch-{hashlib.sha256(text.encode()).hexdigest()}-v{EXPORT_VERSION}.onnx"


def export(model: torch.nn.Module, path: Path, channels: int) -> Path:
    """Write ``model`` (float32 input ``(B, channels, H, W)``, H and W multiples of 32, to
    ``(B, 1, H, W)`` logits) as an ONNX graph at ``path`` atomically; returns ``path``.

    The export runs on a float32 CPU copy in eval mode (the model itself is untouched) whose
    floating-point tensors are distinct placeholders: the exporter merges initializers of equal
    value (a freshly initialised network's BatchNorm weights, variances, biases and means are
    all ones or zeros), and a merged one would give every layer it stands for the first layer's
    tensor once :func:`write_graph` fills it in. Batch, height and width are dynamic; no constant
    folding, so every initializer is a state-dict entry of the same name. ONNX Runtime folds and
    fuses (Conv + BatchNorm) when it loads the graph.
    """
    import copy

    import onnx

    net = copy.deepcopy(model).float().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if torch.is_floating_point(tensor):  # positive, so a placeholder variance stays a variance
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    example = torch.zeros(1, channels, _TRACE_SIZE, _TRACE_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(net, (example,), tmp, input_names=["x"], output_names=["logits"], opset_version=OPSET,
                              dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"},
                                            "logits": {0: "batch", 2: "height", 3: "width"}},
                              do_constant_folding=False, dynamo=False)
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_graph(template: Path, weights_path: Path, weights_sha256: str, path: Path) -> Path:
    """Write the graph of the safetensors weights at ``weights_path`` (which must have
    ``weights_sha256``) to ``path`` atomically: ``template`` with every initializer replaced by
    the state-dict tensor of its name (float32 as in the template). Returns ``path``.

    Raises ``ValueError`` when the weights changed, or a tensor is missing or of another shape
    (the template belongs to another architecture).
    """
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load as load_safetensors

    payload = Path(weights_path).read_bytes()
    if hashlib.sha256(payload).hexdigest() != weights_sha256:
        raise ValueError(f"{weights_path}: the weights changed while their graph was written")
    state = load_safetensors(payload)
    graph = onnx.load(str(template))
    names = {initializer.name for initializer in graph.graph.initializer}
    unmatched = sorted(k for k, v in state.items() if v.dtype.kind == "f" and k not in names)
    if unmatched:  # e.g. a template exported before placeholders: merged initializers
        raise ValueError(f"{template}: no initializer for {len(unmatched)} weight tensor(s), e.g. {unmatched[0]!r}")
    for initializer in graph.graph.initializer:
        old = numpy_helper.to_array(initializer)
        new = state.get(initializer.name)
        if new is None or new.shape != old.shape:
            raise ValueError(f"{template}: initializer {initializer.name!r} {old.shape} has no match in {weights_path}")
        initializer.CopyFrom(numpy_helper.from_array(new.astype(old.dtype), initializer.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(graph.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class OnnxBackend:
    """Runs one cached ONNX graph with ONNX Runtime's CPU provider.

    ``backend(x)`` maps float32 ``(B, C, H, W)`` (H, W multiples of 32) to float32
    ``(B, 1, H, W)`` logits. The thread count follows torch's (``torch.get_num_threads()`` at
    call time, as :mod:`napari_segloss.threads` sets it): one session per count.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._session(torch.get_num_threads())  # a damaged file fails here, not on the first image

    def _session(self, threads: int) -> Any:
        with self._lock:
            if threads not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                # no arena: it kept ~24 MB per session after a 512² run (38 checkpoints: +910 MB),
                # without it +2 MB each at the same speed (measured, benchmarks/README.md)
                options.enable_cpu_mem_arena = False
                self._sessions[threads] = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        session = self._session(torch.get_num_threads())
        return session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


#: most backends kept for reuse (least recently used dropped; a Segmenter keeps its own alive)
MAX_BACKENDS = 64
_BACKENDS: OrderedDict[str, OnnxBackend] = OrderedDict()
_BACKENDS_LOCK = threading.Lock()


def onnx_backend(card: Any, weights_path: Path, model: Callable[[], torch.nn.Module]) -> OnnxBackend:
    """The ONNX Runtime backend of a checkpoint (``card``: its ModelCard; ``weights_path``: its
    sha256-checked safetensors file), shared per process.

    Loads the cached graph, or writes it from the architecture's template, exporting the
    template from ``model()`` (called only then) when it is missing or unusable.
    """
    path = graph_path(card.weights_sha256)
    with _BACKENDS_LOCK:
        if str(path) in _BACKENDS and path.is_file():
            _BACKENDS.move_to_end(str(path))
            return _BACKENDS[str(path)]
        backend = None
        if path.is_file():
            try:
                backend = OnnxBackend(path)
            except Exception:  # a truncated or damaged cache file (ORT raises its own types): export again
                backend = None
        if backend is None:
            template = template_path(card.architecture, card.input_channels)
            try:
                if not template.is_file():
                    raise ValueError("no template")
                backend = OnnxBackend(write_graph(template, weights_path, card.weights_sha256, path))
            except Exception:  # no, a damaged or another architecture's template: export it again
                export(model(), template, card.input_channels)
                backend = OnnxBackend(write_graph(template, weights_path, card.weights_sha256, path))
        _BACKENDS[str(path)] = backend
        while len(_BACKENDS) > MAX_BACKENDS:
            _BACKENDS.popitem(last=False)
        return backend


def cached_graph(weights_sha256: str) -> Path | None:
    """The cached graph's path when it exists, else None."""
    path = graph_path(weights_sha256)
    return path if path.is_file() else None


def clear_sessions() -> None:
    """Forget the loaded ONNX Runtime sessions (the cached files stay)."""
    with _BACKENDS_LOCK:
        _BACKENDS.clear()
