"""DICOM SEG written with highdicom: read back voxel for voxel by the plugin's reader, checked
against the source headers with pydicom and validated with dicom3tools' ``dciodvfy``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from scipy import ndimage

from napari_segloss import __version__
from napari_segloss.io import read_scans
from napari_segloss.io.seg import SegmentResult, SegWriteError, write_seg
from napari_segloss.io.writers import write_array, write_dicom_series
from napari_segloss.napari._reader import get_reader, layer_data

CT5N = Path(get_testdata_file("DICOMDIR")).parent / "98892001" / "CT5N"
OBLIQUE = (0.8, 0.6, 0.0, 0.0, 0.0, -1.0)
SHA = "ab" * 32
RNG = np.random.default_rng(19)


def blob(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth random mask (a few connected blobs) of ``shape``."""
    noise = np.random.default_rng(seed).normal(size=shape)
    smooth = ndimage.gaussian_filter(noise, 1.5)
    return smooth > np.percentile(smooth, 75)


def dciodvfy_errors(path: Path) -> list[str]:
    """The validator's error lines (warnings are allowed)."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools, installed by `make test` as root) is not installed")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def only(scans):
    assert len(scans) == 1, [s.name for s in scans]
    return scans[0]


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory) -> Path:
    """pydicom's real 5-slice CT series, files renamed out of geometric order."""
    folder = tmp_path_factory.mktemp("ct5n")
    for i, src in enumerate(sorted(CT5N.iterdir())):
        shutil.copy(src, folder / f"{(i * 3) % 5}.dcm")
    return folder


@pytest.fixture(scope="module")
def oblique_series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("oblique")
    volume = RNG.integers(0, 3000, size=(7, 20, 18)).astype(np.uint16)
    write_dicom_series(volume, folder, spacing=(2.5, 0.9, 0.8), origin=(-30.0, 12.5, 40.0), orientation=OBLIQUE,
                       modality="MR", series_description="oblique")
    return folder


def headers_by_position(folder: Path) -> dict[tuple[float, ...], pydicom.Dataset]:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir()]
    return {tuple(np.round(np.array(ds.ImagePositionPatient, float), 3)): ds for ds in headers}


@pytest.mark.parametrize("series", ["ct_series", "oblique_series"])
def test_binary_seg_round_trips_and_references_every_source_slice(request, tmp_path, series):
    folder = request.getfixturevalue(series)
    scan = only(read_scans(folder))
    mask = blob(scan.data.shape, 1)
    path = write_seg(tmp_path / "dice.seg.dcm", scan.metadata, [SegmentResult("dice", "dice", mask, weights_sha256=SHA)])

    back = only(read_scans(path))  # the plugin's reader: a Labels layer on the scan's grid
    assert back.kind == "labels"
    np.testing.assert_array_equal(back.data > 0, mask)
    assert back.spacing == pytest.approx(scan.spacing) and back.origin == pytest.approx(scan.origin)
    assert back.metadata["orientation"] == pytest.approx(scan.metadata["orientation"])
    _, seg_kwargs, kind = layer_data(back)
    _, scan_kwargs, _ = layer_data(scan)
    assert kind == "labels" and get_reader(str(path)) is not None
    assert seg_kwargs["scale"] == pytest.approx(scan_kwargs["scale"])
    assert seg_kwargs["translate"] == pytest.approx(scan_kwargs["translate"])

    seg = pydicom.dcmread(path)  # the SEG's references, against the source files' own headers
    sources = headers_by_position(folder)
    first = next(iter(sources.values()))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert seg.get(keyword) == first.get(keyword), keyword
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in sources.values()}
    assert seg.NumberOfFrames == len(sources)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = tuple(np.round(np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float), 3))
        source = sources[position]
        assert frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose(np.array(orientation, float), np.array(first.ImageOrientationPatient, float), atol=1e-6)

    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "dice" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # SCT Neoplasm
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "dice" and algorithm.AlgorithmVersion == __version__
    parameters = dict(p.split("=", 1) for p in str(algorithm.AlgorithmParameters).split(","))
    assert parameters["loss"] == "dice" and parameters["weights_sha256"] == SHA
    assert dciodvfy_errors(path) == []


def test_single_slice_file_round_trips(tmp_path):
    scan = only(read_scans(get_testdata_file("MR_small.dcm")))
    mask = blob(scan.data.shape, 2)
    path = write_seg(tmp_path / "one.dcm", scan.metadata, [SegmentResult("focal", "focal", mask)])
    back = only(read_scans(path))
    np.testing.assert_array_equal(back.data > 0, mask)
    assert back.origin == pytest.approx(scan.origin) and back.spacing == pytest.approx(scan.spacing)
    assert dciodvfy_errors(path) == []


def test_comparison_is_one_seg_with_one_segment_per_checkpoint(tmp_path, oblique_series):
    scan = only(read_scans(oblique_series))
    masks = {name: blob(scan.data.shape, seed) for seed, name in enumerate(("dice", "focal", "tversky"))}
    assert (masks["dice"] & masks["focal"]).any()  # the checkpoints overlap, as real ones do
    results = [SegmentResult(name, name, mask, weights_sha256=SHA) for name, mask in masks.items()]
    path = write_seg(tmp_path / "compare.dcm", scan.metadata, results)
    seg = pydicom.dcmread(path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["dice", "focal", "tversky"]
    back = read_scans(path)  # overlapping segments: one Labels layer each
    assert len(back) == 3
    for layer, (name, mask) in zip(back, masks.items()):
        assert layer.name.endswith(name) and layer.metadata["segments"][0]["label"] == name
        np.testing.assert_array_equal(layer.data > 0, mask)
        assert layer.origin == pytest.approx(scan.origin)
    assert dciodvfy_errors(path) == []


def test_disjoint_segments_read_as_one_label_image(tmp_path, ct_series):
    scan = only(read_scans(ct_series))
    left, right = np.zeros(scan.data.shape, bool), np.zeros(scan.data.shape, bool)
    left[:, 2:6, 2:6], right[1:, 9:14, 8:12] = True, True
    path = write_seg(tmp_path / "two.dcm", scan.metadata, [SegmentResult("a", "dice", left), SegmentResult("b", "dice", right)])
    labels = only(read_scans(path)).data
    np.testing.assert_array_equal(labels, left * 1 + right * 2)


def test_fractional_seg_keeps_the_probability(tmp_path, oblique_series):
    scan = only(read_scans(oblique_series))
    probability = ndimage.gaussian_filter(RNG.random(scan.data.shape), 1.0)
    probability = (probability - probability.min()) / np.ptp(probability)
    mask = probability > 0.5
    path = write_seg(tmp_path / "p.dcm", scan.metadata, [SegmentResult("dice", "dice", mask, probability)],
                     fractional=True)
    seg = pydicom.dcmread(path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert int(seg.MaximumFractionalValue) == 255
    back = only(read_scans(path))  # read as labels at half the fractional range
    near_half = np.abs(probability - 0.5) < 1 / 255
    np.testing.assert_array_equal((back.data > 0)[~near_half], mask[~near_half])
    assert dciodvfy_errors(path) == []


def test_bad_cases_give_one_clear_message_and_lose_nothing(tmp_path, ct_series):
    png = only(read_scans(write_array(tmp_path / "scan.png", RNG.integers(0, 255, size=(16, 16)).astype(np.uint8))))
    with pytest.raises(SegWriteError, match="needs a DICOM input.*png"):
        write_seg(tmp_path / "x.dcm", png.metadata, [SegmentResult("dice", "dice", np.ones((16, 16), bool))])

    flat = tmp_path / "flat"  # a series whose files lost their position
    flat.mkdir()
    for src in CT5N.iterdir():
        ds = pydicom.dcmread(src)
        del ds.ImagePositionPatient
        ds.save_as(flat / src.name)
    scan = only(read_scans(flat))
    with pytest.raises(SegWriteError, match="no patient geometry"):
        write_seg(tmp_path / "x.dcm", scan.metadata, [SegmentResult("dice", "dice", scan.data > 0)])
    assert not (tmp_path / "x.dcm").exists()

    scan = only(read_scans(ct_series))
    with pytest.raises(SegWriteError, match=r"shape \(4, 16, 16\), the scan \(5, 16, 16\)"):
        write_seg(tmp_path / "x.dcm", scan.metadata, [SegmentResult("dice", "dice", np.zeros((4, 16, 16), bool))])
    with pytest.raises(SegWriteError, match="no probability"):
        write_seg(tmp_path / "x.dcm", scan.metadata, [SegmentResult("dice", "dice", scan.data > 0)], fractional=True)
    existing = tmp_path / "kept.dcm"
    existing.write_bytes(b"an earlier result")
    with pytest.raises(FileExistsError, match="kept.dcm"):
        write_seg(existing, scan.metadata, [SegmentResult("dice", "dice", scan.data > 0)])
    assert existing.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat", "kept.dcm", "scan.png"]
