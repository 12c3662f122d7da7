"""Overlay arrays for a prediction (ready to become napari layers) and RGB renderings for files.

Layers (no napari import here; the widget wraps these arrays):
  * :func:`heatmap`: float32 probability in [0, 1] for an Image layer with a colormap;
  * :func:`contour_polygons`: sub-pixel outlines for a Shapes layer (``shape_type="path"``);
  * :func:`contour_labels`: a thin uint8 outline for a Labels layer;
  * :func:`difference_map`: uint8 labels 1 = TP, 2 = FP, 3 = FN, coloured by
    :data:`DIFFERENCE_COLORS`;
  * :func:`uncertainty`: float32 per-pixel spread of several checkpoints' probabilities.
Files: :func:`render_heatmap`, :func:`render_contours`, :func:`render_difference` return uint8
RGB, ``(H, W, 3)`` for 2D input and ``(Z, H, W, 3)`` for 3D (rendered slice by slice).

Colours (the one place they are defined) come from the Okabe-Ito palette (Okabe & Ito 2008,
"Color Universal Design"), chosen so that each set stays distinguishable under protanopia,
deuteranopia and tritanopia (tests check CIEDE2000 differences under simulated colour vision
deficiency):

=============  ==============  ===============  =====================================
overlay        entry           colour           sRGB
=============  ==============  ===============  =====================================
difference     1 TP            bluish green     (0, 158, 115)
difference     2 FP            vermillion       (213, 94, 0)
difference     3 FN            sky blue         (86, 180, 233)
contours       prediction      orange           (230, 159, 0)
contours       truth           sky blue         (86, 180, 233)
heatmap        probability     matplotlib "inferno" (perceptually uniform, monotone lightness)
=============  ==============  ===============  =====================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from matplotlib import colormaps
from scipy import ndimage
from skimage import measure

from napari_segloss.metrics import check_masks
from napari_segloss.preprocess import DEFAULT_NORMALIZATION, normalize, to_grayscale

RGBA = tuple[float, float, float, float]


def _rgba(r: int, g: int, b: int) -> RGBA:
    return (r / 255.0, g / 255.0, b / 255.0, 1.0)


#: label value of :func:`difference_map` -> RGBA in [0, 1] (Okabe-Ito; see the module docstring)
DIFFERENCE_COLORS: dict[int, RGBA] = {1: _rgba(0, 158, 115), 2: _rgba(213, 94, 0), 3: _rgba(86, 180, 233)}
#: label value of :func:`difference_map` -> readable name
DIFFERENCE_NAMES: dict[int, str] = {1: "true positive", 2: "false positive", 3: "false negative"}
#: outline colours of :func:`render_contours` (RGBA in [0, 1])
CONTOUR_COLORS: dict[str, RGBA] = {"prediction": _rgba(230, 159, 0), "truth": _rgba(86, 180, 233)}
#: colormap of the probability heatmap
HEATMAP_COLORMAP = "inferno"


def heatmap(probability: np.ndarray) -> np.ndarray:
    """Probability map as float32 in [0, 1], same shape; NaN -> 0, out-of-range values clipped.

    Takes the model's probabilities (``Prediction.probability``), not a thresholded mask: a
    bool array raises ``TypeError``, as does any non-float array.
    """
    arr = np.asarray(probability)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"heatmap needs a floating-point probability map, got dtype {arr.dtype}")
    out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


#: measures of :func:`uncertainty`
UNCERTAINTY_MEASURES = ("std", "entropy")


def uncertainty(probabilities: Sequence[np.ndarray], measure: str = "std") -> np.ndarray:
    """Per-pixel spread of several checkpoints' probability maps (each float, one shape), float32.

    ``"std"``: population standard deviation of the probabilities (0 = identical, at most 0.5);
    ``"entropy"``: binary entropy in bits of their mean (0 = all certain of one answer, 1 = the
    mean is 0.5, e.g. confident checkpoints that disagree half-and-half).

    Examples:
        >>> uncertainty([np.array([0.0, 1.0]), np.array([1.0, 1.0])]).tolist()
        [0.5, 0.0]
        >>> uncertainty([np.array([0.0, 1.0]), np.array([1.0, 1.0])], "entropy").tolist()
        [1.0, 0.0]
    """
    if measure not in UNCERTAINTY_MEASURES:
        raise ValueError(f"measure must be one of {UNCERTAINTY_MEASURES}, got {measure!r}")
    maps = list(probabilities)
    if len(maps) < 2:
        raise ValueError("uncertainty needs the probability maps of at least two checkpoints")
    maps = [heatmap(m) for m in maps]
    if any(m.shape != maps[0].shape for m in maps):
        raise ValueError(f"probability maps differ in shape: {sorted({m.shape for m in maps})}")
    total, squares = np.zeros(maps[0].shape), np.zeros(maps[0].shape)  # running sums: no (N, ...) stack
    for m in maps:
        total += m
        squares += np.square(m, dtype=np.float64)
    mean = total / len(maps)
    if measure == "std":
        return np.sqrt(np.clip(squares / len(maps) - mean**2, 0.0, None)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -(mean * np.log2(mean) + (1 - mean) * np.log2(1 - mean))
    return np.nan_to_num(bits, nan=0.0).astype(np.float32)


def _contour_input(array: np.ndarray) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected a 2D (H, W) or 3D (Z, H, W) array, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        return arr
    return (arr != 0).astype(np.float32)


def contour_polygons(mask: np.ndarray, *, level: float = 0.5) -> list[np.ndarray]:
    """Sub-pixel outlines of a mask (or of a probability map at ``level``), slice by slice.

    ``skimage.measure.find_contours`` at ``level`` on each 2D slice, after padding with zeros
    so that regions touching the image border still give closed outlines (first vertex = last).
    Args:
        mask: bool/integer mask (non-zero = inside) or float probability, ``(H, W)`` or
            ``(Z, H, W)``.
        level: iso-value; 0.5 traces the mask boundary half-way between inside and outside
            pixel centres.
    Returns:
        list of float64 ``(N, ndim)`` vertex arrays in data (pixel) coordinates; for 3D the
        first column is the slice index, so each array is a napari Shapes ``"path"``. Empty
        list when nothing crosses ``level``.
    """
    arr = _contour_input(mask)
    if arr.ndim == 2:
        return _slice_contours(arr, level)
    polygons = []
    for z, plane in enumerate(arr):
        for contour in _slice_contours(plane, level):
            polygons.append(np.column_stack([np.full(len(contour), float(z)), contour]))
    return polygons


def _slice_contours(plane: np.ndarray, level: float) -> list[np.ndarray]:
    outside = 0.0 if level > 0 else level - 1.0  # below level, so the padding is "outside"
    padded = np.pad(plane, 1, mode="constant", constant_values=outside)
    return [contour - 1.0 for contour in measure.find_contours(padded, level)]


def contour_labels(mask: np.ndarray) -> np.ndarray:
    """Thin outline of a mask as a uint8 label image (1 = outline, 0 = elsewhere).

    The outline is the mask's inner boundary within each 2D slice: foreground pixels with a
    4-connected background neighbour (pixels on the image border count), which makes an
    8-connected line one pixel wide. Shape ``(H, W)`` or ``(Z, H, W)`` as the input.
    """
    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"expected a 2D (H, W) or 3D (Z, H, W) mask, got shape {m.shape}")
    m = m != 0
    structure = ndimage.generate_binary_structure(2, 1)
    if m.ndim == 3:
        structure = structure[None]  # no erosion across slices
    return (m & ~ndimage.binary_erosion(m, structure=structure)).astype(np.uint8)


def difference_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Label image of agreement: 0 background (TN), 1 TP, 2 FP, 3 FN; uint8, input shape.

    Masks as for :func:`napari_segloss.metrics.check_masks` (equal shapes, 2D or 3D).
    """
    p, t = check_masks(pred, truth)
    out = np.zeros(p.shape, dtype=np.uint8)
    out[p & t] = 1
    out[p & ~t] = 2
    out[~p & t] = 3
    return out


def _grey(image: np.ndarray, spatial_shape: tuple[int, ...]) -> np.ndarray:
    """Image as float32 in [0, 1] (percentile-normalised over the whole array), spatial shape."""
    arr = np.asarray(image)
    if arr.ndim == len(spatial_shape) + 1 and arr.shape[-1] in (3, 4):
        arr = to_grayscale(arr, rgb=True)
    if arr.shape != spatial_shape:
        raise ValueError(
            f"image shape {np.shape(image)} does not match the overlay's shape {spatial_shape} "
            "(a trailing colour axis of 3 or 4 is allowed)"
        )
    return normalize(arr, DEFAULT_NORMALIZATION)


def _to_uint8(rgb: np.ndarray, out: np.ndarray) -> None:
    """Write float RGB (clipped to [0, 1]) into the uint8 array ``out``; ``rgb`` is overwritten."""
    np.clip(rgb, 0.0, 1.0, out=rgb)
    rgb *= 255.0
    np.rint(rgb, out=rgb)
    np.copyto(out, rgb, casting="unsafe")  # whole numbers in 0..255: exact


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def _render(grey: np.ndarray, paint: Callable[[np.ndarray, int], None]) -> np.ndarray:
    """Grey -> uint8 RGB slice by slice (bounded memory for volumes); ``paint(rgb, index)``
    modifies each float32 ``(H, W, 3)`` slice in place."""
    planes = grey[None] if grey.ndim == 2 else grey
    out = np.empty((*planes.shape, 3), dtype=np.uint8)
    rgb = np.empty((*planes.shape[1:], 3), dtype=np.float32)  # one buffer, reused per slice
    for z, plane in enumerate(planes):
        rgb[...] = plane[..., None]
        paint(rgb, z)
        _to_uint8(rgb, out[z])
    return out[0] if grey.ndim == 2 else out


def render_heatmap(image: np.ndarray, probability: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """Probability in the "inferno" colormap alpha-blended over the normalised grey image.

    ``rgb = (1 - alpha) * grey + alpha * inferno(probability)`` everywhere (so low
    probabilities darken, high ones glow), with the colormap sampled at 256 levels.
    Args:
        image: ``(H, W)`` / ``(Z, H, W)`` grey, or with a trailing RGB(A) axis.
        probability: float ``(H, W)`` / ``(Z, H, W)`` in [0, 1].
    Returns:
        uint8 ``(H, W, 3)`` or ``(Z, H, W, 3)``.
    """
    a = _check_alpha(alpha)
    prob = heatmap(probability)
    if prob.ndim not in (2, 3):
        raise ValueError(f"probability must be 2D or 3D, got shape {prob.shape}")
    grey = _grey(image, prob.shape)
    table = colormaps[HEATMAP_COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    weighted = a * table  # alpha applied once to the 256 colours, not to every pixel
    planes = prob[None] if prob.ndim == 2 else prob
    level = np.empty(planes.shape[1:], dtype=np.float32)

    def paint(rgb: np.ndarray, z: int) -> None:
        np.multiply(planes[z], 255.0, out=level)
        index = np.rint(level, out=level).astype(np.uint8)  # 0..255: the colour table's row
        rgb *= 1.0 - a
        rgb += weighted.take(index, axis=0)

    return _render(grey, paint)


def render_contours(image: np.ndarray, mask: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """The prediction's outline (and the ground truth's, if given) drawn over the grey image.

    Outlines are :func:`contour_labels` pixels painted opaque in :data:`CONTOUR_COLORS`; where
    both outlines meet, the prediction's is on top.
    Returns:
        uint8 ``(H, W, 3)`` or ``(Z, H, W, 3)``.
    """
    pred, gt = check_masks(mask, mask if truth is None else truth)
    outlines = [("prediction", contour_labels(pred))]
    if truth is not None:
        outlines.insert(0, ("truth", contour_labels(gt)))
    grey = _grey(image, pred.shape)
    if grey.ndim == 2:
        outlines = [(name, line[None]) for name, line in outlines]

    def paint(rgb: np.ndarray, z: int) -> None:
        for name, line in outlines:
            rgb[line[z] != 0] = CONTOUR_COLORS[name][:3]

    return _render(grey, paint)


def render_difference(image: np.ndarray, diff: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """A :func:`difference_map` in :data:`DIFFERENCE_COLORS`, alpha-blended over the grey image.

    Pixels labelled 0 stay grey. Args: ``image`` as for :func:`render_heatmap`; ``diff`` uint8
    labels in 0..3 of the image's spatial shape. Returns uint8 ``(H, W, 3)`` or ``(Z, H, W, 3)``.
    """
    a = _check_alpha(alpha)
    labels = np.asarray(diff)
    if labels.ndim not in (2, 3):
        raise ValueError(f"diff must be 2D or 3D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0 or labels.max(initial=0) > 3:
        raise ValueError("diff must be an integer label image with values 0..3 (see difference_map)")
    grey = _grey(image, labels.shape)
    table = np.zeros((4, 3), dtype=np.float32)
    for value, colour in DIFFERENCE_COLORS.items():
        table[value] = colour[:3]
    # per label: grey weight (1 for background, 1 - alpha elsewhere) and the added colour
    keep = np.array([1.0, 1.0 - a, 1.0 - a, 1.0 - a], dtype=np.float32)
    weighted = a * table
    planes = labels[None] if labels.ndim == 2 else labels

    def paint(rgb: np.ndarray, z: int) -> None:
        index = planes[z].astype(np.intp, copy=False)
        rgb *= keep.take(index)[..., None]
        rgb += weighted.take(index, axis=0)

    return _render(grey, paint)
