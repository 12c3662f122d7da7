"""Drag and drop through napari: the manifest's reader and writer on a real viewer (xvfb-run)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_segloss.io import read_scans
from napari_segloss.io.writers import write_array, write_dicom_series

pytestmark = pytest.mark.gui

PLUGIN = "napari-segloss"


def test_open_dicom_series_folder(make_napari_viewer, tmp_path):
    volume = np.random.default_rng(0).integers(0, 2000, size=(5, 16, 12)).astype(np.uint16)
    write_dicom_series(volume, tmp_path / "series", spacing=(2.5, 0.8, 0.6), origin=(0.0, 0.0, -20.0),
                       series_description="T1 post", rescale_intercept=-100.0)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(tmp_path / "series", plugin=PLUGIN)
    assert layer.name == "T1 post" and layer._type_string == "image"
    np.testing.assert_array_equal(np.asarray(layer.data), volume.astype(np.int32) - 100)
    np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.6))
    np.testing.assert_allclose(layer.translate, (-20.0, 0.0, 0.0))
    low, high = float(volume.min()) - 100, float(volume.max()) - 100  # the written window spans the data
    np.testing.assert_allclose(layer.contrast_limits, (low, high))
    assert layer.metadata["modality"] == "MR" and layer.metadata["spacing_mm"] == pytest.approx((2.5, 0.8, 0.6))


def test_open_png_and_mask_then_save_the_mask(make_napari_viewer, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, size=(20, 24)).astype(np.uint8)
    mask = np.zeros((20, 24), bool)
    mask[4:12, 5:15] = True
    Image.fromarray(image).save(tmp_path / "case.png")
    write_array(tmp_path / "case_mask.png", mask)
    viewer = make_napari_viewer()
    (img_layer,) = viewer.open(tmp_path / "case.png", plugin=PLUGIN)
    (mask_layer,) = viewer.open(tmp_path / "case_mask.png", plugin=PLUGIN)
    assert img_layer._type_string == "image" and mask_layer._type_string == "labels"
    np.testing.assert_array_equal(img_layer.data, image)
    np.testing.assert_array_equal(mask_layer.data, mask)
    saved = mask_layer.save(str(tmp_path / "saved_mask.png"), plugin=PLUGIN)
    assert saved == [str(tmp_path / "saved_mask.png")]
    np.testing.assert_array_equal(np.array(Image.open(saved[0])), mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(read_scans(saved[0])[0].data, mask)
