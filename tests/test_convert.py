"""The figshare converter (data/convert.py): .mat v7.3 (HDF5) and v5 files written here in the
release's exact layout, the record's cvind.mat, the images/N.png + masks/N_mask.png conversion,
the CLI, and (when ../shared/data is present) a reproduction of the team's 256x256 copy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from napari_segloss.cli import main
from napari_segloss.data.convert import (
    ConversionError,
    border_dice,
    convert_figshare,
    read_folds,
    read_mat,
)
from napari_segloss.data.figshare import is_labelled_folder, read_labels
from napari_segloss.outputs import OutputError
from napari_segloss.paths import shared_data_dir
from napari_segloss.train.data import fold_splits, folder_splits

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Apr  3 10:00:00 2017 HDF5 schema 1.00 ."


def _l_shape(side: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask shaped like an L (no symmetry: transposing or flipping it changes it) and its
    border as MATLAB stores ``tumorBorder``: ``[x1, y1, x2, y2, ...]``, 1-based column/row."""
    s = side // 8
    mask = np.zeros((side, side), bool)
    mask[top:top + 4 * s, left:left + s] = True  # the long vertical bar
    mask[top + 3 * s:top + 4 * s, left:left + 3 * s] = True  # the foot, to the right
    rows = [top, top, top + 3 * s, top + 3 * s, top + 4 * s - 1, top + 4 * s - 1]
    cols = [left, left + s - 1, left + s - 1, left + 3 * s - 1, left + 3 * s - 1, left]
    border = np.ravel(np.column_stack([np.asarray(cols) + 1.0, np.asarray(rows) + 1.0]))
    return mask, border


def _image(side: int, seed: int) -> np.ndarray:
    """int16 slice with a ramp down the rows and a weaker one across the columns (orientation
    shows), negative values included, as the release's int16 data may have."""
    r, c = np.mgrid[:side, :side]
    noise = np.random.default_rng(seed).integers(0, 5, (side, side))
    return (r * 9 - c * 2 - 40 + noise).astype(np.int16)


def write_v73(path: Path, image: np.ndarray, mask: np.ndarray, label: int, pid: str, border: np.ndarray) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte user block holding the MAT
    header, a group per struct, arrays in column-major order (so HDF5 holds their transpose),
    char arrays as uint16 codes, logical as uint8, and MATLAB_class attributes."""
    def put(name: str, data: np.ndarray, cls: str) -> None:
        ds = group.create_dataset(name, data=data)
        ds.attrs["MATLAB_class"] = np.bytes_(cls)

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as handle:
        group = handle.create_group("cjdata")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        put("label", np.array([[float(label)]]), "double")
        put("PID", np.array([[ord(ch)] for ch in pid], dtype=np.uint16), "char")  # 1xN char -> HDF5 (N, 1)
        put("image", np.ascontiguousarray(image.T), "int16")
        put("tumorBorder", border.reshape(-1, 1), "double")  # 1x2K -> HDF5 (2K, 1)
        put("tumorMask", np.ascontiguousarray(mask.T.astype(np.uint8)), "logical")
    with path.open("r+b") as handle:
        handle.write(MATLAB_HEADER.ljust(116))


def write_v5(path: Path, image: np.ndarray, mask: np.ndarray, label: int, pid: str, border: np.ndarray) -> None:
    scipy.io.savemat(path, {"cjdata": {"label": float(label), "PID": pid, "image": image,
                                       "tumorBorder": border[None], "tumorMask": mask}})


#: (file index, patient, label, side) of the small release written by ``release``
SLICES = [(1, "100360", 1, 64), (2, "100360", 2, 64), (3, "MR040237", 3, 64), (4, "MR040237", 1, 64)]
FOLDS = [1, 1, 2, 2]


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """Four 64x64 slices of two patients in v7.3 files (one in a sub-folder, as the record's
    zips unpack) and a v5 ``cvind.mat``."""
    src = tmp_path / "figshare"
    for (index, pid, label, side), sub in zip(SLICES, ("", "", "brainTumorDataPublic_3", "")):
        mask, border = _l_shape(side, 8 + index, 10 + 2 * index)
        write_v73(src / sub / f"{index}.mat", _image(side, index), mask, label, pid, border)
    scipy.io.savemat(src / "cvind.mat", {"cvind": np.array(FOLDS, float)[None]})
    return src


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _minmax(image: np.ndarray) -> np.ndarray:
    data = image.astype(float)
    return np.rint((data - data.min()) / (data.max() - data.min()) * 255).astype(np.uint8)


def test_read_mat_v73_undoes_matlab_column_order(tmp_path: Path) -> None:
    mask, border = _l_shape(64, 5, 7)
    image = _image(64, 0)
    write_v73(tmp_path / "12.mat", image, mask, 2, "MR0123", border)
    with h5py.File(tmp_path / "12.mat") as handle:  # what is on disk is the transpose
        assert np.array_equal(handle["cjdata/image"][()], image.T)
    cj = read_mat(tmp_path / "12.mat")
    assert (cj.index, cj.label, cj.patient) == (12, 2, "MR0123")
    assert cj.image.dtype == np.int16 and np.array_equal(cj.image, image)
    assert np.array_equal(cj.mask, mask)
    assert border_dice(cj.border, cj.mask) > 0.85  # the border polygon lies on the mask ...
    assert border_dice(cj.border[:, ::-1], cj.mask) < 0.3  # ... and not on its transpose


def test_read_mat_v5_gives_the_same_slice(tmp_path: Path) -> None:
    mask, border = _l_shape(64, 5, 7)
    image = _image(64, 1)
    write_v73(tmp_path / "a" / "3.mat", image, mask, 3, "100360", border)
    write_v5(tmp_path / "3.mat", image, mask, 3, "100360", border)
    new, old = read_mat(tmp_path / "a" / "3.mat"), read_mat(tmp_path / "3.mat")
    assert (old.label, old.patient) == (new.label, new.patient)
    for a, b in ((old.image, new.image), (old.mask, new.mask), (old.border, new.border)):
        assert np.array_equal(a, b)


def test_read_folds_v5_and_v73(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "v5.mat", {"cvind": np.array([[3, 1, 5, 2]], float)})
    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as handle:
        handle.create_dataset("cvind", data=np.array([[3.0], [1.0], [5.0], [2.0]]))  # a 1x4 double
    for name in ("v5.mat", "v73.mat"):
        assert read_folds(tmp_path / name).tolist() == [3, 1, 5, 2]
    scipy.io.savemat(tmp_path / "bad.mat", {"cvind": np.array([[1, 0.5]])})
    with pytest.raises(ConversionError, match="whole numbers"):
        read_folds(tmp_path / "bad.mat")


def test_convert_release(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    result = convert_figshare(release, out)
    assert result.source == "mat" and result.shapes == {(64, 64): 4} and not result.skipped
    rows = {r.name: r for r in read_labels(out)}
    assert sorted(rows) == [f"figshare_{i:04d}" for i in (1, 2, 3, 4)]
    types = {1: "meningioma", 2: "glioma", 3: "pituitary"}
    for (index, pid, label, side), fold in zip(SLICES, FOLDS):
        row = rows[f"figshare_{index:04d}"]
        assert (row.fold, row.patient, row.tumour_type, row.pixel_mm) == (fold, pid, types[label], None)
        image = _png(out / "images" / f"{row.name}.png")
        mask = _png(out / "masks" / f"{row.name}.png")
        assert image.dtype == np.uint8 and np.array_equal(image, _minmax(_image(side, index)))
        expected, _ = _l_shape(side, 8 + index, 10 + 2 * index)
        assert set(np.unique(mask)) == {0, 255} and np.array_equal(mask > 0, expected)  # not transposed
    with (out / "labels.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [int(r["mask_pixels"]) for r in table] == [int(_l_shape(64, 8 + i, 10 + 2 * i)[0].sum()) for i in (1, 2, 3, 4)]
    assert all(float(r["border_dice"]) > 0.85 for r in table)
    assert (table[0]["height"], table[0]["width"]) == ("64", "64")
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["licence"] == "CC BY 4.0" and "10.6084/m9.figshare.1512427" in dataset["url"]
    assert result.mixed_patients == []

    splits = fold_splits(out, train_folds=[1], test_folds=[2])
    assert splits.train.names + splits.val.names == ["figshare_0001", "figshare_0002"]
    assert splits.test.names == ["figshare_0003", "figshare_0004"]
    assert np.array_equal(splits.test.masks[0], _l_shape(64, 11, 16)[0])
    assert splits.description["dataset"]["licence"] == "CC BY 4.0"
    assert splits.test.kinds == ["pituitary", "meningioma"]


def test_synthetic_negatives_join_the_real_training_slices(release: Path, tmp_path: Path) -> None:
    """``Recipe.synthetic_negatives``: tumour-free phantom slices at the folder's size, normalised like
    the real ones, added to the training set only, and said so in the data description."""
    from dataclasses import replace

    from napari_segloss.preprocess import DEFAULT_NORMALIZATION
    from napari_segloss.train.loop import Recipe, load_splits

    out = tmp_path / "converted"
    convert_figshare(release, out)
    recipe = replace(Recipe(), train_folds=(1,), test_folds=(2,))
    plain = load_splits(out, recipe, DEFAULT_NORMALIZATION)
    mixed = load_splits(out, replace(recipe, synthetic_negatives=3), DEFAULT_NORMALIZATION)
    assert len(mixed.train) == len(plain.train) + 3 and mixed.train.names[:len(plain.train)] == plain.train.names
    extra = mixed.train.subset(range(len(plain.train), len(mixed.train)))
    assert extra.images.shape == (3, 64, 64) and not extra.masks.any() and extra.kinds == ["none"] * 3
    assert 0.0 <= extra.images.min() and extra.images.max() <= 1.0 + 1e-6 and extra.images.std() > 0.1  # a head, not blank
    assert mixed.val.names == plain.val.names and mixed.test.names == plain.test.names
    assert "3 tumour-free synthetic slices" in mixed.description["synthetic_negatives"]
    assert "synthetic_negatives" not in plain.description


def test_size_box_averages_and_doubles_the_pixel_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    big_mask, big_border = _l_shape(512, 100, 130)
    small_mask, small_border = _l_shape(256, 40, 60)
    write_v73(src / "7.mat", _image(512, 7), big_mask, 2, "P1", big_border)
    write_v73(src / "8.mat", _image(256, 8), small_mask, 3, "P2", small_border)
    folds = tmp_path / "folds.mat"
    scipy.io.savemat(folds, {"cvind": np.array([[1, 1, 1, 1, 1, 1, 4, 5]], float)})
    result = convert_figshare(src, tmp_path / "out", size=256, folds=folds)
    assert result.shapes == {(256, 256): 2}
    rows = {r.name: r for r in read_labels(tmp_path / "out")}
    assert rows["figshare_0007"].pixel_mm == pytest.approx(0.98) and rows["figshare_0007"].fold == 4
    assert rows["figshare_0008"].pixel_mm is None and rows["figshare_0008"].fold == 5
    # independent box average: the mean of each 2x2 block of the 8-bit slice, within one grey level
    blocks = _minmax(_image(512, 7)).astype(float).reshape(256, 2, 256, 2).mean(axis=(1, 3))
    image = _png(tmp_path / "out" / "images" / "figshare_0007.png").astype(float)
    assert np.abs(image - blocks).max() <= 1.0
    mask = _png(tmp_path / "out" / "masks" / "figshare_0007.png") > 0
    assert np.array_equal(mask, big_mask.reshape(256, 2, 256, 2).mean(axis=(1, 3)) >= 0.5)
    assert np.array_equal(_png(tmp_path / "out" / "images" / "figshare_0008.png"), _minmax(_image(256, 8)))
    with pytest.raises(ConversionError, match="cannot be box-averaged"):
        convert_figshare(src, tmp_path / "out3", size=384, folds=folds)
    assert not (tmp_path / "out3").exists()


def test_png_conversion_keeps_patients_and_folds(tmp_path: Path) -> None:
    src = tmp_path / "community"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    expected = {}
    for index in (5, 9, 21):
        image = _minmax(_image(64, index))
        mask, _ = _l_shape(64, 6, index)
        pixels = np.repeat(image[..., None], 3, axis=2) if index == 9 else image  # one RGB copy
        Image.fromarray(pixels).save(src / "images" / f"{index}.png")
        Image.fromarray(mask.astype(np.uint8)).save(src / "masks" / f"{index}_mask.png")  # 0/1 masks
        expected[index] = (image, mask)
    Image.fromarray(_minmax(_image(64, 30))).save(src / "images" / "30.png")  # no mask: left out
    table = tmp_path / "meta.csv"
    table.write_text("file,label,PID,fold\n5.png,1,100360,1\n9.png,glioma,100360,1\n21.png,3,MR1,2\n30.png,2,MR1,2\n")
    result = convert_figshare(src, tmp_path / "out", table=table)
    assert result.source == "png" and len(result.rows) == 3
    assert len(result.skipped) == 1 and "30.png" in result.skipped[0]
    rows = {r.name: r for r in read_labels(tmp_path / "out")}
    assert [(rows[f"figshare_{i:04d}"].fold, rows[f"figshare_{i:04d}"].patient, rows[f"figshare_{i:04d}"].tumour_type)
            for i in (5, 9, 21)] == [(1, "100360", "meningioma"), (1, "100360", "glioma"), (2, "MR1", "pituitary")]
    for index, (image, mask) in expected.items():
        assert np.array_equal(_png(tmp_path / "out" / "images" / f"figshare_{index:04d}.png"), image)
        assert np.array_equal(_png(tmp_path / "out" / "masks" / f"figshare_{index:04d}.png") > 0, mask)
    assert fold_splits(tmp_path / "out", train_folds=[1], test_folds=[2]).test.names == ["figshare_0021"]
    # the unconverted folder still trains as a folder of pairs (random validation split)
    assert not is_labelled_folder(src)
    plain = folder_splits(src)
    assert sorted(plain.train.names + plain.val.names) == ["21", "5", "9"]

    # the record's cvind.mat gives the folds instead of the table's
    scipy.io.savemat(tmp_path / "cvind.mat", {"cvind": np.arange(1, 31, dtype=float)[None] % 5 + 1})
    again = convert_figshare(src, tmp_path / "out2", folds=tmp_path / "cvind.mat")
    assert [r["fold"] for r in again.rows] == [5 % 5 + 1, 9 % 5 + 1, 21 % 5 + 1]
    assert all(r["tumour_type"] == "unknown" and r["patient"] == "" for r in again.rows)


def test_bad_input_is_one_error_and_writes_nothing(release: Path, tmp_path: Path) -> None:
    (release / "cvind.mat").unlink()
    with pytest.raises(ConversionError, match="no folds"):
        convert_figshare(release, tmp_path / "out")
    scipy.io.savemat(release / "cvind.mat", {"cvind": np.array([[1, 1, 2]], float)})
    with pytest.raises(ConversionError, match="4.mat: slice 4 has no fold"):
        convert_figshare(release, tmp_path / "out")
    (release / "2.mat").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    with pytest.raises(ConversionError, match=r"2\.mat: cannot read"):
        convert_figshare(release, tmp_path / "out", folds=release / "cvind.mat")
    assert not (tmp_path / "out").exists()
    with pytest.raises(OutputError, match="overlap"):
        convert_figshare(release, release / "converted")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not a previous napari-segloss result"):
        convert_figshare(release, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_cli(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["data", "figshare", str(release), "--out", str(out), "--size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 slices" in printed and "folds: 1 2, 2 2" in printed
    assert _png(out / "images" / "figshare_0001.png").shape == (32, 32)
    assert main(["data", "figshare", str(release), "--out", str(out), "--size", "32"]) == 4  # exists
    assert main(["data", "figshare", str(release), "--out", str(out), "--size", "32", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["data", "figshare", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err


FIGSHARE = shared_data_dir() / "figshare"


@pytest.mark.skipif(not (FIGSHARE / "native").is_dir(),
                    reason=f"the team's figshare copy is not at {FIGSHARE} (set NAPARI_SEGLOSS_SHARED_DATA)")
def test_reproduces_the_team_copy_from_native_slices(tmp_path: Path) -> None:
    """The 512x512 native/ PNGs converted with size=256 equal the team's 256x256 copy exactly."""
    names = sorted(p.stem for p in (FIGSHARE / "native" / "images").glob("*.png"))[:4]
    src = tmp_path / "native"
    for kind in ("images", "masks"):
        (src / kind).mkdir(parents=True)
        for name in names:
            (src / kind / f"{name}.png").write_bytes((FIGSHARE / "native" / kind / f"{name}.png").read_bytes())
    with (FIGSHARE / "labels.csv").open() as handle:
        team = {r["name"]: r for r in csv.DictReader(handle)}
    table = tmp_path / "table.csv"
    table.write_text("name,fold,tumour_type\n" + "".join(f"{n},{team[n]['fold']},{team[n]['tumour_type']}\n" for n in names))
    convert_figshare(src, tmp_path / "out", size=256, table=table)
    for row in read_labels(tmp_path / "out"):
        assert row.pixel_mm == pytest.approx(float(team[row.name]["pixel_mm_256"]))
        for kind in ("images", "masks"):
            assert np.array_equal(_png(tmp_path / "out" / kind / f"{row.name}.png"), _png(FIGSHARE / kind / f"{row.name}.png"))
