"""Synthetic, labelled brain MRI (T1 contrast-enhanced, with tumours) built on the MNI template.

``generate_slice`` / ``generate_volume`` make one sample from a seed, ``split_seeds`` gives the
fixed train/val/test seeds, and ``napari_segloss.data.export.write_dataset`` writes files.
"""

from napari_segloss.data.synthetic import (
    PLANES,
    SyntheticSample,
    generate_slice,
    generate_volume,
    split_seeds,
)
from napari_segloss.data.tumour import TUMOUR_KINDS

__all__ = ["PLANES", "TUMOUR_KINDS", "SyntheticSample", "generate_slice", "generate_volume", "split_seeds"]
