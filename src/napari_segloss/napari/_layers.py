"""Result layers of the Loss explorer: names, tags, styles, geometry, create-or-update.

Every layer the widget makes carries ``layer.metadata["napari_segloss_result"]`` = ``{"source":
<source layer unique_id>, "checkpoint": <checkpoint name or "*">, "role": <role>, "run": {what was
run}}``. The widget finds its layers by this tag, never by name, so renaming a layer or a user
layer with the same name never confuses it: a re-run updates the tagged layer in place, and a
new layer whose name is already taken by someone else's layer gets a ``" [2]"``-style suffix.

Every result layer copies the source layer's ``scale``, ``translate``, ``rotate``, ``shear`` and
``affine`` so it overlays the image exactly (anisotropic DICOM spacing included), and a result of
the source's spatial shape also its placement in the patient (``metadata["affine_lps"]``,
:func:`napari_segloss.io.geometry.placement`), which napari's Save Layer writes to NIfTI.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import DirectLabelColormap

from napari_segloss.io.geometry import placement
from napari_segloss.overlays import CONTOUR_COLORS, DIFFERENCE_COLORS, HEATMAP_COLORMAP

TAG = "napari_segloss_result"
#: per-checkpoint roles in stacking order (bottom to top)
CHECKPOINT_ROLES: tuple[str, ...] = ("probability", "prediction", "difference", "contour")
#: roles of the layers computed over all compared checkpoints
COMPARE_ROLES: tuple[str, ...] = ("agreement", "disagreement")
#: role of the compare-wide per-pixel spread of the checkpoints' probabilities (not in the grid:
#: it would cover the agreement map there; hidden, beside the agreement layer in the layer list)
UNCERTAINTY_ROLE = "uncertainty"
#: checkpoint value of the tag of compare-wide layers
ALL_CHECKPOINTS = "*"
#: a copy of the image under each checkpoint's results in grid mode
VIEW_ROLE = "view"
SEPARATOR = " · "

_TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
#: the widget's outline colour: Okabe-Ito yellow. The contour is drawn on top of the difference
#: map, so it must differ from all three difference colours (CIEDE2000 >= 38 against each; the
#: renderings' orange is only 22 from the false-positive vermillion).
CONTOUR_EDGE_COLOR = (240 / 255, 228 / 255, 66 / 255, 1.0)
#: disagreement region: Okabe-Ito reddish purple
DISAGREEMENT_COLOR = (204 / 255, 121 / 255, 167 / 255, 1.0)
#: perceptual and black at 0, so that additive blending leaves pixels no checkpoint calls untouched
AGREEMENT_COLORMAP = "magma"
#: perceptual, black at 0 (no spread), distinct from the agreement and heatmap colormaps
UNCERTAINTY_COLORMAP = "viridis"


def _direct(colors: Mapping[int, tuple[float, ...]]) -> DirectLabelColormap:
    return DirectLabelColormap(color_dict={None: _TRANSPARENT, 0: _TRANSPARENT, **colors})


def style(role: str, *, has_truth: bool) -> tuple[str, dict[str, Any]]:
    """``(layer type, keyword arguments)`` of a result layer of ``role``.

    Probability: Image in the perceptual heatmap colormap, additive blending, contrast 0-1,
    hidden by default. Prediction: filled Labels (hidden when a difference map shows it).
    Difference: Labels 1 TP / 2 FP / 3 FN in :data:`napari_segloss.overlays.DIFFERENCE_COLORS`.
    Contour: one-pixel outline Labels in :data:`CONTOUR_EDGE_COLOR`.
    Agreement: Image, fraction 0-1 of checkpoints calling a pixel tumour (hidden outside the
    grid). Disagreement: the outline (Labels ``contour``) of where the checkpoints differ.
    Uncertainty: Image, per-pixel standard deviation 0-0.5 of the compared probabilities (hidden).
    """
    if role == "probability":
        return "image", {"colormap": HEATMAP_COLORMAP, "blending": "additive", "contrast_limits": (0.0, 1.0),
                         "opacity": 0.8, "visible": False}
    if role == "prediction":
        return "labels", {"colormap": _direct({1: CONTOUR_COLORS["prediction"]}), "opacity": 0.5,
                          "visible": not has_truth}
    if role == "difference":
        return "labels", {"colormap": _direct(DIFFERENCE_COLORS), "opacity": 0.6}
    if role == "contour":
        return "labels", {"colormap": _direct({1: CONTOUR_EDGE_COLOR}), "opacity": 1.0}
    if role == "agreement":
        return "image", {"colormap": AGREEMENT_COLORMAP, "blending": "additive", "contrast_limits": (0.0, 1.0),
                         "opacity": 0.7, "visible": False}
    if role == UNCERTAINTY_ROLE:
        return "image", {"colormap": UNCERTAINTY_COLORMAP, "blending": "additive", "contrast_limits": (0.0, 0.5),
                         "opacity": 0.8, "visible": False}
    if role == "disagreement":
        return "labels", {"colormap": _direct({1: DISAGREEMENT_COLOR}), "opacity": 1.0, "contour": 1,
                          "visible": False}
    raise ValueError(f"unknown result role {role!r}")


def source_key(layer: Layer) -> str:
    """Stable identifier of a source layer for the lifetime of the session."""
    return str(layer.unique_id)


def tag_of(layer: Layer) -> dict[str, Any] | None:
    """The widget's tag of ``layer``, or None for a layer the widget did not make."""
    tag = layer.metadata.get(TAG) if isinstance(layer.metadata, Mapping) else None
    return tag if isinstance(tag, Mapping) and "role" in tag else None


def is_result(layer: Layer) -> bool:
    """Whether ``layer`` is one of the widget's result layers."""
    return tag_of(layer) is not None


def layer_name(image: str, label: str | None, role: str) -> str:
    """``"<image> · <loss> · <role>"`` (``"<image> · <role>"`` without a loss label)."""
    parts = [image] if label is None else [image, label]
    return SEPARATOR.join([*parts, role])


def geometry(source: Layer) -> dict[str, Any]:
    """The source layer's ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` as layer kwargs."""
    return {
        "scale": tuple(source.scale),
        "translate": tuple(source.translate),
        "rotate": np.asarray(source.rotate),
        "shear": np.asarray(source.shear),
        "affine": source.affine,
    }


def spatial_shape(layer: Image) -> tuple[int, ...]:
    """Shape of an image layer's spatial axes (without the colour axis of an RGB layer)."""
    shape = tuple(int(s) for s in layer.data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def find(viewer: napari.Viewer, source: str, checkpoint: str, role: str) -> Layer | None:
    """The tagged layer of ``(source, checkpoint, role)``, or None."""
    for layer in viewer.layers:
        tag = tag_of(layer)
        if tag and tag.get("source") == source and tag.get("checkpoint") == checkpoint and tag.get("role") == role:
            return layer
    return None


def tagged(viewer: napari.Viewer, source: str | None = None) -> Iterator[Layer]:
    """The widget's layers (of one source layer when ``source`` is given), bottom to top."""
    for layer in list(viewer.layers):
        tag = tag_of(layer)
        if tag and (source is None or tag.get("source") == source):
            yield layer


def free_name(viewer: napari.Viewer, name: str, owner: Layer | None = None) -> str:
    """``name`` if no other layer uses it, else ``"name [2]"``, ``"name [3]"``, ... (never steals a name)."""
    taken = {layer.name for layer in viewer.layers if layer is not owner}
    if name not in taken:
        return name
    n = 2
    while f"{name} [{n}]" in taken:
        n += 1
    return f"{name} [{n}]"


def upsert(
    viewer: napari.Viewer,
    source: Layer,
    *,
    checkpoint: str,
    role: str,
    name: str,
    data: np.ndarray,
    has_truth: bool,
    run: Mapping[str, Any] | None = None,
) -> Layer:
    """Create the result layer of ``(source, checkpoint, role)``, or update the existing one in place.

    Args:
        source: the image layer the result belongs to; its geometry is copied.
        checkpoint: checkpoint name (:data:`ALL_CHECKPOINTS` for compare-wide layers).
        role: one of :data:`CHECKPOINT_ROLES` or :data:`COMPARE_ROLES`.
        name: the wanted display name (a suffix is added if another layer holds it).
        data: the layer data, the source's spatial shape.
        has_truth: whether a ground truth was given (decides what is visible by default).
        run: what was run (checkpoint hash, threshold, version), stored in the tag.
    Returns:
        the layer; an existing layer keeps its name, visibility and the user's display settings.
    """
    key = source_key(source)
    layer = find(viewer, key, checkpoint, role)
    kind, kwargs = style(role, has_truth=has_truth)
    tag = {"source": key, "checkpoint": checkpoint, "role": role, "run": dict(run or {})}
    where = placement(source.metadata) if tuple(data.shape) == spatial_shape(source) else {}
    cls = Image if kind == "image" else Labels
    if isinstance(layer, cls) and tuple(layer.data.shape) == tuple(data.shape):
        layer.data = data
        layer.metadata = {**layer.metadata, **where, TAG: tag}
        for attr, value in geometry(source).items():
            setattr(layer, attr, value)
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    contour = kwargs.pop("contour", None)  # not a constructor argument of Labels
    layer = cls(data, name=free_name(viewer, name), metadata={**where, TAG: tag}, **geometry(source), **kwargs)
    if contour is not None:
        layer.contour = contour
    viewer.layers.append(layer)
    return layer


def remove(viewer: napari.Viewer, layers: list[Layer]) -> None:
    """Remove ``layers`` from the viewer (those still in it)."""
    for layer in layers:
        if layer in viewer.layers:
            viewer.layers.remove(layer)
