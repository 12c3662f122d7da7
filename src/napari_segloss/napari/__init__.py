"""The napari layer: widgets and reader/writer/sample-data hooks. The only Qt code.

:func:`activate` is the manifest's ``on_activate``: npe2 calls it once per process, when napari
first uses one of the plugin's contributions (a reader, a sample, the dock widget). Everything the
plugin does to the process as a whole happens there, and nowhere else.
"""

from __future__ import annotations

from typing import Any


def activate(context: Any = None) -> None:
    """Plugin-wide set-up, once at activation (npe2 passes its ``PluginContext``, unused).

    Keeps PyTorch from loading Triton next to the GL driver's LLVM
    (:func:`napari_segloss.napari._triton_guard.guard_triton`).
    """
    from napari_segloss.napari._triton_guard import guard_triton

    guard_triton()
