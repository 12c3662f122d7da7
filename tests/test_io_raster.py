"""PNG/JPG/BMP, TIFF and NIfTI reading, checked against scikit-image/imageio, tifffile and nibabel."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import io as skio

from napari_segloss.io import ScanReadError, read_scans
from napari_segloss.io.raster import as_labels, is_mask_name
from napari_segloss.napari._reader import get_reader, layer_data

RNG = np.random.default_rng(3)
GREY = RNG.integers(0, 256, size=(20, 24)).astype(np.uint8)
BLOB = np.zeros((20, 24), bool)
BLOB[5:14, 6:15] = True


def only(scans):
    assert len(scans) == 1
    return scans[0]


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_lossless_grey_equals_scikit_image(tmp_path, suffix):
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(GREY).save(path)
    scan = only(read_scans(path))
    np.testing.assert_array_equal(scan.data, skio.imread(path))
    np.testing.assert_array_equal(scan.data, GREY)
    assert scan.spacing == (1.0, 1.0) and scan.origin == (0.0, 0.0)
    assert scan.kind == "image" and not scan.rgb and scan.name == "scan"


def test_jpeg_equals_scikit_image(tmp_path):
    path = tmp_path / "scan.jpg"
    Image.fromarray(GREY).save(path, quality=90)
    np.testing.assert_array_equal(only(read_scans(path)).data, skio.imread(path))


def test_16_bit_png_keeps_its_depth(tmp_path):
    image = RNG.integers(0, 65536, size=(10, 12)).astype(np.uint16)
    path = tmp_path / "mr16.png"
    Image.fromarray(image).save(path)
    scan = only(read_scans(path))
    assert scan.data.dtype == np.uint16
    np.testing.assert_array_equal(scan.data, image)
    np.testing.assert_array_equal(scan.data, skio.imread(path))


def test_colour_kept_grey_rgb_collapsed_opaque_alpha_dropped(tmp_path):
    colour = RNG.integers(0, 256, size=(8, 9, 3)).astype(np.uint8)
    Image.fromarray(colour).save(tmp_path / "photo.png")
    scan = only(read_scans(tmp_path / "photo.png"))
    assert scan.rgb and scan.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(scan.data, colour)
    assert layer_data(scan)[1]["rgb"] is True
    Image.fromarray(np.repeat(GREY[..., None], 3, axis=2)).save(tmp_path / "grey_as_rgb.png")
    np.testing.assert_array_equal(only(read_scans(tmp_path / "grey_as_rgb.png")).data, GREY)
    rgba = np.dstack([colour, np.full(colour.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(only(read_scans(tmp_path / "opaque.png")).data, colour)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba).save(tmp_path / "translucent.png")
    assert only(read_scans(tmp_path / "translucent.png")).data.shape == (8, 9, 4)


def test_mask_convention(tmp_path):
    assert is_mask_name("case_01_mask.png") and is_mask_name("BraTS_001_seg.nii.gz") and is_mask_name("x_MASK.tif")
    assert not is_mask_name("mask.png") and not is_mask_name("case_masked.png")
    Image.fromarray(BLOB.astype(np.uint8) * 255).save(tmp_path / "case_mask.png")
    scan = only(read_scans(tmp_path / "case_mask.png"))
    assert scan.kind == "labels" and scan.data.dtype == np.uint8
    np.testing.assert_array_equal(scan.data, BLOB)
    _, kwargs, layer_type = layer_data(scan)
    assert layer_type == "labels" and "contrast_limits" not in kwargs


def test_jpeg_mask_is_thresholded(tmp_path):
    path = tmp_path / "case_mask.jpg"
    Image.fromarray(BLOB.astype(np.uint8) * 255).save(path, quality=75)
    stored = skio.imread(path)
    assert len(np.unique(stored)) > 2  # compression artefacts: neither 0 nor 255
    np.testing.assert_array_equal(only(read_scans(path)).data, BLOB)


def test_palette_mask_keeps_indices_palette_image_gives_colour(tmp_path):
    labels = np.zeros((6, 7), np.uint8)
    labels[1:3, 1:3], labels[4:, 4:] = 1, 2
    img = Image.fromarray(labels, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    img.save(tmp_path / "regions_mask.png")
    img.save(tmp_path / "regions.png")
    np.testing.assert_array_equal(only(read_scans(tmp_path / "regions_mask.png")).data, labels)
    colour = only(read_scans(tmp_path / "regions.png"))
    assert colour.rgb
    np.testing.assert_array_equal(colour.data[labels == 1], [[255, 0, 0]] * 4)


def test_as_labels_levels():
    np.testing.assert_array_equal(as_labels(np.array([[0, 255], [255, 0]], np.uint8)), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(as_labels(np.array([[0.0, 1.0], [2.0, 3.0]])), [[0, 1], [2, 3]])
    np.testing.assert_array_equal(as_labels(np.array([[0.1, 0.9]], np.float32)), [[0, 1]])
    assert as_labels(np.array([[0, 300, 2]])).dtype == np.uint16


def test_multipage_tiff_stack(tmp_path):
    pages = RNG.integers(0, 4096, size=(5, 10, 12)).astype(np.uint16)
    ims = [Image.fromarray(p) for p in pages]  # a plain multi-page TIFF without metadata
    ims[0].save(tmp_path / "stack.tif", save_all=True, append_images=ims[1:])
    scan = only(read_scans(tmp_path / "stack.tif"))
    np.testing.assert_array_equal(scan.data, pages)
    np.testing.assert_array_equal(scan.data, tifffile.imread(tmp_path / "stack.tif"))
    assert scan.spacing == (1.0, 1.0, 1.0)


def test_imagej_tiff_spacing_in_microns_becomes_mm(tmp_path):
    data = RNG.random((3, 8, 9), dtype=np.float32)
    tifffile.imwrite(tmp_path / "fiji.tif", data, imagej=True, resolution=(1 / 0.5, 1 / 0.25),
                     metadata={"spacing": 2.0, "unit": "micron", "axes": "ZYX"})
    scan = only(read_scans(tmp_path / "fiji.tif"))
    np.testing.assert_array_equal(scan.data, data)
    assert scan.spacing == pytest.approx((0.002, 0.00025, 0.0005))


def test_tiff_rgb_channels_and_inch_resolution(tmp_path):
    rgb = RNG.integers(0, 256, size=(6, 7, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", resolution=(300, 300), resolutionunit="INCH")
    scan = only(read_scans(tmp_path / "rgb.tif"))
    assert scan.rgb and scan.spacing == (1.0, 1.0)  # a print DPI is not a pixel size
    np.testing.assert_array_equal(scan.data, rgb)
    channels = RNG.integers(0, 100, size=(2, 3, 6, 7)).astype(np.uint16)  # ZCYX
    tifffile.imwrite(tmp_path / "multi.tif", channels, imagej=True, metadata={"axes": "ZCYX"})
    scans = read_scans(tmp_path / "multi.tif")
    assert [s.name for s in scans] == ["multi [channel 0]", "multi [channel 1]", "multi [channel 2]"]
    for c, scan in enumerate(scans):
        np.testing.assert_array_equal(scan.data, channels[:, c])


def test_nifti_is_returned_in_lps_zyx_order(tmp_path):
    data = RNG.integers(0, 1000, size=(6, 5, 4)).astype(np.int16)  # (i, j, k) on disk
    affine = np.diag([1.5, 2.0, 3.0, 1.0])  # RAS: i towards the right, j anterior
    affine[:3, 3] = (-10.0, 20.0, 30.0)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "brain.nii.gz")
    scan = only(read_scans(tmp_path / "brain.nii.gz"))
    np.testing.assert_array_equal(scan.data, data[::-1, ::-1, :].transpose(2, 1, 0))  # to L, P, then ZYX
    assert scan.spacing == pytest.approx((3.0, 2.0, 1.5))
    far_corner_ras = affine @ np.array([5, 4, 0, 1])  # first voxel after flipping i and j
    assert scan.origin == pytest.approx((far_corner_ras[2], -far_corner_ras[1], -far_corner_ras[0]))
    assert scan.name == "brain" and scan.metadata["axcodes_on_disk"] == "RAS"


def test_nifti_4d_single_volume_mask_and_refusals(tmp_path, monkeypatch):
    mask = np.zeros((4, 5, 3, 1), np.float32)
    mask[1:3, 1:4, 1] = 1.0
    nib.save(nib.Nifti1Image(mask, np.diag([-1.0, -1.0, 2.0, 1.0])), tmp_path / "case_seg.nii.gz")
    scan = only(read_scans(tmp_path / "case_seg.nii.gz"))
    assert scan.kind == "labels" and scan.data.dtype == np.uint8
    np.testing.assert_array_equal(scan.data, mask[..., 0].T)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), tmp_path / "fmri.nii")
    with pytest.raises(ScanReadError, match=r"fmri.nii.*\(4, 4, 3, 2\)"):
        read_scans(tmp_path / "fmri.nii")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ScanReadError, match="case_seg.nii.gz.*'nibabel' package"):
        read_scans(tmp_path / "case_seg.nii.gz")


def test_broken_files_raise_naming_the_file(tmp_path):
    Image.fromarray(GREY).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:100])
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "text.tif").write_text("not a picture")
    (tmp_path / "text.nii.gz").write_text("not a volume")
    for name in ("cut.png", "text.png", "text.tif", "text.nii.gz"):
        with pytest.raises(ScanReadError, match=name.replace(".", r"\.")):
            read_scans(tmp_path / name)
    with pytest.raises(ScanReadError, match="no such file"):
        read_scans(tmp_path / "missing.png")


def test_reader_hook_on_images(tmp_path):
    Image.fromarray(GREY).save(tmp_path / "scan.png")
    Image.fromarray(BLOB.astype(np.uint8) * 255).save(tmp_path / "scan_mask.png")
    reader = get_reader([str(tmp_path / "scan.png"), str(tmp_path / "scan_mask.png")])
    (image, image_kwargs, image_type), (mask, _, mask_type) = reader([str(tmp_path / "scan.png"), str(tmp_path / "scan_mask.png")])
    assert (image_type, mask_type) == ("image", "labels")
    assert image_kwargs["scale"] == (1.0, 1.0) and image_kwargs["name"] == "scan"
    np.testing.assert_array_equal(mask, BLOB)
