"""DICOM SEG written with highdicom: read back voxel for voxel by the plugin's reader, checked
against the source headers with pydicom and validated with dicom3tools' ``dciodvfy``."""

from __future__ import annotations

import json
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


def assert_same_voxels_in_space(back, affine_lps, mask: np.ndarray) -> None:
    """``back`` (read from a written file, in whatever array order its reader chose) marks the
    same patient positions (LPS mm) as ``mask`` on the scan with ``affine_lps``."""

    def points(affine, on: np.ndarray) -> np.ndarray:
        index = np.argwhere(on.reshape((-1, *on.shape[-2:])))
        world = (np.asarray(affine) @ np.c_[index, np.ones(len(index))].T)[:3].T
        return world[np.lexsort(np.round(world, 2).T[::-1])]

    assert (back.data > 0).sum() == mask.sum()
    np.testing.assert_allclose(points(back.metadata["affine_lps"], back.data > 0), points(affine_lps, mask), atol=1e-3)


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


def test_save_results_picks_the_inputs_format_and_never_overwrites(tmp_path, oblique_series):
    from napari_segloss.io.results import default_format, save_results

    scan = only(read_scans(oblique_series))
    results = [SegmentResult(name, name, blob(scan.data.shape, seed)) for seed, name in enumerate(("dice", "focal", "bce"))]
    assert default_format(scan.metadata) == "dicom-seg"
    written = save_results(tmp_path / "out", scan.metadata, scan.spacing, results)
    assert [p.name for p in written] == ["dice.seg.dcm", "focal.seg.dcm", "bce.seg.dcm"]
    for path, result in zip(written, results):
        np.testing.assert_array_equal(only(read_scans(path)).data > 0, result.mask)
    *again, combined = save_results(tmp_path / "both", scan.metadata, scan.spacing, results, combined=True)
    assert [p.name for p in again] == [p.name for p in written] and combined.name == "comparison.seg.dcm"
    assert [s.metadata["segments"][0]["label"] for s in read_scans(combined)] == ["dice", "focal", "bce"]
    before = {p: p.read_bytes() for p in written}
    with pytest.raises(FileExistsError, match=r"dice.seg.dcm: file exists \(3 of 3"):
        save_results(tmp_path / "out", scan.metadata, scan.spacing, results)
    assert all(p.read_bytes() == data for p, data in before.items())
    (nifti,) = save_results(tmp_path / "nii", scan.metadata, scan.spacing, results[:1], fmt="nifti")
    assert_same_voxels_in_space(only(read_scans(nifti)), scan.metadata["affine_lps"], results[0].mask)

    png = only(read_scans(write_array(tmp_path / "scan.png", np.zeros((8, 8), np.uint8))))
    assert default_format(png.metadata) == "png"
    with pytest.raises(SegWriteError, match="needs a DICOM input"):
        save_results(tmp_path / "png", png.metadata, png.spacing, [SegmentResult("dice", "dice", np.ones((8, 8), bool))],
                     fmt="dicom-seg")
    assert not (tmp_path / "png").exists()


@pytest.mark.usefixtures("tiny_registry")
def test_predict_cli_writes_a_seg_and_a_geometry_true_nifti_per_checkpoint(tmp_path, oblique_series, capsys):
    import nibabel as nib

    from napari_segloss.checkpoints import load
    from napari_segloss.cli import main

    scan = only(read_scans(oblique_series))
    # the untrained tiny networks give probabilities near 0.5: compare with the same command's TIFF
    assert main(["predict", str(oblique_series), "--checkpoint", "all", "--out", str(tmp_path / "png")]) == 0
    for fmt, name in (("dicom-seg", "prediction.seg.dcm"), ("nifti", "prediction.nii.gz")):
        out = tmp_path / fmt
        assert main(["predict", str(oblique_series), "--checkpoint", "all", "--format", fmt, "--out", str(out)]) == 0
        for checkpoint in ("tiny_bce", "tiny_dice", "tiny_focal"):
            path = out / checkpoint / name
            assert not (out / checkpoint / "prediction.tif").exists()
            expected = only(read_scans(tmp_path / "png" / checkpoint / "prediction.tif")).data > 0
            assert 0 < expected.sum() < expected.size
            assert_same_voxels_in_space(only(read_scans(path)), scan.metadata["affine_lps"], expected)
            if fmt == "dicom-seg":
                seg = pydicom.dcmread(path)
                algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
                assert algorithm.AlgorithmName == checkpoint
                assert load(checkpoint).card.weights_sha256 in str(algorithm.AlgorithmParameters)
            else:
                first = pydicom.dcmread(sorted(oblique_series.iterdir())[0])
                affine = nib.load(path).affine
                corner = np.asarray(first.ImagePositionPatient, float) * [-1, -1, 1]
                assert np.abs(np.linalg.inv(affine) @ [*corner, 1.0])[:2] == pytest.approx([0, 0], abs=1e-4)
    # several checkpoints in DICOM SEG: one comparison SEG beside them, a segment per checkpoint
    seg_out = tmp_path / "dicom-seg"
    comparison = {layer.metadata["segments"][0]["label"]: layer for layer in read_scans(seg_out / "comparison.seg.dcm")}
    assert sorted(comparison) == ["tiny_bce", "tiny_dice", "tiny_focal"]
    for checkpoint, layer in comparison.items():
        np.testing.assert_array_equal(layer.data > 0, only(read_scans(seg_out / checkpoint / "prediction.seg.dcm")).data > 0)
    summary = json.loads((seg_out / "metrics.json").read_text())
    assert summary["scans"][0]["comparison_seg"] == "comparison.seg.dcm"
    assert not (tmp_path / "nifti" / "comparison.seg.dcm").exists()
    # the probabilities as a FRACTIONAL SEG, on request
    out = tmp_path / "fractional"
    assert main(["predict", str(oblique_series), "--checkpoint", "tiny_dice", "--format", "dicom-seg",
                 "--probability-seg", "--out", str(out)]) == 0
    fractional = pydicom.dcmread(out / "tiny_dice" / "probability.seg.dcm")
    assert fractional.SegmentationType == "FRACTIONAL"
    heatmap = only(read_scans(tmp_path / "png" / "tiny_dice" / "heatmap.tif")).data
    assert heatmap.min() < 0.5 < heatmap.max()
    assert not (out / "comparison.seg.dcm").exists()  # one checkpoint: nothing to compare
    capsys.readouterr()
    assert main(["predict", str(oblique_series), "--probability-seg", "--out", str(tmp_path / "no")]) != 0
    assert "--format dicom-seg" in capsys.readouterr().err and not (tmp_path / "no").exists()
    png = write_array(tmp_path / "case.png", RNG.integers(0, 255, size=(64, 64)).astype(np.uint8))
    out = tmp_path / "refused"
    assert main(["predict", str(png), "--format", "dicom-seg", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a DICOM input" in err
    assert not out.exists()


@pytest.mark.parametrize("packed", [False, True])
def test_batch_archive_holds_a_seg_per_checkpoint_for_dicom_items(tmp_path, tiny_checkpoint_dir, oblique_series, packed):
    import io
    import zipfile

    import tifffile

    from napari_segloss.batch import process, run_batch

    source = tmp_path / "in"
    shutil.copytree(oblique_series, source / "case")
    write_array(source / "flat.png", RNG.integers(0, 255, size=(32, 32)).astype(np.uint8))  # no SEG for PNG
    if packed:
        with zipfile.ZipFile(tmp_path / "in.zip", "w") as z:
            for path in source.rglob("*"):
                z.write(path, path.relative_to(source).as_posix())
        source = tmp_path / "in.zip"
    names = ["tiny_dice", "tiny_focal"]
    result = run_batch(source, [str(tiny_checkpoint_dir / f"{n}.json") for n in names], tmp_path / "out.zip", device="cpu")
    assert result.failed == 0
    first = pydicom.dcmread(sorted(oblique_series.iterdir())[0])
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert not [m for m in z.namelist() if m.startswith("cases/flat/") and m.endswith(".dcm")]
        for name in names:
            seg_file = tmp_path / f"{name}.dcm"
            seg_file.write_bytes(z.read(process.seg_member_name("case", name)))
            mask = tifffile.imread(io.BytesIO(z.read(process.member_name("case", name, "pred_mask", True)))) > 0
            np.testing.assert_array_equal(only(read_scans(seg_file)).data > 0, mask)
            seg = pydicom.dcmread(seg_file)
            assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
            assert seg.SegmentSequence[0].SegmentLabel == name
            assert dciodvfy_errors(seg_file) == []
