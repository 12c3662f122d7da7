"""Writers: round trips checked with independent readers (Pillow, tifffile, nibabel, pydicom, csv)."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.pixels import apply_modality_lut

from napari_segloss.io import read_scans
from napari_segloss.io.writers import write_array, write_csv, write_dicom_series, write_rgb_png
from napari_segloss.napari._writer import write_labels

RNG = np.random.default_rng(7)
VOLUME = RNG.integers(-1000, 3000, size=(4, 12, 10)).astype(np.int16)
MASK = np.zeros((12, 10), bool)
MASK[3:8, 2:6] = True


def test_png_mask_is_0_255_and_reads_back_as_labels(tmp_path):
    path = write_array(tmp_path / "case_mask.png", MASK)
    raw = np.array(Image.open(path))
    assert raw.dtype == np.uint8 and set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(raw > 0, MASK)
    (scan,) = read_scans(path)
    assert scan.kind == "labels" and scan.data.dtype == np.uint8
    np.testing.assert_array_equal(scan.data, MASK.astype(np.uint8))


def test_png_keeps_16_bit_and_label_values(tmp_path):
    image = RNG.integers(0, 65535, size=(9, 7)).astype(np.uint16)
    np.testing.assert_array_equal(np.array(Image.open(write_array(tmp_path / "i.png", image))), image)
    labels = np.arange(12).reshape(3, 4).astype(np.int64) % 4  # napari's int64 difference map
    raw = np.array(Image.open(write_array(tmp_path / "d.png", labels)))
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, labels)


@pytest.mark.parametrize(
    ("data", "match"),
    [(np.zeros((2, 3, 3), np.uint8), "2D"), (np.zeros((3, 3), np.float32), "integer"), (np.full((3, 3), -1), "0..65535")],
)
def test_png_rejects_what_it_cannot_hold(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        write_array(tmp_path / "x.png", data)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_tiff_3d_keeps_values_and_spacing(tmp_path, dtype):
    data = (VOLUME + (1000 if dtype == np.uint16 else 0)).astype(dtype)
    path = write_array(tmp_path / "v.tif", data, spacing=(2.5, 0.5, 0.75))
    with tifffile.TiffFile(path) as tif:  # independent check of what is on disk
        np.testing.assert_array_equal(tif.asarray(), data)
        x_res, y_res = tif.pages.first.resolution
        assert (1 / y_res, 1 / x_res) == pytest.approx((0.5, 0.75))
        if tif.is_imagej:
            assert tif.imagej_metadata["spacing"] == pytest.approx(2.5)
            assert tif.imagej_metadata["unit"] == "mm"
    (scan,) = read_scans(path)
    assert scan.data.dtype == dtype
    np.testing.assert_array_equal(scan.data, data)
    assert scan.spacing == pytest.approx((2.5, 0.5, 0.75))


def test_tiff_bool_and_wide_labels_become_small_unsigned(tmp_path):
    with tifffile.TiffFile(write_array(tmp_path / "m.tif", MASK)) as tif:
        np.testing.assert_array_equal(tif.asarray(), MASK.astype(np.uint8))
    wide = np.array([[0, 3], [300, 2]], dtype=np.int64)
    with tifffile.TiffFile(write_array(tmp_path / "l.tiff", wide)) as tif:
        assert tif.asarray().dtype == np.uint16
        np.testing.assert_array_equal(tif.asarray(), wide)


def test_nifti_round_trip_and_affine(tmp_path):
    path = write_array(tmp_path / "v.nii.gz", VOLUME, spacing=(2.5, 0.5, 0.75))
    img = nib.load(path)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), VOLUME.T)
    assert img.header.get_zooms() == pytest.approx((0.75, 0.5, 2.5))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")  # DICOM's patient axes
    (scan,) = read_scans(path)
    np.testing.assert_array_equal(scan.data, VOLUME)
    assert scan.spacing == pytest.approx((2.5, 0.5, 0.75))
    (flat,) = read_scans(write_array(tmp_path / "s.nii", VOLUME[0], spacing=(0.5, 0.75)))
    np.testing.assert_array_equal(flat.data, VOLUME[0])
    assert flat.spacing == pytest.approx((0.5, 0.75))


def test_spacing_is_validated(tmp_path):
    with pytest.raises(ValueError, match="3 spatial axes"):
        write_array(tmp_path / "v.tif", VOLUME, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        write_array(tmp_path / "v.tif", VOLUME, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unsupported extension"):
        write_array(tmp_path / "v.jpg", MASK)


def test_never_overwrites_unless_asked(tmp_path):
    path = write_array(tmp_path / "a.png", MASK)
    with pytest.raises(FileExistsError, match="a.png"):
        write_array(path, ~MASK)
    np.testing.assert_array_equal(np.array(Image.open(path)) > 0, MASK)
    write_array(path, ~MASK, overwrite=True)
    np.testing.assert_array_equal(np.array(Image.open(path)) > 0, ~MASK)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    def broken(file, *args, **kwargs):
        with open(file, "wb") as fh:
            fh.write(b"II*\x00 half a tiff")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_array(tmp_path / "new.tif", VOLUME)
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old.tif"
    old.write_bytes(b"previous content")
    with pytest.raises(OSError, match="disk full"):
        write_array(old, VOLUME, overwrite=True)
    assert old.read_bytes() == b"previous content"
    assert list(tmp_path.iterdir()) == [old]


def test_rgb_png(tmp_path):
    rgb = RNG.integers(0, 256, size=(6, 5, 3)).astype(np.uint8)
    path = write_rgb_png(tmp_path / "overlay.png", rgb)
    np.testing.assert_array_equal(np.array(Image.open(path)), rgb)
    with pytest.raises(ValueError, match="uint8"):
        write_rgb_png(tmp_path / "bad.png", rgb.astype(np.float32))
    with pytest.raises(FileExistsError):
        write_rgb_png(path, rgb)


def test_csv(tmp_path):
    rows = [{"case": "a", "dice": 0.5, "hd95": math.nan}, {"case": "b", "dice": 1 / 3, "note": "empty GT"}]
    path = write_csv(tmp_path / "metrics.csv", rows)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["case", "dice", "hd95", "note"]
        back = list(reader)
    assert back[0]["hd95"] == "nan" and back[0]["note"] == ""
    assert float(back[1]["dice"]) == 1 / 3  # full precision
    with pytest.raises(FileExistsError):
        write_csv(path, rows)
    write_csv(path, rows[:1], overwrite=True)
    assert len(path.read_text().splitlines()) == 2


OBLIQUE = (0.8, 0.6, 0.0, 0.0, 0.0, -1.0)  # a tilted coronal plane


def test_dicom_series_geometry_and_values(tmp_path):
    spacing, origin = (2.5, 0.6, 0.7), (-10.0, 20.0, 30.0)
    paths = write_dicom_series(
        VOLUME, tmp_path, spacing=spacing, origin=origin, orientation=OBLIQUE, modality="CT",
        rescale_slope=2.0, rescale_intercept=-1024.0, series_description="oblique",
    )
    assert [p.name for p in paths] == [f"slice_{k:04d}.dcm" for k in range(4)]
    normal = np.cross(OBLIQUE[:3], OBLIQUE[3:])
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.Modality == "CT" and ds.SeriesDescription == "oblique"
        assert ds.PixelRepresentation == 1  # signed stored values
        np.testing.assert_array_equal(ds.pixel_array, VOLUME[k])
        np.testing.assert_allclose(apply_modality_lut(ds.pixel_array, ds), VOLUME[k] * 2.0 - 1024.0)
        np.testing.assert_allclose(ds.ImagePositionPatient, np.add(origin, k * 2.5 * normal), atol=1e-9)
        np.testing.assert_allclose(ds.ImageOrientationPatient, OBLIQUE)
        assert [float(v) for v in ds.PixelSpacing] == [0.6, 0.7]
        assert ds.InstanceNumber == k + 1


def test_dicom_series_uids_are_reproducible(tmp_path):
    def uids(folder, **kwargs):
        ds = [pydicom.dcmread(p) for p in write_dicom_series(VOLUME[:2], folder, **kwargs)]
        return ds[0].SeriesInstanceUID, [d.SOPInstanceUID for d in ds]

    first = uids(tmp_path / "a", uid_seed=3)
    assert first == uids(tmp_path / "b", uid_seed=3)
    assert first[0] != uids(tmp_path / "c", uid_seed=4)[0]
    assert first[0] != uids(tmp_path / "d", uid_seed=3, series_description="other")[0]
    assert len(set(first[1])) == 2


def test_dicom_series_single_slice_unsigned_and_refusals(tmp_path):
    image = RNG.integers(0, 60000, size=(8, 8)).astype(np.uint16)
    (path,) = write_dicom_series(image, tmp_path / "one")
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 0
    np.testing.assert_array_equal(ds.pixel_array, image)
    with pytest.raises(FileExistsError, match="slice_0000.dcm"):
        write_dicom_series(image, tmp_path / "one")
    write_dicom_series(image + 1, tmp_path / "one", overwrite=True)
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, image + 1)
    with pytest.raises(ValueError, match="orthogonal"):
        write_dicom_series(image, tmp_path / "x", orientation=(1, 0, 0, 0.6, 0.8, 0))
    with pytest.raises(ValueError, match="integer"):
        write_dicom_series(image.astype(np.float32), tmp_path / "x")
    with pytest.raises(ValueError, match="16 bits"):
        write_dicom_series(np.array([[70000]]), tmp_path / "x")


def test_napari_writer_hook_keeps_scale_and_mask_convention(tmp_path):
    labels = np.zeros((3, 12, 10), np.int32)
    labels[1, 2:5, 3:6] = 1
    (written,) = write_labels(str(tmp_path / "pred.tif"), labels, {"scale": (2.5, 0.5, 0.5), "name": "pred"})
    (scan,) = read_scans(written)
    np.testing.assert_array_equal(scan.data, labels)
    assert scan.spacing == pytest.approx((2.5, 0.5, 0.5))
    (png,) = write_labels(str(tmp_path / "pred.png"), labels[1], {"scale": (0.5, 0.5)})
    assert set(np.unique(np.array(Image.open(png)))) == {0, 255}
    diff = np.array([[0, 1], [2, 3]], np.int32)  # TP/FP/FN codes stay as they are
    (png,) = write_labels(str(tmp_path / "diff.png"), diff, {"scale": (1.0, 1.0)})
    np.testing.assert_array_equal(np.array(Image.open(png)), diff)
    write_labels(str(tmp_path / "diff.png"), diff * 0, {})  # napari confirmed the overwrite
    assert np.array(Image.open(png)).max() == 0


def _ras(position) -> np.ndarray:
    """A DICOM (LPS) patient position in NIfTI's RAS world."""
    return np.asarray(position, dtype=float) * [-1.0, -1.0, 1.0]


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), OBLIQUE, (0, 1, 0, 0, 0, -1)])
def test_nifti_from_a_dicom_series_sits_where_each_slice_file_says(tmp_path, orientation):
    paths = write_dicom_series(VOLUME, tmp_path / "series", spacing=(2.5, 0.6, 0.7), origin=(-10.0, 20.0, 30.0),
                               orientation=orientation, modality="CT")
    (scan,) = read_scans(tmp_path / "series")
    mask = scan.data > 500
    out = nib.load(write_array(tmp_path / "mask.nii.gz", mask, spacing=scan.spacing, affine=scan.metadata["affine_lps"]))
    voxels, affine = np.asanyarray(out.dataobj), out.affine
    for path in paths:  # every file's own header (pydicom) against the NIfTI's affine (nibabel)
        ds = pydicom.dcmread(path)
        row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        inverse = np.linalg.inv(affine)
        i, j, k = np.rint(inverse @ [*_ras(ds.ImagePositionPatient), 1.0])[:3].astype(int)
        assert (i, j) == (0, 0) and 0 <= k < voxels.shape[2]
        np.testing.assert_allclose(affine[:3, 0], _ras(row * dx), atol=1e-6)  # i runs along the row
        np.testing.assert_allclose(affine[:3, 1], _ras(col * dy), atol=1e-6)
        np.testing.assert_array_equal(voxels[:, :, k].T, ds.pixel_array > 500)
    assert out.header.get_qform(coded=True)[1] == 1 and out.header.get_sform(coded=True)[1] == 1


def test_nifti_output_carries_a_nifti_inputs_affine(tmp_path):
    rotation = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, 0.6], [-0.6, 0.0, 0.8]])  # oblique, RAS-ish on disk
    affine = np.eye(4)
    affine[:3, :3] = rotation * [0.9, 1.1, 2.0]
    affine[:3, 3] = (12.0, -40.0, 7.5)
    data = RNG.integers(0, 1000, size=(10, 12, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "scan.nii.gz")
    (scan,) = read_scans(tmp_path / "scan.nii.gz")
    mask = scan.data > 500
    exact = nib.load(write_array(tmp_path / "exact.nii.gz", mask, affine=scan.metadata["affine_lps"],
                                 axcodes=scan.metadata["axcodes_on_disk"]))
    np.testing.assert_allclose(exact.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(exact.dataobj), data > 500)
    lps = nib.load(write_array(tmp_path / "lps.nii.gz", mask, affine=scan.metadata["affine_lps"]))
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")  # the array's order, same geometry:
    canonical_in, canonical_out = nib.as_closest_canonical(nib.load(tmp_path / "scan.nii.gz")), nib.as_closest_canonical(lps)
    np.testing.assert_allclose(canonical_out.affine, canonical_in.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(canonical_out.dataobj), np.asanyarray(canonical_in.dataobj) > 500)


def test_napari_save_layer_keeps_the_scans_placement(tmp_path):
    """A Labels layer that carries its scan's placement (what the reader and the widget's result
    layers put in ``metadata``) is saved by napari's Save Layer with the scan's exact affine; one
    without it gets the spacing alone."""
    from napari_segloss.napari._reader import layer_data

    affine = np.diag([-0.9, 1.1, 2.0, 1.0])
    affine[:3, 3] = (12.0, -40.0, 7.5)
    data = RNG.integers(0, 1000, size=(10, 12, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "scan.nii.gz")
    (scan,) = read_scans(tmp_path / "scan.nii.gz")
    _, attrs, _ = layer_data(scan)
    mask = scan.data > 500
    (saved,) = write_labels(str(tmp_path / "mask.nii.gz"), mask, attrs)
    out = nib.load(saved)
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), data > 500)
    (bare,) = write_labels(str(tmp_path / "bare.nii.gz"), mask, {"scale": attrs["scale"]})
    assert not np.allclose(nib.load(bare).affine, affine)


def test_affine_is_validated(tmp_path):
    with pytest.raises(ValueError, match="4x4"):
        write_array(tmp_path / "m.nii.gz", MASK, affine=np.eye(3))
    assert not (tmp_path / "m.nii.gz").exists()
