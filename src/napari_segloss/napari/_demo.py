"""`napari-segloss demo`: a viewer with the synthetic sample scan and the Loss explorer docked."""

from __future__ import annotations

import napari

PLUGIN = "napari-segloss"
SAMPLE_KEYS = {2: "brain_mri_2d", 3: "brain_mri_3d"}


def open_demo(dims: int = 2, *, show: bool = True) -> napari.Viewer:
    """Open a viewer with the sample scan (2D slice or 3D volume) and the plugin's dock widget.

    Args:
        dims: 2 for the 256x256 slice sample, 3 for the 64x256x256 volume sample.
        show: whether to show the window (tests pass ``False``).
    """
    viewer = napari.Viewer(title="napari-segloss demo", show=show)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, SAMPLE_KEYS[dims])
    viewer.window.add_plugin_dock_widget(PLUGIN, "Loss explorer")
    return viewer


def run_demo(dims: int = 2, screenshot: str | None = None) -> int:
    """``napari-segloss demo``: run the viewer, or save a screenshot of the whole window and exit."""
    viewer = open_demo(dims=dims)
    if screenshot:
        from qtpy.QtWidgets import QApplication

        for _ in range(20):
            QApplication.processEvents()
        viewer.screenshot(screenshot, canvas_only=False, flash=False)
        print(f"saved screenshot to {screenshot}")
        viewer.close()
        return 0
    napari.run()
    return 0
