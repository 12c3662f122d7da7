"""``napari-segloss predict``: outputs, metrics, comparison table, errors, atomic output folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_segloss import predict_cli
from napari_segloss.cli import main
from napari_segloss.inference import predict
from napari_segloss.io import Scan, read_scans
from napari_segloss.io.writers import write_array

NAMES = ["tiny_bce", "tiny_dice", "tiny_focal"]


def _scan_2d(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((96, 80), bool)
    truth[30:62, 20:52] = True
    image = np.clip(60 + 120 * truth + rng.normal(0, 25, truth.shape), 0, 255).astype(np.uint8)
    return image, truth


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    image, truth = _scan_2d()
    volume = np.stack([_scan_2d(s)[0] for s in range(4)]).astype(np.uint16) * 10
    vol_truth = np.stack([_scan_2d(s)[1] for s in range(4)])
    paths = {
        "image": write_array(tmp_path / "case.png", image),
        "mask": write_array(tmp_path / "case_mask.png", truth),
        "volume": write_array(tmp_path / "vol.tif", volume, spacing=(2.5, 0.8, 0.8)),
        "vol_mask": write_array(tmp_path / "vol_mask.tif", vol_truth.astype(np.uint8), spacing=(2.5, 0.8, 0.8)),
    }
    return paths


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_all_checkpoints_2d_with_mask(tiny_registry, files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(files["image"]), "--mask", str(files["mask"]), "--checkpoint", "all", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    image, truth = np.asarray(Image.open(files["image"])), np.asarray(Image.open(files["mask"])) > 0

    for name in NAMES:
        folder = out / name
        assert sorted(p.name for p in folder.iterdir()) == ["contours.png", "difference.png", "heatmap.png", "prediction.png"]
        pred = np.asarray(Image.open(folder / "prediction.png"))
        assert pred.shape == image.shape and set(np.unique(pred)) <= {0, 255}
        assert np.array_equal(pred > 0, predict(image, name, device="cpu").mask(0.5))  # same as the API
        for render in ("heatmap", "contours", "difference"):
            rgb = np.asarray(Image.open(folder / f"{render}.png"))
            assert rgb.shape == (*image.shape, 3) and rgb.dtype == np.uint8

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    report = json.loads((out / "metrics.json").read_text())
    assert sorted(r["checkpoint"] for r in rows) == NAMES
    assert report["mask"] == str(files["mask"]) and report["threshold"] == 0.5
    for row, record in zip(rows, report["results"]):
        pred = np.asarray(Image.open(out / row["checkpoint"] / "prediction.png")) > 0
        assert float(row["dice"]) == pytest.approx(_dice(pred, truth))  # independent recomputation
        assert record["dice"] == pytest.approx(float(row["dice"]))
        assert record["metadata"]["weights_sha256"] and record["files"]
    dices = [float(r["dice"]) for r in rows]
    assert dices == sorted(dices, reverse=True)

    table = [line.split() for line in printed.splitlines() if line.split() and line.split()[0] in NAMES]
    assert [line[0] for line in table] == [r["checkpoint"] for r in rows]  # printed best Dice first
    assert [float(line[2]) for line in table] == pytest.approx(dices, abs=5e-4)
    assert _leftovers(tmp_path) == []


def test_volume_writes_tiffs_with_spacing(tiny_registry, files, tmp_path, capsys):
    out = tmp_path / "out3d"
    assert main(["predict", str(files["volume"]), "--mask", str(files["vol_mask"]), "--checkpoint", "tiny_focal", "--out", str(out)]) == 0
    assert "mm³" in capsys.readouterr().out
    folder = out / "tiny_focal"
    assert sorted(p.name for p in folder.iterdir()) == ["contours.tif", "difference.tif", "heatmap.tif", "prediction.tif"]
    pred = read_scans(folder / "prediction.tif")[0]
    assert pred.data.shape == (4, 96, 80) and pred.spacing == pytest.approx((2.5, 0.8, 0.8))
    diff = read_scans(folder / "difference.tif")[0].data
    assert set(np.unique(diff)) <= {0, 1, 2, 3}
    truth = read_scans(files["vol_mask"])[0].data > 0
    assert np.array_equal(diff == 1, (pred.data > 0) & truth)
    heat = read_scans(folder / "heatmap.tif")[0].data
    assert heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    record = json.loads((out / "metrics.json").read_text())["results"][0]
    assert record["volume_truth"] == pytest.approx(truth.sum() * 2.5 * 0.8 * 0.8)


def test_resample_runs_at_the_card_pixel_size(tiny_registry, files, tmp_path, capsys):
    plain, resampled = tmp_path / "plain", tmp_path / "resampled"
    args = ["predict", str(files["volume"]), "--checkpoint", "tiny_focal"]
    assert main([*args, "--no-resample", "--out", str(plain)]) == 0
    printed_plain = capsys.readouterr().out
    assert main([*args, "--resample", "--out", str(resampled)]) == 0
    printed = capsys.readouterr().out  # the scale choice is shown, and how to switch it off
    size = f"({round(96 * 0.8)} x {round(80 * 0.8)})"  # 0.8 mm pixels brought to the card's 1 mm
    assert f"scale: resampled to the checkpoint's 1 x 1 mm pixels {size}" in printed and "--no-resample" in printed
    assert "scale: run on the input grid (96 x 80)" in printed_plain and "--no-resample" not in printed_plain
    report = json.loads((resampled / "metrics.json").read_text())
    assert report["resample"] is True and json.loads((plain / "metrics.json").read_text())["resample"] is False
    record = report["results"][0]["metadata"]
    assert record["resampled_to_mm"] == [1.0, 1.0]  # the tiny card's pixel size; the file has 0.8 mm
    heat = [read_scans(folder / "tiny_focal" / "heatmap.tif")[0].data for folder in (plain, resampled)]
    assert heat[0].shape == heat[1].shape == (4, 96, 80) and not np.allclose(heat[0], heat[1])


def test_without_mask_default_checkpoint_and_threshold(tiny_registry, files, tmp_path, capsys):
    low, high = tmp_path / "low", tmp_path / "high"
    assert main(["predict", str(files["image"]), "--threshold", "0.1", "--out", str(low)]) == 0
    assert main(["predict", str(files["image"]), "--threshold", "0.9", "--out", str(high)]) == 0
    assert "foreground_pct" in capsys.readouterr().out
    assert sorted(p.name for p in (low / "tiny_dice").iterdir()) == ["contours.png", "heatmap.png", "prediction.png"]
    fg_low = (np.asarray(Image.open(low / "tiny_dice" / "prediction.png")) > 0).sum()
    fg_high = (np.asarray(Image.open(high / "tiny_dice" / "prediction.png")) > 0).sum()
    assert fg_low > fg_high
    row = json.loads((low / "metrics.json").read_text())["results"][0]
    assert row["checkpoint"] == "tiny_dice" and "dice" not in row  # default: the Dice checkpoint
    assert row["foreground_pct"] == pytest.approx(100 * fg_low / (96 * 80))


def test_several_scans_get_one_folder_each(tiny_registry, tmp_path, monkeypatch, capsys):
    scans = [Scan(_scan_2d(s)[0], (1.0, 1.0), (0.0, 0.0), name) for s, name in enumerate(["T1 axial", "T2 axial"])]
    monkeypatch.setattr("napari_segloss.io.read_scans", lambda path: scans)
    out = tmp_path / "multi"
    assert main(["predict", "series_folder", "--checkpoint", "tiny_bce", "--out", str(out)]) == 0
    assert (out / "T1_axial" / "tiny_bce" / "prediction.png").is_file()
    assert (out / "T2_axial" / "tiny_bce" / "prediction.png").is_file()
    assert "T2 axial" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message, status",
    [
        (["--checkpoint", "nope"], "unknown checkpoint 'nope'", 5),
        (["--mask", "{volume}"], "does not match image shape", 2),
        (["--device", "tpu"], "device", 2),
        (["--mask", "{missing}"], "cannot read mask", 3),
    ],
)
def test_errors_are_one_line_and_write_nothing(tiny_registry, files, tmp_path, capsys, extra, message, status):
    extra = [e.format(volume=files["volume"], missing=tmp_path / "absent.png") for e in extra]
    out = tmp_path / "out"
    assert main(["predict", str(files["image"]), *extra, "--out", str(out)]) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("napari-segloss predict: error:")
    assert not out.exists() and _leftovers(tmp_path) == []


def test_unreadable_image(tiny_registry, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    assert main(["predict", str(broken), "--out", str(tmp_path / "out")]) == 3
    assert "cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite_and_survives_a_failure(tiny_registry, files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["predict", str(files["image"]), "--checkpoint", "all", "--out", str(out)]
    assert main([*args[:-3], "tiny_bce", "--out", str(out)]) == 0  # a previous result
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(args) == 4
    assert "--overwrite" in capsys.readouterr().err

    real = predict_cli._write_outputs
    calls = []

    def fail_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(predict_cli, "_write_outputs", fail_on_second)
    assert main([*args, "--overwrite"]) == 4
    assert "disk full (simulated)" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old results are untouched
    assert _leftovers(tmp_path) == []

    monkeypatch.setattr(predict_cli, "_write_outputs", real)
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == NAMES and (out / "metrics.json").is_file()
    assert _leftovers(tmp_path) == []


def test_threshold_out_of_range_is_a_usage_error(files, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(files["image"]), "--threshold", "1.5"])
    assert exc.value.code == 2 and "must be in [0, 1]" in capsys.readouterr().err
