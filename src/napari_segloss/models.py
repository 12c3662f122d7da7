"""The segmentation network every checkpoint shares, and the choice of compute device.

A checkpoint's card stores its architecture as a plain dict (``"arch"`` plus the keyword
arguments of :func:`segmentation_models_pytorch.create_model`); :func:`build_model` turns it back
into an untrained ``torch.nn.Module`` and rejects anything it cannot build offline.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

#: the architecture of every bundled checkpoint: smp FPN on a MobileNetV3-small-minimal encoder
#: with a slim decoder (0.57 M parameters), one grey input channel, one foreground logit
DEFAULT_ARCHITECTURE: Mapping[str, Any] = MappingProxyType(
    {
        "arch": "FPN",
        "encoder_name": "timm-mobilenetv3_small_minimal_100",
        "encoder_weights": None,
        "in_channels": 1,
        "classes": 1,
        "decoder_pyramid_channels": 64,
        "decoder_segmentation_channels": 32,
    }
)

#: input height and width must be a multiple of this (the encoder's output stride)
SIZE_MULTIPLE = 32


#: what a card's architecture may say: per ``arch`` (exact smp class name), the keyword arguments
#: beyond the common ones and their checks. Only combinations built and tested here
#: (tests/test_checkpoints.py builds every one) are allowed: a card is data, and anything else
#: (``checkpoint_path``, ``tu-hf-hub:`` encoders, unknown keys) would let a JSON file make smp or
#: timm read files or contact the network.
ARCHITECTURES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "FPN": frozenset({"decoder_pyramid_channels", "decoder_segmentation_channels", "decoder_dropout"}),
        "Unet": frozenset({"decoder_channels"}),
    }
)
#: encoders a card may name (smp names; built offline with random weights, no network)
ENCODERS = ("timm-mobilenetv3_small_minimal_100", "timm-mobilenetv3_small_100", "timm-mobilenetv3_large_100")
#: keys every architecture takes
_COMMON_KEYS = frozenset({"arch", "encoder_name", "encoder_weights", "in_channels", "classes"})
#: largest channel count of a decoder layer (a card must not be able to ask for gigabytes)
MAX_DECODER_CHANNELS = 1024
#: most input channels (grey, RGB, RGBA)
MAX_IN_CHANNELS = 4


def _channels(key: str, value: Any, largest: int, multiple: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= largest or value % multiple:
        also = f", a multiple of {multiple}" if multiple > 1 else ""
        raise ValueError(f"architecture {key} must be an integer in [1, {largest}]{also}, got {value!r}")


def validate_architecture(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """Check an architecture dict against the allow-list without building it (and without
    importing smp, timm or any network library); return a plain copy.

    Raises ``ValueError`` naming the problem: not a mapping, an ``arch`` outside
    :data:`ARCHITECTURES`, an encoder outside :data:`ENCODERS`, pretrained ``encoder_weights``
    (they would need the network), a keyword the architecture does not allow, ``classes`` other
    than 1, or a channel count out of range.
    """
    if not isinstance(architecture, Mapping):
        raise ValueError(f"architecture must be a mapping, got {type(architecture).__name__}")
    arch = dict(architecture)
    name = arch.get("arch")
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"architecture 'arch' must be one of {sorted(ARCHITECTURES)}, got {name!r}")
    unknown = sorted(str(key) for key in set(arch) - _COMMON_KEYS - ARCHITECTURES[name])
    if unknown:
        allowed = sorted(_COMMON_KEYS | ARCHITECTURES[name])
        raise ValueError(f"architecture {name}: unknown or disallowed key(s) {unknown}; allowed: {allowed}")
    if arch.get("encoder_name") not in ENCODERS:
        raise ValueError(f"architecture encoder_name must be one of {list(ENCODERS)}, got {arch.get('encoder_name')!r}")
    if arch.get("encoder_weights") is not None:
        raise ValueError(
            f"architecture encoder_weights must be null (weights come from the checkpoint), "
            f"got {arch['encoder_weights']!r}"
        )
    _channels("in_channels", arch.get("in_channels"), MAX_IN_CHANNELS)
    classes = arch.get("classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes != 1:
        raise ValueError(f"architecture classes must be 1 (one foreground logit), got {classes!r}")
    if "decoder_pyramid_channels" in arch:
        _channels("decoder_pyramid_channels", arch["decoder_pyramid_channels"], MAX_DECODER_CHANNELS)
    if "decoder_segmentation_channels" in arch:  # FPN's segmentation blocks use GroupNorm(32, C)
        _channels("decoder_segmentation_channels", arch["decoder_segmentation_channels"], MAX_DECODER_CHANNELS, 32)
    if "decoder_dropout" in arch:
        value = arch["decoder_dropout"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
            raise ValueError(f"architecture decoder_dropout must be a number in [0, 1), got {value!r}")
    if "decoder_channels" in arch:
        value = arch["decoder_channels"]
        if not isinstance(value, (list, tuple)) or len(value) != 5:
            raise ValueError(f"architecture decoder_channels must be a list of 5 integers, got {value!r}")
        for item in value:
            _channels("decoder_channels", item, MAX_DECODER_CHANNELS)
        arch["decoder_channels"] = list(value)
    return arch


def build_model(architecture: Mapping[str, Any]) -> torch.nn.Module:
    """A randomly initialised model for ``architecture`` (see :data:`DEFAULT_ARCHITECTURE`).

    The model maps ``(B, in_channels, H, W)`` float input (H, W multiples of
    :data:`SIZE_MULTIPLE`) to ``(B, 1, H, W)`` logits. Invalid or unbuildable architectures raise
    ``ValueError`` with the reason (never a bare smp/timm exception).
    """
    import segmentation_models_pytorch as smp

    kwargs = validate_architecture(architecture)
    arch = kwargs.pop("arch")
    try:
        with warnings.catch_warnings():
            # smp 0.5+ deprecates the "timm-" encoder aliases; the bundled checkpoints' keys use them
            warnings.filterwarnings("ignore", message="`timm-` encoders are deprecated", category=DeprecationWarning)
            return smp.create_model(arch, **kwargs)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        reason = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "..."
        raise ValueError(f"cannot build architecture {dict(architecture)!r}: {reason}") from exc


def forward_with_features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an smp encoder-decoder model and also return the decoder output.

    Args:
        model: an smp segmentation model (``encoder``, ``decoder``, ``segmentation_head``).
        x: ``(B, in_channels, H, W)`` float input, H and W multiples of :data:`SIZE_MULTIPLE`.
    Returns:
        ``(logits, features)``: logits ``(B, 1, H, W)`` and the decoder output before the
        segmentation head, ``(B, C, H/4, W/4)`` for FPN (``C = decoder_segmentation_channels``).
    """
    if hasattr(model, "check_input_shape"):
        model.check_input_shape(x)
    features = model.decoder(model.encoder(x))
    return model.segmentation_head(features), features


def available_devices() -> list[str]:
    """Device choices on this machine, in ``"auto"`` order: ``auto``, ``cuda[:i]``, ``mps``, ``cpu``."""
    choices = ["auto"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        choices += ["cuda"] + ([f"cuda:{i}" for i in range(count)] if count > 1 else [])
    if torch.backends.mps.is_available():
        choices.append("mps")
    return choices + ["cpu"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA, then Apple MPS, then CPU; other names are checked to exist.

    Raises ``ValueError`` with the available choices for an unknown or absent device.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; available: {', '.join(available_devices())}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available; available: {', '.join(available_devices())}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device 'mps' requested but Apple MPS is not available; available: {', '.join(available_devices())}")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; available: {', '.join(available_devices())}")
    return dev
