"""`napari-segloss demo`: the main job done on the synthetic sample scan.

The viewer opens the sample with its ground truth and the Loss explorer docked, runs the default
checkpoint (result layers and metrics panel filled), then compares three checkpoints (side by
side, comparison table filled); on a machine without a display the screenshot shows that state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import napari

if TYPE_CHECKING:
    from napari_segloss.checkpoints import CheckpointInfo

PLUGIN = "napari-segloss"
SAMPLE_KEYS = {2: "brain_mri_2d", 3: "brain_mri_3d"}
#: checkpoints in the demo's comparison: the default one and the best by test Dice
COMPARED = 3
_RUN_TIMEOUT_S = 600.0


def compared_checkpoints(infos: Sequence[CheckpointInfo], default: str, count: int = COMPARED) -> list[str]:
    """The default checkpoint first, then the others with the highest test Dice (cards without
    one last), ``count`` names in all (fewer when fewer are listed)."""

    def dice(info: CheckpointInfo) -> float:
        value = info.card.test_metrics.get("dice")
        return float(value) if isinstance(value, (int, float)) else float("-inf")

    others = sorted((i for i in infos if i.name != default), key=dice, reverse=True)
    names = [default] if any(i.name == default for i in infos) else []
    return (names + [i.name for i in others])[:count]


def _wait(widget: object, what: str, timeout_s: float = _RUN_TIMEOUT_S) -> None:
    """Process Qt events until the widget's job is done (RuntimeError naming it after ``timeout_s``)."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while widget.worker is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo: the {what} did not finish within {timeout_s:.0f} s")
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(5):  # the layer and table updates queued by the last events
        QApplication.processEvents()


def run_main_job(widget: object, count: int = COMPARED) -> list[str]:
    """Run the default checkpoint, then compare it with the best others; returns the compared names.

    ``widget`` is the Loss explorer (:class:`~napari_segloss.napari._widget.LossExplorerWidget`)
    with an image (and ground truth) selected; its Compare tab is shown at the end.
    """
    from napari_segloss.checkpoints import default_checkpoint, list_checkpoints

    default = default_checkpoint().name
    widget.run_tab.combo.select(default)
    widget.run_single()
    _wait(widget, f"run of {default}")
    names = compared_checkpoints(list_checkpoints(), default, count)
    widget.compare_tab.checklist.set_checked(names)
    widget.show_page(widget.compare_tab)
    widget.run_compare()
    _wait(widget, f"comparison of {', '.join(names)}")
    return names


def open_demo(dims: int = 2, *, show: bool = True, run: bool = True) -> napari.Viewer:
    """Open a viewer with the sample scan (2D slice or 3D volume) and the plugin's dock widget.

    Args:
        dims: 2 for the 256x256 slice sample, 3 for the 64x256x256 volume sample.
        show: whether to show the window (tests pass ``False``).
        run: run the default checkpoint and a three-checkpoint comparison (:func:`run_main_job`).
    """
    viewer = napari.Viewer(title="napari-segloss demo", show=show)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, SAMPLE_KEYS[dims])
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss explorer")
    if run:
        run_main_job(widget)
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
