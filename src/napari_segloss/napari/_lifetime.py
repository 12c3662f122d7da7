"""Tear a dock widget down when napari drops it, which never calls its ``closeEvent``.

napari's ``remove_dock_widget`` only takes the widget out of its dock (its parent becomes None)
and ``viewer.close()`` deletes it with the window (Qt's ``destroyed``). In both cases a running
job would go on, temporary folders would stay and the viewer's events would keep calling into
the dropped widget. :class:`Lifetime` watches for both, runs the widget's clean-ups once (cancel
jobs, remove folders: plain Python, safe after Qt deleted the widget) and disconnects every
napari event callback bound to an object of the widget's tree.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


class Lifetime(QObject):
    """Watches ``widget`` (docked in ``viewer``'s window) and tears it down once when napari drops it.

    Args:
        widget: the dock widget; its tree is collected when :meth:`track` is called (after it is built).
        viewer: the viewer whose events the tree connects to.
    """

    def __init__(self, widget: QWidget, viewer: Any) -> None:
        super().__init__()  # no Qt parent: it outlives the widget's C++ object
        self._viewer = weakref.ref(viewer)
        self._owners = _Owners()
        self._cleanups: list[Callable[[], None]] = []
        self._docked = False
        self.closed = False
        widget.installEventFilter(self)
        widget.destroyed.connect(self._on_destroyed)
        self._widget = widget

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup()`` at teardown (it must not call Qt methods: the widget may be deleted)."""
        self._cleanups.append(cleanup)

    def track(self) -> None:
        """Remember the widget and its current children as owners of event callbacks."""
        self._owners.add(self._widget, *self._widget.findChildren(QObject))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.ParentChange and watched is self._widget:
            if self._widget.parent() is not None:
                self._docked = True
            elif self._docked:  # taken out of its dock: napari's remove_dock_widget
                self.close()
        return False

    def _on_destroyed(self, *_: object) -> None:
        self.close(alive=False)

    def close(self, *, alive: bool = True) -> None:
        """Tear down once: clean-ups, then disconnect the tree's napari callbacks."""
        if self.closed:
            return
        self.closed = True
        if alive:
            self.track()  # children added since construction
            self._widget.removeEventFilter(self)
        for cleanup in self._cleanups:
            cleanup()
        viewer = self._viewer()
        if viewer is not None:
            disconnect_owned(viewer, self._owners)
        self._widget = None  # type: ignore[assignment]


class _Owners:
    """Objects (by identity, weakly referenced) whose bound methods count as the widget's callbacks."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}

    def add(self, *objects: object) -> None:
        for obj in objects:
            self._refs[id(obj)] = weakref.ref(obj)

    def __contains__(self, obj: object) -> bool:
        ref = self._refs.get(id(obj))
        return ref is not None and ref() is obj


def _emitters(viewer: Any) -> Iterator[Any]:
    """Every event emitter of the viewer, its layer list, dims and layers."""
    for group in (viewer.events, viewer.layers.events, viewer.dims.events,
                  *(layer.events for layer in viewer.layers)):
        yield from group.emitters.values()


def _bound_owners(emitter: Any) -> list[tuple[object, str]]:
    """``(owner, method name)`` of each method callback of a napari ``emitter`` (stored weakly)."""
    found = []
    for callback in emitter.callbacks:
        if isinstance(callback, tuple) and isinstance(callback[0], weakref.ref):
            owner = callback[0]()
            if owner is not None:
                found.append((owner, callback[1]))
    return found


def disconnect_owned(viewer: Any, owners: _Owners) -> None:
    """Disconnect from ``viewer``'s events every method callback bound to one of ``owners``."""
    for emitter in _emitters(viewer):
        for owner, _ in _bound_owners(emitter):
            if owner in owners:
                emitter.disconnect(owner)


def owned_callbacks(viewer: Any, owners: _Owners) -> list[str]:
    """``"<emitter>: <owner class>.<method>"`` for each callback of ``viewer`` bound to ``owners`` (tests)."""
    return [f"{type(owner).__name__}.{name}" for emitter in _emitters(viewer)
            for owner, name in _bound_owners(emitter) if owner in owners]
