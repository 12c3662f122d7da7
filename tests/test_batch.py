"""Batch mode (napari_segloss.batch): ZIP safety, pairing, outputs checked against the metrics
module, summary statistics against the statistics module, overwrite protection, cancel, dask, CLI."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_segloss import batch, metrics
from napari_segloss.batch import archive, process, runner, samples
from napari_segloss.checkpoints import CheckpointError
from napari_segloss.checkpoints.registry import locate
from napari_segloss.cli import main
from napari_segloss.data.synthetic import generate_slice
from napari_segloss.inference import InferenceCancelled, Segmenter, predict, predict_many
from napari_segloss.io import read_scans
from napari_segloss.io.writers import write_dicom_series
from napari_segloss.outputs import OutputError
from napari_segloss.spacing import known_spacing

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
CKPTS = ("tiny_dice", "tiny_bce")
#: output names of the items that succeed in the standard ZIP, and whether they have a mask
GOOD = {"case0": True, "case1": True, "case2": True, "photo": True, "cohort/b1": True, "lonely": False,
        "vol": True, "series1": False}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def as8(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float64) / max(1, image.max()) * 255).astype(np.uint8)


def build_input(folder: Path) -> Path:
    """Standard batch input folder: pairs, images/ + masks/, a JPG pair, an unpaired image and
    mask, a corrupt PNG, a mask of the wrong shape, a non-image file, a TIFF volume pair and a
    DICOM series folder."""
    folder.mkdir(parents=True)
    for i in range(3):
        s = generate_slice(i, SIZE)
        (folder / f"case{i}.png").write_bytes(png(s.image))
        (folder / f"case{i}_mask.png").write_bytes(png(s.mask.astype(np.uint8) * 255))
    s = generate_slice(10, SIZE)
    (folder / "photo.jpg").write_bytes(jpg(as8(s.image)))
    (folder / "photo_mask.jpg").write_bytes(jpg(s.mask.astype(np.uint8) * 255))
    for sub in ("images", "masks"):
        (folder / "cohort" / sub).mkdir(parents=True)
    s = generate_slice(11, SIZE)
    (folder / "cohort" / "images" / "b1.png").write_bytes(png(s.image))
    (folder / "cohort" / "masks" / "b1.png").write_bytes(png(s.mask.astype(np.uint8) * 255))
    (folder / "lonely.png").write_bytes(png(generate_slice(12, SIZE).image))
    (folder / "orphan_mask.png").write_bytes(png(np.zeros((SIZE, SIZE), np.uint8)))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    (folder / "odd.png").write_bytes(png(generate_slice(13, SIZE).image))
    (folder / "odd_mask.png").write_bytes(png(np.zeros((SIZE, SIZE + 3), np.uint8)))
    (folder / "notes.txt").write_text("not an image")
    vol = np.stack([generate_slice(20 + k, 48).image for k in range(3)])
    truth = np.zeros(vol.shape, np.uint8)
    truth[:, 10:30, 12:28] = 1
    tifffile.imwrite(folder / "vol.tif", vol, imagej=True, resolution=(1 / 0.8, 1 / 0.8),
                     metadata={"unit": "mm", "spacing": 2.0, "axes": "ZYX"})
    tifffile.imwrite(folder / "vol_mask.tif", truth, imagej=True, metadata={"axes": "ZYX"})
    write_dicom_series(vol[:2], folder / "series1", spacing=(3.0, 0.8, 0.8))
    return folder


def zip_folder(folder: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
        for name, payload in (extra or {}).items():
            z.writestr(name, payload)
    return target


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_input(tmp_path_factory.mktemp("batch") / "input")


@pytest.fixture(scope="module")
def input_zip(data: Path) -> Path:
    return zip_folder(data, data.parent / "input.zip", {"../evil.png": png(np.zeros((4, 4), np.uint8)),
                                                       "/abs/evil.png": b"x"})


@pytest.fixture(scope="module")
def ckpts(tiny_checkpoint_dir: Path) -> list[str]:
    return [str(tiny_checkpoint_dir / f"{name}.json") for name in CKPTS]


@pytest.fixture(scope="module")
def result(input_zip: Path, ckpts: list[str]) -> runner.BatchResult:
    out = input_zip.parent / "results.zip"
    seen: list[runner.BatchProgress] = []
    res = batch.run_batch(input_zip, ckpts, out, device="cpu", progress=seen.append)
    res.progress_seen = seen  # type: ignore[attr-defined]
    return res


def read_csv(out: Path, member: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(out) as z:
        return list(csv.DictReader(io.StringIO(z.read(member).decode("utf-8"))))


# --- safe extraction -------------------------------------------------------------------


def mark_encrypted(path: Path, name: bytes) -> None:
    """Set the "encrypted" flag (bit 0) of member ``name`` in the central directory (zipfile
    cannot write encrypted members)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02")
    while raw[at + 46 : at + 46 + len(name)] != name:
        at = raw.index(b"PK\x01\x02", at + 4)
    raw[at + 8] |= 0x1
    path.write_bytes(bytes(raw))


def test_safe_extract_refuses_unsafe_members(tmp_path: Path) -> None:
    src = tmp_path / "evil.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("ok/a.png", png(np.zeros((4, 4), np.uint8)))
        z.writestr("../slip.png", b"x")
        z.writestr("ok/../../slip2.png", b"x")
        z.writestr("/etc/abs.png", b"x")
        z.writestr("C:\\windows\\drive.png", b"x")
        link = zipfile.ZipInfo("ok/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
        z.writestr("readme.md", b"text")
        z.writestr("ok/.hidden.png", b"x")
        z.writestr("noext", b"plain bytes, no DICOM magic" * 10)
        z.writestr("dicomish", b"\0" * 128 + b"DICM" + b"\0" * 16)
        z.writestr("secret.png", b"x")
        z.writestr("ok/a.png/inner.png", b"x")  # a file where a folder would have to be
        z.writestr("bad.png", png(np.ones((32, 32), np.uint8)))
    mark_encrypted(src, b"secret.png")
    raw = bytearray(src.read_bytes())
    at = raw.index(png(np.ones((32, 32), np.uint8))) + 40
    raw[at] ^= 0xFF  # breaks the CRC of bad.png
    src.write_bytes(bytes(raw))
    dest = tmp_path / "dest"
    got = archive.safe_extract(src, dest)
    assert sorted(got.extracted) == ["dicomish", "ok/a.png"]
    reasons = {r.name: r.reason for r in got.refused}
    assert "zip slip" in reasons["../slip.png"] and "zip slip" in reasons["ok/../../slip2.png"]
    assert reasons["/etc/abs.png"] == "absolute path" == reasons["C:\\windows\\drive.png"]
    assert reasons["ok/link.png"] == "symbolic link"
    assert "not an image" in reasons["readme.md"] and "not DICOM" in reasons["noext"]
    assert "hidden" in reasons["ok/.hidden.png"] and "encrypted" in reasons["secret.png"]
    assert reasons["ok/a.png/inner.png"].startswith("cannot be extracted")
    assert reasons["bad.png"].startswith("corrupt member") and "CRC" in reasons["bad.png"]
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"evil.zip", "dest/ok/a.png", "dest/dicomish"}  # nothing outside dest


def test_zip_bombs_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "bomb.zip"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.tif", bytes(8 * 2**20))  # ~1000:1
        z.writestr("small.png", png(np.zeros((8, 8), np.uint8)))
    got = archive.safe_extract(src, tmp_path / "a")
    assert got.extracted == ["small.png"] and "compression ratio" in got.refused[0].reason
    assert got.refused[0].name == "zeros.tif" and not (tmp_path / "a" / "zeros.tif").exists()
    with pytest.raises(archive.ArchiveError, match="exceeds the limit"):
        archive.safe_extract(src, tmp_path / "b", max_total_bytes=2**20)
    with pytest.raises(archive.ArchiveError, match="members exceed"):
        archive.safe_extract(src, tmp_path / "c", max_members=1)
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(archive.ArchiveError, match="not a readable ZIP"):
        archive.safe_extract(tmp_path / "fake.zip", tmp_path / "d")


# --- discovery ---------------------------------------------------------------------------


def test_discover_pairs_by_name_and_folders(data: Path) -> None:
    found = batch.discover(data)
    items = {i.name: i for i in found.items}
    assert set(items) == {*GOOD, "broken", "odd"}
    assert items["case0"].mask == data / "case0_mask.png"
    assert items["cohort/b1"].image == data / "cohort/images/b1.png"
    assert items["cohort/b1"].mask == data / "cohort/masks/b1.png"
    assert items["series1"].image == data / "series1" and items["series1"].source == "series1/"
    assert items["vol"].mask == data / "vol_mask.tif" and items["lonely"].mask is None
    status = {e.path: e.status for e in found.entries}
    assert status["lonely.png"] == "unpaired" and status["orphan_mask.png"] == "unpaired"
    assert status["notes.txt"] == "skipped" and status["case1_mask.png"] == "paired"
    assert status["series1/"] == "unpaired"  # one entry for the whole series folder
    assert not any(e.path.startswith("series1/slice") for e in found.entries)


def test_chunks_group_equal_2d_shapes_only() -> None:
    def sample(name: str, shape: tuple[int, ...]) -> samples.Sample:
        return samples.Sample(name, np.zeros(shape, np.uint8), None, (1.0,) * len(shape), False)

    stream = [sample("a", (8, 8)), sample("b", (8, 8)), sample("c", (8, 9)), sample("v", (2, 8, 8)),
              sample("d", (8, 9)), sample("e", (8, 9)), sample("f", (8, 9))]
    groups = [[s.name for s in chunk] for chunk in samples.chunked(stream, max_batch=2)]
    assert groups == [["a", "b"], ["c"], ["v"], ["d", "e"], ["f"]]


def test_batched_forward_equals_predict(tiny_checkpoint_dir: Path) -> None:
    images = [generate_slice(s, SIZE).image for s in range(3)]
    ckpt = str(tiny_checkpoint_dir / "tiny_focal.json")
    batched = predict_many(images, ckpt, device="cpu")
    for image, prob in zip(images, batched):
        np.testing.assert_allclose(prob, predict(image, ckpt, device="cpu").probability, atol=1e-5)


def test_resample_runs_each_image_at_its_own_spacing(tiny_checkpoint_dir: Path) -> None:
    ckpt = str(tiny_checkpoint_dir / "tiny_focal.json")
    ref = process.CheckpointRef("tiny_focal", "focal", "pixel", ckpt)
    images = [generate_slice(s, SIZE).image for s in range(2)]
    stream = [samples.Sample(f"s{i}", image, None, (0.5 * (i + 1),) * 2, False) for i, image in enumerate(images)]
    segmenter = Segmenter.load(ckpt, device="cpu")
    for resample in (False, True):
        job = process.Job((ref,), device="cpu", resample=resample)
        probs = process._probabilities(stream, segmenter, job, None)
        for sample, prob in zip(stream, probs):
            expected = predict(sample.image, ckpt, device="cpu", spacing=sample.spacing, resample=resample)
            np.testing.assert_allclose(prob, expected.probability, atol=1e-5)
    # at 0.5 mm the resampled run differs from the plain one; at 1 mm (the card's) it does not
    plain = process._probabilities(stream, segmenter, process.Job((ref,), device="cpu", resample=False), None)
    assert not np.allclose(plain[0], probs[0], atol=1e-3)
    np.testing.assert_allclose(plain[1], probs[1], atol=1e-5)


def test_predict_many_mixed_shapes_and_cancel(tiny_checkpoint_dir: Path) -> None:
    ckpt = str(tiny_checkpoint_dir / "tiny_focal.json")
    volume = np.stack([generate_slice(s, SIZE).image for s in range(2)])
    flat = generate_slice(5, SIZE).image[:48, :40]
    probs = predict_many([volume, flat], ckpt, device="cpu")
    assert [p.shape for p in probs] == [volume.shape, flat.shape]
    np.testing.assert_allclose(probs[0], predict(volume, ckpt, device="cpu").probability, atol=1e-5)
    with pytest.raises(InferenceCancelled):
        predict_many([flat, flat], ckpt, device="cpu", cancel=lambda: True)


# --- a full run --------------------------------------------------------------------------


def test_output_zip_lists_every_output(result: runner.BatchResult) -> None:
    with zipfile.ZipFile(result.out) as z:
        names = set(z.namelist())
    expected = {"metrics.csv", "summary.csv", "manifest.csv", "run.json", "report.html", "report.pdf"}
    for item, has_truth in GOOD.items():
        volume = item in ("vol", "series1")
        for ckpt in CKPTS:
            kinds = process.OUTPUT_KINDS if has_truth else process.OUTPUT_KINDS[:3]
            expected |= {process.member_name(item, ckpt, kind, volume) for kind in kinds}
            if item == "series1":  # the DICOM series (patient geometry) also gets a SEG per checkpoint
                expected.add(process.seg_member_name(item, ckpt))
    assert names == expected


def test_metrics_csv_matches_metrics_compute(result: runner.BatchResult, data: Path, ckpts: list[str]) -> None:
    rows = read_csv(result.out, "metrics.csv")
    assert [(r["image"], r["checkpoint"]) for r in rows] == [
        (i.name, c) for i in result.items if i.name in GOOD for c in CKPTS
    ]
    assert list(rows[0])[-len(metrics.METRIC_KEYS):] == list(metrics.METRIC_KEYS)
    sources = {"case1": ("case1.png", "case1_mask.png"), "vol": ("vol.tif", "vol_mask.tif"),
               "cohort/b1": ("cohort/images/b1.png", "cohort/masks/b1.png"), "lonely": ("lonely.png", None)}
    for name, (image_file, mask_file) in sources.items():
        scan = read_scans(data / image_file)[0]
        truth = read_scans(data / mask_file)[0].data != 0 if mask_file else None
        for ckpt_path, ckpt in zip(ckpts, CKPTS):
            mask = predict(scan.data, ckpt_path, device="cpu", spacing=scan.spacing).mask(0.5)
            row = next(r for r in rows if r["image"] == name and r["checkpoint"] == ckpt)
            known = known_spacing(scan.spacing, scan.spacing_known)
            assert row["scaling"] == predict(scan.data, ckpt_path, device="cpu", spacing=known).metadata["scaling_note"]
            if truth is None:
                expected = {k: math.nan for k in metrics.METRIC_KEYS} | {"volume_pred": metrics.volume(mask, scan.spacing)}
                assert row["has_truth"] == "False"
            else:
                expected = metrics.compute(mask, truth, scan.spacing)
            for key in metrics.METRIC_KEYS:
                np.testing.assert_allclose(float(row[key]), expected[key], rtol=1e-9, equal_nan=True, err_msg=f"{name} {key}")
    vol_row = next(r for r in rows if r["image"] == "vol")
    assert vol_row["shape"] == "3x48x48" and vol_row["spacing_mm"] == "2x0.8x0.8"


def test_prediction_files_round_trip_through_the_readers(result: runner.BatchResult, data: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(result.out) as z:
        for member in ("cases/case2/tiny_dice_pred_mask.png", "cases/vol/tiny_bce_pred_mask.tif",
                       "cases/vol/tiny_bce_heatmap.tif", "cases/case2/tiny_dice_difference.png"):
            (tmp_path / Path(member).name).write_bytes(z.read(member))
    scan = read_scans(data / "case2.png")[0]
    expected = predict(scan.data, str(result.checkpoints[0].path), device="cpu").mask(0.5)
    np.testing.assert_array_equal(read_scans(tmp_path / "tiny_dice_pred_mask.png")[0].data != 0, expected)
    vol = read_scans(tmp_path / "tiny_bce_pred_mask.tif")[0]
    assert vol.data.shape == (3, 48, 48) and vol.spacing == pytest.approx((2.0, 0.8, 0.8))
    heat = read_scans(tmp_path / "tiny_bce_heatmap.tif")[0]
    assert heat.data.shape == (3, 48, 48, 3) and heat.rgb
    diff = np.asarray(Image.open(tmp_path / "tiny_dice_difference.png"))
    assert diff.shape == (SIZE, SIZE, 3) and diff.dtype == np.uint8


def test_summary_csv_matches_statistics(result: runner.BatchResult) -> None:
    rows = read_csv(result.out, "metrics.csv")
    summary = {r["checkpoint"]: r for r in read_csv(result.out, "summary.csv")}
    assert list(summary) == list(CKPTS)
    for ckpt in CKPTS:
        mine = [r for r in rows if r["checkpoint"] == ckpt]
        assert int(summary[ckpt]["n_images"]) == len(mine) == len(GOOD)
        assert int(summary[ckpt]["n_with_truth"]) == sum(GOOD.values())
        for key in metrics.METRIC_KEYS:
            pool = mine if key == "volume_pred" else [r for r in mine if r["has_truth"] == "True"]
            values = [float(r[key]) for r in pool if not math.isnan(float(r[key]))]
            assert int(summary[ckpt][f"{key}_n"]) == len(values)
            want = (statistics.fmean(values) if values else math.nan,
                    statistics.stdev(values) if len(values) > 1 else math.nan,
                    statistics.median(values) if values else math.nan)
            got = tuple(float(summary[ckpt][f"{key}_{s}"]) for s in ("mean", "std", "median"))
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=key)


def test_manifest_records_pairs_unpaired_skipped_and_failures(result: runner.BatchResult) -> None:
    manifest = {r["path"]: r for r in read_csv(result.out, "manifest.csv")}
    assert manifest["case0.png"]["status"] == "paired" and manifest["case0.png"]["partner"] == "case0_mask.png"
    assert manifest["lonely.png"]["status"] == "unpaired" and "no mask" in manifest["lonely.png"]["reason"]
    assert manifest["orphan_mask.png"]["status"] == "unpaired"
    assert manifest["notes.txt"]["status"] == "skipped"
    assert manifest["../evil.png"]["status"] == "skipped" and "zip slip" in manifest["../evil.png"]["reason"]
    assert manifest["/abs/evil.png"]["status"] == "skipped" and "absolute" in manifest["/abs/evil.png"]["reason"]
    assert manifest["broken.png"]["status"] == "failed" and "unreadable" in manifest["broken.png"]["reason"]
    assert "napari-segloss-batch" not in manifest["broken.png"]["reason"]  # no temporary paths
    assert manifest["odd.png"]["status"] == "failed" and "shape" in manifest["odd.png"]["reason"]
    assert result.failed == 2


def test_report_and_run_info_are_self_contained(result: runner.BatchResult) -> None:
    with zipfile.ZipFile(result.out) as z:
        page = z.read("report.html").decode("utf-8")
        run = json.loads(z.read("run.json"))
    assert page.count("data:image/png;base64,") == 1 + len(GOOD) * len(CKPTS)  # box plot + grid
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "tiny_dice" in page and "Dice per loss" in page
    assert run["images"] == len(GOOD) + 2 and run["failed"] == 2 and run["threshold"] == 0.5
    assert [c["name"] for c in run["checkpoints"]] == list(CKPTS)
    assert all(len(c["weights_sha256"]) == 64 and "/" not in c["path"] for c in run["checkpoints"])


def test_pdf_report_has_summary_boxplot_and_case_pages(result: runner.BatchResult) -> None:
    import re

    with zipfile.ZipFile(result.out) as z:
        pdf = z.read("report.pdf")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    pages = len(re.findall(rb"/Type /Page\b", pdf))
    case_pages = -(-len(GOOD) // 4) * -(-len(CKPTS) // 6)
    assert pages == 1 + 1 + case_pages  # summary table, box plot, thumbnail grids


def test_progress_reaches_total_with_eta(result: runner.BatchResult) -> None:
    seen = result.progress_seen  # type: ignore[attr-defined]
    total = len(GOOD) + 2
    assert seen[0].done == 0 and seen[0].eta_s is None and seen[-1].done == total
    assert all(p.total == total for p in seen)
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert all(p.eta_s is not None and p.eta_s >= 0 for p in seen[1:]) and seen[-1].eta_s == 0
    assert seen[-1].failed == 2


def test_worst_cases_load_back_from_the_zip_input(result: runner.BatchResult) -> None:
    cases = result.worst(3)
    dice = [c.dice for c in cases]
    rows = read_csv(result.out, "metrics.csv")
    defined = sorted(float(r["dice"]) for r in rows if r["has_truth"] == "True" and r["dice"] != "nan")
    assert dice == pytest.approx(defined[:3])
    case = next(c for c in result.worst(100) if c.item == "vol")
    loaded = batch.load_case(result, case)
    assert loaded.sample.truth is not None and loaded.sample.truth.sum() == 3 * 20 * 16
    assert loaded.prediction.shape == (3, 48, 48) and loaded.prediction.dtype == bool


def test_folder_input_threads_and_dask_agree(result: runner.BatchResult, data: Path, ckpts: list[str],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    from napari_segloss import checkpoints
    from napari_segloss.checkpoints import loading

    reference = read_csv(result.out, "metrics.csv")
    threads = batch.run_batch(data, ckpts, tmp_path / "threads.zip", device="cpu", workers=2)
    assert read_csv(threads.out, "metrics.csv") == reference
    loads: list[str] = []
    original = loading._load_uncached
    monkeypatch.setattr(loading, "_load_uncached", lambda *a: loads.append(str(a[0])) or original(*a))
    checkpoints.clear_cache()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        dask = batch.run_batch(data, ckpts, tmp_path / "dask.zip", device="cpu", scheduler=cluster.scheduler_address)
    assert read_csv(dask.out, "metrics.csv") == reference
    assert sorted(loads) == sorted(ckpts)  # the worker loaded each checkpoint once for all chunks


# --- safety of the output ----------------------------------------------------------------


def test_existing_output_is_not_overwritten_unless_asked(data: Path, ckpts: list[str], tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.png").write_bytes((data / "case0.png").read_bytes())
    out = tmp_path / "out.zip"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="overwrite"):
        batch.run_batch(small, ckpts[:1], out, device="cpu")
    with pytest.raises(OutputError, match="not a previous napari-segloss result"):  # not ours: never replaced
        batch.run_batch(small, ckpts[:1], out, device="cpu", overwrite=True)
    assert out.read_bytes() == b"precious"
    out.unlink()
    batch.run_batch(small, ckpts[:1], out, device="cpu")
    first = read_csv(out, "manifest.csv")
    (small / "b.png").write_bytes((data / "case1.png").read_bytes())
    batch.run_batch(small, ckpts[:1], out, device="cpu", overwrite=True)  # a previous result is replaced
    assert len(read_csv(out, "manifest.csv")) == len(first) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip", "small"]  # no temporary files


def test_cancel_writes_nothing_and_cleans_up(data: Path, ckpts: list[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    seen: list[runner.BatchProgress] = []
    out = tmp_path / "out" / "cancelled.zip"
    with pytest.raises(batch.BatchCancelled):
        batch.run_batch(data, ckpts, out, device="cpu", progress=seen.append, cancel=lambda: len(seen) >= 2)
    assert 0 < seen[-1].done < seen[-1].total
    assert not out.exists() and list(out.parent.iterdir()) == [] and list(scratch.iterdir()) == []


def test_bad_inputs_raise_clear_errors(data: Path, ckpts: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(batch.BatchError, match="no images found"):
        batch.run_batch(empty, ckpts, tmp_path / "a.zip", device="cpu")
    with pytest.raises(batch.BatchError, match="folder or a ZIP"):
        batch.run_batch(data / "case0.png", ckpts, tmp_path / "a.zip", device="cpu")
    with pytest.raises(batch.BatchError, match=r"\.zip"):
        batch.run_batch(data, ckpts, tmp_path / "a.tar", device="cpu")
    with pytest.raises(batch.BatchError, match="threshold"):
        batch.run_batch(data, ckpts, tmp_path / "a.zip", threshold=1.5)
    with pytest.raises(batch.BatchError, match="unknown checkpoint 'nope'"):
        batch.run_batch(data, ["nope"], tmp_path / "a.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_resolve_checkpoints_by_name_all_and_path(tiny_registry: Path) -> None:
    assert [r.name for r in batch.resolve_checkpoints(["all"])] == ["tiny_bce", "tiny_focal", "tiny_dice"]
    refs = batch.resolve_checkpoints(["tiny_dice", str(tiny_registry / "tiny_bce.json"), "tiny_dice"])
    assert [(r.name, r.loss, r.family) for r in refs] == [("tiny_dice", "dice", "region"), ("tiny_bce", "bce", "pixel")]


def test_resolve_checkpoints_takes_names_exactly_as_predict_does(tiny_registry: Path) -> None:
    with pytest.raises(batch.BatchCheckpointError, match=r"did you mean 'tiny_dice'\? names are case-sensitive"):
        batch.resolve_checkpoints(["TINY_DICE"])
    with pytest.raises(CheckpointError, match=r"did you mean 'tiny_dice'"):
        locate("TINY_DICE")


# --- command line ------------------------------------------------------------------------


def test_cli_exit_codes(tiny_registry: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    small = tmp_path / "small"
    small.mkdir()
    for name in ("case0.png", "case0_mask.png"):
        (small / name).write_bytes((data / name).read_bytes())
    out = tmp_path / "r.zip"
    args = ["batch", str(small), "--checkpoint", "tiny_dice", "--checkpoint", "tiny_bce", "--out", str(out),
            "--device", "cpu", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "tiny_bce" in printed
    assert {r["checkpoint"] for r in read_csv(out, "metrics.csv")} == {"tiny_dice", "tiny_bce"}
    assert main(args) == 4 and "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--checkpoint", "nope"]) == 5
    assert main(["batch", str(tmp_path / "missing"), "--out", str(tmp_path / "m.zip"), "--quiet"]) == 3
    (small / "broken.png").write_bytes(b"garbage")
    assert main([*args, "--overwrite"]) == 1 and "failed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--threshold", "2"])
    assert exc.value.code == 2
    all_out = tmp_path / "all.zip"
    assert main(["batch", str(small), "--out", str(all_out), "--device", "cpu", "--quiet"]) == 1
    assert {r["checkpoint"] for r in read_csv(all_out, "metrics.csv")} == {"tiny_dice", "tiny_bce", "tiny_focal"}


def test_folder_with_several_dicom_series_gives_one_item_per_series(tmp_path: Path, tiny_checkpoint_dir: Path) -> None:
    from napari_segloss.batch.pairing import discover

    study = tmp_path / "in" / "study"
    study.mkdir(parents=True)
    volumes = {}
    for seed, description in ((1, "T1 post"), (2, "FLAIR")):
        vol = np.stack([generate_slice(30 + seed + k, 48).image for k in range(2)])
        volumes[description] = vol
        written = write_dicom_series(vol, tmp_path / description, spacing=(3.0, 0.8, 0.8),
                                     series_description=description, uid_seed=seed)
        for path in (written if isinstance(written, list) else sorted((tmp_path / description).iterdir())):
            Path(path).rename(study / f"{seed}_{Path(path).name}")
    found = discover(tmp_path / "in")
    assert sorted(item.name for item in found.items) == ["study/series_1_FLAIR", "study/series_1_T1_post"]
    assert sorted(e.path for e in found.entries) == ["study/ [series 1: FLAIR]", "study/ [series 1: T1 post]"]

    ckpt = str(tiny_checkpoint_dir / "tiny_dice.json")
    result = batch.run_batch(tmp_path / "in", [ckpt], tmp_path / "out.zip", device="cpu")
    assert result.failed == 0 and sorted(r["image"] for r in result.rows) == sorted(i.name for i in found.items)
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        manifest = list(csv.DictReader(io.TextIOWrapper(z.open("manifest.csv"), encoding="utf-8")))
        for description, vol in volumes.items():
            name = f"study/series_1_{description.replace(' ', '_')}"
            heat = tifffile.imread(io.BytesIO(z.read(process.member_name(name, "tiny_dice", "heatmap", True))))
            assert heat.shape[:3] == vol.shape  # each item is its own series, read alone
    assert {row["status"] for row in manifest if row["path"].startswith("study/")} == {"unpaired"}
    # one series alone in a folder is still one plain item
    single = tmp_path / "single" / "s"
    write_dicom_series(volumes["FLAIR"], single, spacing=(3.0, 0.8, 0.8))
    assert [item.name for item in discover(tmp_path / "single").items] == ["s"]
