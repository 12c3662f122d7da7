"""napari-segloss: see what the choice of training loss does to a segmentation.

The package is a headless core (no Qt or napari import outside ``napari_segloss.napari``):
``losses`` (the loss catalogue), ``models``, ``checkpoints``, ``inference``, ``metrics``,
``overlays``, ``io``, ``data`` (synthetic brain MRI), ``train``, ``batch`` and ``cli``.
"""

__version__ = "0.1.0"

from napari_segloss.paths import weights_dir

__all__ = ["__version__", "weights_dir"]
