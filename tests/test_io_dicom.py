"""DICOM reading against pydicom's own decoding of its bundled real test files, and series
written with write_dicom_series (shuffled files, oblique planes, 2.5 mm slices)."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.pixels.decoders.base import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import JPEGLSLossless

from napari_segloss.io import ScanReadError, ScanReadWarning, read_scans
from napari_segloss.io.writers import write_dicom_series
from napari_segloss.napari._reader import get_reader, layer_data

DICOMDIR_TESTS = Path(get_testdata_file("DICOMDIR")).parent
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"
RNG = np.random.default_rng(11)


def pydicom_values(path) -> np.ndarray:
    """The reference: pydicom's decoded pixels with its modality LUT (rescale) applied."""
    ds = pydicom.dcmread(path)
    return apply_modality_lut(ds.pixel_array, ds)


def only(scans):
    assert len(scans) == 1, [s.name for s in scans]
    return scans[0]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPGExtended.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
    ],
)
def test_single_files_equal_pydicom_rescaled_pixels(name):
    path = get_testdata_file(name)
    scan = only(read_scans(path))
    reference = pydicom_values(path)
    assert scan.data.dtype.isnative
    np.testing.assert_array_equal(scan.data, reference)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "PixelSpacing" in ds:
        assert scan.spacing == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    assert scan.kind == "image"
    assert scan.rgb == (reference.ndim == 3)


def test_encodings_of_one_image_agree_and_window_gives_contrast_limits():
    reference = only(read_scans(get_testdata_file("MR_small.dcm")))
    for name in ("MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(only(read_scans(get_testdata_file(name))).data, reference.data)
    assert reference.metadata["window"] == (600.0, 1600.0)
    assert reference.metadata["modality"] == "MR"
    _, kwargs, layer_type = layer_data(reference)
    assert layer_type == "image" and kwargs["contrast_limits"] == (-200.0, 1400.0)
    assert kwargs["scale"] == pytest.approx((0.3125, 0.3125))


def test_ct_rescale_gives_hounsfield_units():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    scan = only(read_scans(path))
    assert float(ds.RescaleIntercept) == -1024
    np.testing.assert_array_equal(scan.data, ds.pixel_array.astype(np.int32) - 1024)


def test_monochrome1_is_inverted_over_the_stored_range():
    path = DICOMDIR_TESTS / "77654033" / "CR1" / "6154"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    lo, hi = intercept, (2**ds.BitsStored - 1) * slope + intercept
    scan = only(read_scans(path))
    np.testing.assert_allclose(scan.data, lo + hi - pydicom_values(path), rtol=1e-6)
    assert scan.spacing == pytest.approx((0.1, 0.1))  # ImagerPixelSpacing of a radiograph
    center, width = scan.metadata["window"]
    assert center == pytest.approx(lo + hi - float(ds.WindowCenter)) and width == float(ds.WindowWidth)


def test_real_series_is_sorted_by_position_not_by_file_or_instance_number(tmp_path):
    folder = tmp_path / "ct5n"
    folder.mkdir()
    for i, src in enumerate(sorted(CT5N.iterdir())):  # new names in a scrambled order
        shutil.copy(src, folder / f"{(i * 3) % 5}.dcm")
    headers = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in CT5N.iterdir()}
    by_z = sorted(headers, key=lambda p: float(headers[p].ImagePositionPatient[2]))
    instances = [int(headers[p].InstanceNumber) for p in by_z]
    assert instances == sorted(instances, reverse=True)  # InstanceNumber runs against z here
    scan = only(read_scans(folder))
    assert scan.data.shape == (5, 16, 16)
    np.testing.assert_array_equal(scan.data, np.stack([pydicom_values(p) for p in by_z]))
    assert scan.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    assert scan.origin[0] == pytest.approx(float(headers[by_z[0]].ImagePositionPatient[2]))
    assert scan.metadata["regular_spacing"] and scan.metadata["geometric_order"]
    assert scan.name == headers[by_z[0]].SeriesDescription


def test_irregular_series_warns_and_still_loads():
    with pytest.warns(ScanReadWarning, match="irregular slice spacing"):
        scan = only(read_scans(DICOMDIR_TESTS / "77654033" / "CT2"))
    assert scan.data.shape[0] == 4 and not scan.metadata["regular_spacing"]
    assert np.all(np.diff(scan.metadata["slice_positions"]) > 0)


def test_folder_with_several_series_gives_one_scan_per_series_and_plane():
    scans = read_scans(DICOMDIR_TESTS / "98892003" / "MR2")
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in (DICOMDIR_TESTS / "98892003" / "MR2").iterdir()}
    assert len(scans) >= len(uids) == 3
    assert len({s.name for s in scans}) == len(scans)
    pilots = [s.name for s in scans if s.metadata["series_description"] == "T/S/C RF FAST PILOT"]
    for plane in ("axial", "coronal", "sagittal"):  # a tri-planar localizer: one stack per plane
        assert f"T/S/C RF FAST PILOT ({plane})" in pilots
    assert "FAST LOCALIZER" in [s.name for s in scans]


def test_dicomdir_reads_the_listed_series():
    with pytest.warns(ScanReadWarning, match="Routine Brain.*irregular"):  # CT2 has a 202.5 mm gap
        scans = read_scans(get_testdata_file("DICOMDIR"))
    ct5n = [s for s in scans if s.data.shape == (5, 16, 16)]
    assert len(ct5n) == 1 and ct5n[0].spacing == pytest.approx((2.5, 0.488281, 0.488281))
    assert any(s.metadata["photometric_interpretation"] == "MONOCHROME1" for s in scans)


def write_shuffled_series(folder: Path, volume: np.ndarray, **kwargs) -> None:
    """A written series whose file names and InstanceNumbers are both out of geometric order."""
    written = write_dicom_series(volume, folder / "tmp", **kwargs)
    order = RNG.permutation(len(written))
    for k, path in enumerate(written):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = int(order[k]) + 1
        ds.save_as(folder / f"IM{order[k]:03d}")
    shutil.rmtree(folder / "tmp")


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (0.8, 0.6, 0.0, 0.0, 0.0, -1.0), (0, 1, 0, 0, 0, -1)])
def test_written_series_round_trip_in_geometric_order(tmp_path, orientation):
    volume = RNG.integers(0, 4000, size=(6, 10, 8)).astype(np.uint16)
    origin = (-30.0, 12.5, 40.0)
    write_shuffled_series(tmp_path, volume, spacing=(2.5, 0.9, 0.8), origin=origin, orientation=orientation,
                          rescale_slope=1.0, rescale_intercept=-1024.0, modality="CT", series_description="oblique")
    scan = only(read_scans(tmp_path))
    np.testing.assert_array_equal(scan.data, volume.astype(np.int32) - 1024)
    assert scan.spacing == pytest.approx((2.5, 0.9, 0.8))
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    expected_origin = (np.dot(origin, np.cross(row, col)), np.dot(origin, col), np.dot(origin, row))
    assert scan.origin == pytest.approx(expected_origin)
    assert scan.metadata["image_position"] == pytest.approx(origin)
    assert scan.metadata["orientation"] == pytest.approx(orientation)
    _, kwargs, _ = layer_data(scan)
    assert kwargs["scale"] == pytest.approx((2.5, 0.9, 0.8)) and kwargs["translate"] == pytest.approx(expected_origin)


def test_bad_files_in_a_folder_are_named_and_the_rest_loads(tmp_path):
    volume = RNG.integers(0, 1000, size=(4, 8, 8)).astype(np.uint16)
    paths = write_dicom_series(volume, tmp_path, spacing=(2.5, 1.0, 1.0))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "noise.bin").write_bytes(RNG.integers(0, 256, 5000).astype(np.uint8).tobytes())
    shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp_path / "truncated.dcm")
    cut = tmp_path / "cut.dcm"  # the last slice, cut in the middle of its pixel data
    cut.write_bytes(paths[-1].read_bytes()[:-40])
    paths[-1].unlink()
    odd = pydicom.dcmread(paths[0])  # same series, other size
    odd.Rows, odd.Columns, odd.PixelData = 4, 4, np.zeros((4, 4), np.uint16).tobytes()
    odd.ImagePositionPatient = [0, 0, 100]
    odd.save_as(tmp_path / "odd.dcm")
    with pytest.warns(ScanReadWarning) as record:
        scan = only(read_scans(tmp_path))
    text = " ".join(str(w.message) for w in record)
    for name in ("notes.txt", "noise.bin", "truncated.dcm", "cut.dcm", "odd.dcm"):
        assert name in text
    np.testing.assert_array_equal(scan.data, volume[:3])
    assert scan.spacing == pytest.approx((2.5, 1.0, 1.0))


def test_file_without_preamble_and_file_meta_is_read(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    raw = Dataset()
    raw.update(ds)  # the data set alone: no preamble, no 'DICM', no transfer syntax
    raw.save_as(tmp_path / "raw", implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (tmp_path / "raw").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(only(read_scans(tmp_path / "raw")).data, pydicom_values(get_testdata_file("MR_small.dcm")))


def test_unreadable_single_files_raise_naming_the_file(tmp_path):
    with pytest.raises(ScanReadError, match="MR_truncated.dcm.*pixel data"):
        read_scans(get_testdata_file("MR_truncated.dcm"))
    junk = tmp_path / "scan.dcm"
    junk.write_bytes(b"\x00" * 300)
    with pytest.raises(ScanReadError, match="scan.dcm: not a DICOM file"):
        read_scans(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanReadError, match="empty"):
        read_scans(tmp_path / "empty")
    assert issubclass(ScanReadError, ValueError)


def test_missing_decoder_names_the_package(monkeypatch):
    monkeypatch.setattr(get_decoder(JPEGLSLossless), "_available", {})
    with pytest.raises(ScanReadError, match="MR_small_jpeg_ls_lossless.dcm.*JPEG-LS.*pylibjpeg"):
        read_scans(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))


def test_patient_fields_never_reach_metadata_warnings_or_logs(tmp_path, caplog):
    ct = get_testdata_file("CT_small.dcm")
    secret = str(pydicom.dcmread(ct).PatientName)
    assert secret
    folder = tmp_path / "series"
    write_dicom_series(np.zeros((3, 4, 4), np.uint16), folder, spacing=(1.0, 1.0, 1.0))
    gap = pydicom.dcmread(folder / "slice_0002.dcm")  # move a slice: irregular spacing warns
    gap.ImagePositionPatient = [0, 0, 7]
    gap.PatientName, gap.PatientID, gap.PatientBirthDate = secret, "ID-4711", "19700101"
    gap.save_as(folder / "slice_0002.dcm")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        scans = read_scans(ct) + read_scans(folder)
    said = " ".join(str(w.message) for w in record) + caplog.text + repr([s.metadata for s in scans])
    assert record  # the irregular spacing was reported
    for value in (secret, "ID-4711", "19700101", "Synthetic^Phantom"):
        assert value not in said
    assert not any("patient" in key.lower() for s in scans for key in s.metadata)


def test_seg_opens_as_labels():
    path = get_testdata_file("liver_1frame.dcm")
    scan = only(read_scans(path))
    assert scan.kind == "labels"
    np.testing.assert_array_equal(scan.data, pydicom.dcmread(path).pixel_array)
    assert scan.spacing == pytest.approx((0.810547, 0.810547))
    assert scan.metadata["segments"][0]["number"] == 1
    assert layer_data(scan)[2] == "labels"


def test_classic_multiframe_uses_grid_offsets_and_colour_frames():
    dose = get_testdata_file("rtdose.dcm")
    scan = only(read_scans(dose))
    np.testing.assert_array_equal(scan.data, pydicom.dcmread(dose).pixel_array)
    assert scan.spacing[0] == pytest.approx(5.0)  # GridFrameOffsetVector step
    rgb = only(read_scans(get_testdata_file("SC_rgb_rle_2frame.dcm")))
    assert rgb.rgb and rgb.data.shape == (2, 100, 100, 3)
    np.testing.assert_array_equal(rgb.data, pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm")).pixel_array)


def _item(**attrs) -> Dataset:
    item = Dataset()
    for key, value in attrs.items():
        setattr(item, key, value)
    return item


def test_enhanced_multiframe_uses_functional_groups(tmp_path):
    """Rescale and positions that live only in the functional groups (Enhanced CT/MR)."""
    frames = RNG.integers(0, 2000, size=(3, 6, 5)).astype(np.uint16)
    (single,) = write_dicom_series(frames[0], tmp_path / "src")
    ds = pydicom.dcmread(single)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
                    "RescaleIntercept", "SliceThickness"):
        delattr(ds, keyword)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[0.4, 0.3], SliceThickness=10)]),
        PixelValueTransformationSequence=Sequence([_item(RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU")]),
    )])
    z_of_frame = [20.0, 0.0, 10.0]  # stored out of order
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [_item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=[0, 0, z])])) for z in z_of_frame]
    )
    ds.save_as(tmp_path / "enhanced.dcm")
    scan = only(read_scans(tmp_path / "enhanced.dcm"))
    order = np.argsort(z_of_frame)
    np.testing.assert_array_equal(scan.data, frames[order].astype(np.int32) - 1024)
    assert scan.spacing == pytest.approx((10.0, 0.4, 0.3))


def test_reader_hook_claims_dicom_and_declines_others(tmp_path):
    write_dicom_series(np.zeros((2, 4, 4), np.uint16), tmp_path / "series")
    assert get_reader(str(tmp_path / "series")) is not None
    assert get_reader(str(CT5N / "2062")) is not None  # extensionless, found by its DICM marker
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "docs")) is None
    reader = get_reader([str(tmp_path / "series"), str(CT5N)])
    layers = reader([str(tmp_path / "series"), str(CT5N)])
    assert [layer[0].shape for layer in layers] == [(2, 4, 4), (5, 16, 16)]
