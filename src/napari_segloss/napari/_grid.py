"""The side-by-side grid of a comparison: one viewbox per compared checkpoint (a view of the image
under that checkpoint's result layers) and one for the agreement layers.

Layout (napari >= 0.6 semantics: hidden layers take no viewbox): the compared layers are moved to
the top of the layer list as equal-sized groups, one per checkpoint, each with a view of the image
at its bottom, then the agreement group; ``grid.stride = -group size`` packs the layer list from
the top, so every group lands in its own viewbox; all other layers are hidden while the grid is on
and shown again when it is turned off (:func:`arrange_grid`, :func:`restore_grid`).
:class:`GridView` builds those groups from the widget's results and removes its views again.
"""

from __future__ import annotations

from collections.abc import Sequence

import napari
from napari.layers import Image, Layer

from napari_segloss.napari import _layers
from napari_segloss.napari._results import RunResult


def grid_model(viewer: napari.Viewer) -> object:
    """The viewer's grid model (``viewer.canvas.grid`` since napari 0.9, ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def arrange_grid(viewer: napari.Viewer, groups: Sequence[Sequence[Layer]]) -> list[Layer]:
    """Show each group of layers in its own grid viewbox, ``groups[0]`` top left.

    Every group but the last must have the same length (the last may be shorter). Within a group,
    layers are stacked in the given order (first = bottom). Layers outside the groups are hidden.
    Returns the layers this hid (to pass to :func:`restore_grid`).
    """
    size = len(groups[0])
    if any(len(group) != size for group in groups[:-1]) or len(groups[-1]) > size:
        raise ValueError("every grid group but the last must have the same length, the last no more")
    members = {id(_unwrap(layer)) for group in groups for layer in group}
    hidden = [layer for layer in viewer.layers if id(_unwrap(layer)) not in members and layer.visible]
    for layer in hidden:
        layer.visible = False
    for group in reversed(groups):  # the last group ends up lowest, the first at the top
        for layer in group:
            viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
    grid = grid_model(viewer)
    grid.stride = -size
    grid.shape = (-1, -1)
    if hasattr(grid, "spacing"):
        grid.spacing = 6
    grid.enabled = True
    return hidden


def _unwrap(layer: Layer) -> Layer:
    """The layer behind napari's plugin proxy (proxies of one layer are not identical)."""
    return getattr(layer, "__wrapped__", layer)


def restore_grid(viewer: napari.Viewer, hidden: Sequence[Layer]) -> None:
    """Turn the grid off and show again the layers :func:`arrange_grid` hid (those still present)."""
    grid = grid_model(viewer)
    grid.enabled = False
    grid.stride = 1
    for layer in hidden:
        if layer in viewer.layers:
            layer.visible = True


class GridView:
    """The widget's side-by-side view of one comparison (at most one at a time).

    Args:
        viewer: the napari viewer whose grid and layers it arranges.
    """

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self._hidden: list[Layer] | None = None  # what arrange_grid hid; None while the grid is off

    @property
    def active(self) -> bool:
        """Whether the grid is on."""
        return self._hidden is not None

    def enter(self, source: Image, compared: Sequence[RunResult]) -> None:
        """Side by side: one viewbox per result of ``compared`` (image view + its result layers,
        the roles every one of them has), then one for the agreement layers."""
        self.leave()
        if not compared:
            return
        key = _layers.source_key(source)
        found = {r.checkpoint: {role: _layers.find(self.viewer, key, r.checkpoint, role)
                                for role in _layers.CHECKPOINT_ROLES} for r in compared}
        roles = [role for role in _layers.CHECKPOINT_ROLES if all(f[role] is not None for f in found.values())]
        groups = [[self._view(source, r.checkpoint, r.card.loss), *(found[r.checkpoint][role] for role in roles)]
                  for r in compared]
        shared = [_layers.find(self.viewer, key, _layers.ALL_CHECKPOINTS, role) for role in _layers.COMPARE_ROLES]
        shared = [layer for layer in shared if layer is not None]
        view = self._view(source, _layers.ALL_CHECKPOINTS, f"agreement of {len(compared)}")
        for layer in shared:
            layer.visible = True
        groups.append([view, *shared])
        for group in groups:
            _show_name(group[0])
        self._hidden = arrange_grid(self.viewer, groups)
        self.viewer.reset_view()

    def leave(self) -> None:
        """Back to one view: remove the image views, hide the agreement layers, show the hidden layers again."""
        if self._hidden is None:
            return
        views = [layer for layer in _layers.tagged(self.viewer) if _layers.tag_of(layer).get("role") == _layers.VIEW_ROLE]
        _layers.remove(self.viewer, views)
        for layer in _layers.tagged(self.viewer):
            if _layers.tag_of(layer).get("role") in _layers.COMPARE_ROLES:
                layer.visible = False
        restore_grid(self.viewer, self._hidden)
        self._hidden = None
        self.viewer.reset_view()

    def _view(self, source: Image, checkpoint: str, name: str) -> Image:
        """A view of the source image for one viewbox (shares the data; removed with the grid).
        Its name (the loss) labels the viewbox."""
        view = Image(
            source.data, name=_layers.free_name(self.viewer, name), rgb=source.rgb,
            colormap=source.colormap, contrast_limits=source.contrast_limits, gamma=source.gamma,
            metadata={_layers.TAG: {"source": _layers.source_key(source), "checkpoint": checkpoint,
                                    "role": _layers.VIEW_ROLE}},
            **_layers.geometry(source),
        )
        self.viewer.layers.append(view)
        return view


def _show_name(layer: Layer) -> None:
    """Show the layer's name in its grid viewbox (napari >= 0.6 has per-layer name overlays)."""
    overlay = getattr(layer, "name_overlay", None)
    if overlay is not None:
        overlay.visible = True
