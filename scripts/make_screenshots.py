"""Screenshots of the Loss explorer in a real napari window: ``docs/widget_single.png`` (one
checkpoint with its layers and metrics) and ``docs/widget_compare.png`` (three checkpoints side by
side in grid mode with the comparison table).

Usage (no display needed)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_screenshots.py [--out docs]

Checkpoints come from the registry (``weights/`` and ``NAPARI_SEGLOSS_CHECKPOINTS``). Before the
bundled checkpoints exist, ``--train-demo DIR`` trains three small demo checkpoints (dice, focal,
bce; a reduced recipe, 5-15 minutes each on a 2-core CPU) into DIR once and uses them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEMO_LOSSES = ("dice", "focal", "bce")
WINDOW = (1600, 1000)
DOCK_WIDTH = 520


def train_demo(directory: Path) -> None:
    """Train the missing demo checkpoints into ``directory`` with a reduced recipe."""
    from napari_segloss.train import Recipe, train
    from napari_segloss.train.pretrain import Pretraining

    recipe = Recipe(pretraining=Pretraining(), epochs=8, batch=16, patch=128, n_train=192, n_val=32, n_test=32, n_volumes=0)
    for loss in DEMO_LOSSES:
        if not (directory / f"{loss}.json").is_file():
            print(f"training demo checkpoint {loss} …", flush=True)
            train(loss, out=directory, recipe=recipe, device="cpu", progress=False)


def settle(seconds: float = 0.5) -> None:
    """Let Qt process events (and napari draw) for ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait_for(widget, timeout: float = 600.0) -> None:
    """Process events until the widget's run is over."""
    end = time.monotonic() + timeout
    while widget.worker is not None and time.monotonic() < end:
        settle(0.05)
    if widget.worker is not None:
        raise TimeoutError("the run did not finish")


def focus_on_truth(viewer, truth, magnify: float) -> None:
    """Fit the view, then centre it on the ground-truth tumour and zoom in by ``magnify``."""
    import numpy as np

    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    rows, cols = np.nonzero(np.asarray(truth.data))
    camera.center = tuple(truth.data_to_world([rows.mean(), cols.mean()]))
    camera.zoom = camera.zoom * magnify


def main(argv: list[str] | None = None) -> int:
    """Write the two screenshots; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output folder (default docs/)")
    parser.add_argument("--train-demo", type=Path, metavar="DIR",
                        help="train small demo checkpoints (dice, focal, bce) into DIR if missing and use them")
    args = parser.parse_args(argv)
    if args.train_demo:
        args.train_demo.mkdir(parents=True, exist_ok=True)
        train_demo(args.train_demo)
        os.environ["NAPARI_SEGLOSS_CHECKPOINTS"] = os.pathsep.join(
            p for p in (str(args.train_demo), os.environ.get("NAPARI_SEGLOSS_CHECKPOINTS", "")) if p)

    import napari
    from qtpy.QtCore import Qt

    from napari_segloss.checkpoints import list_checkpoints

    names = [info.name for info in list_checkpoints()]
    wanted = [n for n in ("unified_focal", "dice", "focal") if n in names] or [n for n in DEMO_LOSSES if n in names] or names[:3]
    if len(wanted) < 3:
        raise SystemExit(f"need 3 checkpoints, found {names}; run `make weights` or pass --train-demo DIR")

    viewer = napari.Viewer(title="napari-segloss", show=True)
    viewer.window._qt_window.resize(*WINDOW)
    viewer.open_sample("napari-segloss", "brain_mri_2d")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-segloss", "Loss explorer")
    settle(0.5)
    viewer.window._qt_window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    image, truth = widget.inputs.image(), widget.inputs.truth()
    args.out.mkdir(parents=True, exist_ok=True)

    widget.run_tab.combo.select(wanted[0])
    widget.run_single()
    wait_for(widget)
    truth.visible = False
    focus_on_truth(viewer, truth, magnify=1.4)
    settle(1.0)
    viewer.screenshot(str(args.out / "widget_single.png"), canvas_only=False, flash=False)

    widget.show_page(widget.compare_tab)
    widget.compare_tab.checklist.set_checked(wanted)
    widget.run_compare()
    wait_for(widget)
    focus_on_truth(viewer, truth, magnify=1.1)
    settle(1.0)
    viewer.screenshot(str(args.out / "widget_compare.png"), canvas_only=False, flash=False)
    print(f"saved {args.out / 'widget_single.png'} and {args.out / 'widget_compare.png'}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
