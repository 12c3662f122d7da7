"""Batch robustness (issue #20, class 4): a bad item (any exception, native ``BaseException``
panics included) fails alone and the run goes on, Ctrl-C still stops it; non-UTF-8 file names
survive into the result; names that collide get distinct items; the manifest says exactly what
ran; a requested checkpoint that ran on no image makes the exit status 1; a result ZIP that
another run publishes meanwhile is never replaced."""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_segloss import batch
from napari_segloss.batch import process, runner
from napari_segloss.cli import main
from napari_segloss.data.synthetic import generate_slice
from napari_segloss.io.writers import write_dicom_series
from napari_segloss.outputs import OutputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Panic(BaseException):
    """What pyo3 raises for a Rust panic (``pyo3_runtime.PanicException`` is a BaseException)."""


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _pair(folder: Path, stem: str, seed: int) -> None:
    s = generate_slice(seed, 64)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.png").write_bytes(_png(s.image))
    (folder / f"{stem}_mask.png").write_bytes(_png(s.mask.astype(np.uint8) * 255))


def _read(out: Path, member: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(out) as archive:
        return list(csv.DictReader(io.StringIO(archive.read(member).decode("utf-8"))))


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    for i, stem in enumerate(("case0", "case1", "case2")):
        _pair(tmp_path / "cohort", stem, i)
    return tmp_path / "cohort"


@pytest.fixture
def dice(tiny_checkpoint_dir: Path) -> str:
    return str(tiny_checkpoint_dir / "tiny_dice.json")


def test_a_panicking_reader_fails_one_item_and_the_batch_goes_on(cohort, dice, tmp_path, monkeypatch):
    real = runner.read_sample

    def read(item):
        if item.name == "case1":
            raise Panic("called `Result::unwrap()` on an `Err` value")
        return real(item)

    monkeypatch.setattr(runner, "read_sample", read)
    result = batch.run_batch(cohort, [dice], tmp_path / "out.zip", device="cpu")
    assert result.failed == 1 and sorted(r["image"] for r in result.rows) == ["case0", "case2"]
    manifest = {row["path"]: row for row in _read(result.out, "manifest.csv")}
    assert manifest["case1.png"]["status"] == "failed" and "Panic: called" in manifest["case1.png"]["reason"]
    assert manifest["case0.png"]["status"] == manifest["case2.png"]["status"] == "paired"


def test_ctrl_c_in_an_item_still_stops_the_run(cohort, dice, tmp_path, monkeypatch):
    def read(item):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "read_sample", read)
    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(cohort, [dice], tmp_path / "out.zip", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_a_checkpoint_that_ran_on_no_image_fails_the_batch(cohort, dice, tiny_registry, tmp_path, monkeypatch, capsys):
    def panics_for_bce(real):
        def run(images, segmenter, *args, **kwargs):
            if segmenter.card.name == "tiny_bce":
                raise Panic("native code gave up")
            return real(images, segmenter, *args, **kwargs)
        return run

    monkeypatch.setattr(process, "predict_many", panics_for_bce(process.predict_many))
    monkeypatch.setattr(process, "predict", panics_for_bce(process.predict))
    out = tmp_path / "out.zip"
    args = ["batch", str(cohort), "--checkpoint", "tiny_dice", "--checkpoint", "tiny_bce", "--out", str(out),
            "--device", "cpu", "--quiet"]
    assert main(args) == 1
    assert "ran on no image: tiny_bce" in capsys.readouterr().err
    assert {r["checkpoint"] for r in _read(out, "metrics.csv")} == {"tiny_dice"}
    with zipfile.ZipFile(out) as archive:
        run = json.loads(archive.read("run.json"))
    assert {c["name"]: c["images"] for c in run["checkpoints"]} == {"tiny_dice": 3, "tiny_bce": 0}
    reasons = {row["path"]: row["reason"] for row in _read(out, "manifest.csv")}
    assert "tiny_bce: Panic: native code gave up" in reasons["case0.png"]


def test_non_utf8_file_names_survive_into_the_result(dice, tmp_path, capsys, tiny_registry):
    folder = tmp_path / os.fsdecode(b"in_\xff")
    _pair(folder, os.fsdecode(b"scan_\xfe"), 0)
    out = tmp_path / os.fsdecode(b"out_\xfd.zip")
    assert main(["batch", str(folder), "--checkpoint", "tiny_dice", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr().out.encode("utf-8")  # what was printed holds no undecodable bytes
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        html = archive.read("report.html").decode("utf-8")
    assert "cases/scan_\\xfe/tiny_dice_pred_mask.png" in names and "scan_\\xfe" in html
    manifest = {row["path"]: row for row in _read(out, "manifest.csv")}
    assert manifest["scan_\\xfe.png"]["status"] == "paired" and manifest["scan_\\xfe.png"]["item"] == "scan_\\xfe"
    assert [r["image"] for r in _read(out, "metrics.csv")] == ["scan_\\xfe"]


def test_names_equal_but_for_case_get_distinct_items(dice, tmp_path):
    for stem, seed in (("A", 0), ("a", 1)):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{stem}.png").write_bytes(_png(generate_slice(seed, 64).image))
    result = batch.run_batch(tmp_path / "in", [dice], tmp_path / "out.zip", device="cpu")
    names = [item.name for item in result.items]
    assert len({n.casefold() for n in names}) == 2 and result.failed == 0
    with zipfile.ZipFile(result.out) as archive:
        folders = {n.split("/")[1] for n in archive.namelist() if n.startswith("cases/")}
    assert len({f.casefold() for f in folders}) == 2  # extractable on case-insensitive file systems


def test_two_series_with_the_same_number_and_description_are_two_rows(dice, tmp_path):
    study = tmp_path / "in" / "study"
    study.mkdir(parents=True)
    for seed in (1, 2):
        vol = np.stack([generate_slice(40 + seed + k, 48).image for k in range(2)])
        for path in write_dicom_series(vol, tmp_path / f"s{seed}", spacing=(3.0, 0.8, 0.8),
                                       series_description="T1 post", uid_seed=seed):
            path.rename(study / f"{seed}_{path.name}")
    result = batch.run_batch(tmp_path / "in", [dice], tmp_path / "out.zip", device="cpu")
    assert result.failed == 0 and len({r["image"] for r in result.rows}) == 2
    rows = [row for row in _read(result.out, "manifest.csv") if row["path"].startswith("study/")]
    assert len(rows) == 2 and len({row["item"] for row in rows}) == 2
    assert {row["status"] for row in rows} == {"unpaired"}


def test_a_processed_member_is_not_marked_skipped_by_its_duplicate(dice, tmp_path):
    source = tmp_path / "cohort.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(source, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
        archive.writestr("dup.png", _png(generate_slice(0, 64).image))
        archive.writestr("dup.png", _png(generate_slice(1, 64).image))
    result = batch.run_batch(source, [dice], tmp_path / "out.zip", device="cpu")
    assert [r["image"] for r in result.rows] == ["dup"]
    statuses = sorted(row["status"] for row in _read(result.out, "manifest.csv") if row["path"] == "dup.png")
    assert statuses == ["skipped", "unpaired"]  # the one processed, the duplicate refused


def test_a_result_zip_that_appears_or_changes_meanwhile_is_kept(cohort, dice, tmp_path, monkeypatch):
    out = tmp_path / "out.zip"
    real = runner.read_sample
    meanwhile: list[bytes] = []

    def another_run_publishes(item):
        if not meanwhile:
            meanwhile.append(other.read_bytes())
            os.replace(other, out)  # another run's finished result lands at out
        return real(item)

    other = batch.run_batch(cohort, [dice], tmp_path / "other.zip", device="cpu").out
    monkeypatch.setattr(runner, "read_sample", another_run_publishes)
    with pytest.raises(OutputError, match="appeared"):
        batch.run_batch(cohort, [dice], out, device="cpu")
    assert out.read_bytes() == meanwhile[0]

    previous = out.read_bytes()  # now a previous result: --overwrite may replace it, unless it changes
    other = batch.run_batch(cohort, [dice], tmp_path / "other.zip", device="cpu", threshold=0.25).out
    meanwhile.clear()
    with pytest.raises(OutputError, match="changed while this run was working"):
        batch.run_batch(cohort, [dice], out, device="cpu", overwrite=True)
    assert out.read_bytes() == meanwhile[0] != previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "out.zip"]  # no temporary files
