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


def validate_architecture(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """Check an architecture dict without building it; return a plain copy.

    Raises ``ValueError`` naming the problem: not a mapping, missing or unknown ``arch``,
    pretrained ``encoder_weights`` (they would need the network), ``classes`` other than 1.
    """
    import segmentation_models_pytorch as smp

    if not isinstance(architecture, Mapping):
        raise ValueError(f"architecture must be a mapping, got {type(architecture).__name__}")
    arch = dict(architecture)
    name = arch.get("arch")
    valid = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if not isinstance(name, str) or name.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ValueError(f"architecture 'arch' must be one of {valid}, got {name!r}")
    if arch.get("encoder_weights") is not None:
        raise ValueError(
            f"architecture encoder_weights must be null (weights come from the checkpoint), "
            f"got {arch['encoder_weights']!r}"
        )
    for key in ("in_channels", "classes"):
        value = arch.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"architecture {key} must be a positive integer, got {value!r}")
    if arch["classes"] != 1:
        raise ValueError(f"architecture classes must be 1 (one foreground logit), got {arch['classes']}")
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
