"""npe2 sample-data commands: a synthetic T1-CE brain scan with its ground-truth tumour mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_segloss.data import SyntheticSample, generate_slice, generate_volume, split_seeds

IMAGE_NAME = "Brain MRI (synthetic)"
TRUTH_NAME = "Tumour (ground truth)"
# test-split seeds chosen by eye: a glioma with necrotic core, enhancing rim and oedema beside
# the lateral ventricles (2D), and a larger one (3D)
SEED_2D = split_seeds("test", 1, base_seed=8)[0]
SEED_3D = split_seeds("test", 1, base_seed=1)[0]


def _layers(sample: SyntheticSample) -> list[tuple[Any, dict[str, Any], str]]:
    """(data, kwargs, layer type) tuples: the grey scan and the binary tumour mask as Labels."""
    low, high = np.percentile(sample.image, [0.5, 99.5])
    meta = {"napari_segloss": {"source": "synthetic", "seed": sample.seed, "kind": sample.kind,
                               "plane": sample.plane, "spacing_mm": list(sample.spacing)}}
    image = (
        sample.image,
        {"name": IMAGE_NAME, "colormap": "gray", "contrast_limits": [float(low), float(high)],
         "scale": sample.spacing, "metadata": meta},
        "image",
    )
    truth = (
        sample.mask.astype(np.uint8),
        {"name": TRUTH_NAME, "scale": sample.spacing, "opacity": 0.5, "metadata": meta},
        "labels",
    )
    return [image, truth]


def brain_mri_2d() -> list[tuple[Any, dict[str, Any], str]]:
    """A 256x256 axial T1-CE slice with a glioma (scale in mm) and its ground-truth mask."""
    return _layers(generate_slice(SEED_2D, 256, plane="axial", tumour="glioma"))


def brain_mri_3d() -> list[tuple[Any, dict[str, Any], str]]:
    """A 64x256x256 axial T1-CE volume with a glioma (scale in mm) and its ground-truth mask."""
    return _layers(generate_volume(SEED_3D, (64, 256, 256), tumour="glioma"))
