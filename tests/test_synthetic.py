"""Synthetic brain MRI: determinism, statistics, geometry, MR noise model, export and sample data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats

from napari_segloss.data import (
    PLANES,
    TUMOUR_KINDS,
    generate_slice,
    generate_volume,
    split_seeds,
)
from napari_segloss.data.fields import SmoothField
from napari_segloss.data.mr import acquire
from napari_segloss.data.synthetic import MAX_FRACTION

N_STATS = 200
STATS_SIZE = 96


@pytest.fixture(scope="module")
def population():
    """200 training slices at 96x96, mixed planes, as the training engineer draws them."""
    return [generate_slice(s, STATS_SIZE, plane="random") for s in split_seeds("train", N_STATS)]


# --- determinism and API ----------------------------------------------------------------------


def test_same_seed_same_slice_and_different_seed_differs():
    a, b = generate_slice(123, 64, plane="random"), generate_slice(123, 64, plane="random")
    for key in ("image", "mask", "regions", "brain"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert (a.kind, a.plane, a.spacing) == (b.kind, b.plane, b.spacing)
    c = generate_slice(124, 64, plane="random")
    assert not np.array_equal(a.image, c.image)


def test_determinism_across_processes():
    code = (
        "from napari_segloss.data import generate_slice;"
        "import hashlib;s=generate_slice(77, 48, plane='coronal');"
        "print(hashlib.sha256(s.image.tobytes()+s.mask.tobytes()).hexdigest())"
    )
    here = generate_slice(77, 48, plane="coronal")
    import hashlib

    expected = hashlib.sha256(here.image.tobytes() + here.mask.tobytes()).hexdigest()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_runtime_does_not_import_nilearn():
    code = "import sys, napari_segloss.data as d; d.generate_slice(1, 32); print('nilearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("plane", PLANES)
def test_planes_sizes_and_spacing(plane):
    s = generate_slice(5, (48, 80), plane=plane)
    assert s.image.shape == s.mask.shape == s.regions.shape == s.brain.shape == (48, 80)
    assert s.image.dtype == np.uint16 and s.mask.dtype == bool and s.regions.dtype == np.uint8
    assert s.brain.dtype == bool and s.plane == plane
    # 235-270 mm across the larger side, square pixels
    assert s.spacing[0] == s.spacing[1] and 235 / 80 <= s.spacing[1] <= 270 / 80


def test_default_size_is_256():
    s = generate_slice(3)
    assert s.image.shape == (256, 256) and s.plane == "axial"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="plane"):
        generate_slice(0, 32, plane="oblique")
    with pytest.raises(ValueError, match="tumour"):
        generate_slice(0, 32, tumour="lymphoma")
    with pytest.raises(ValueError, match="size"):
        generate_slice(0, 4)
    with pytest.raises(ValueError, match="split"):
        split_seeds("holdout", 3)


def test_split_seeds_are_fixed_and_disjoint():
    train, val, test = (set(split_seeds(s, 1000)) for s in ("train", "val", "test"))
    assert len(train) == len(val) == len(test) == 1000
    assert not (train & val) and not (train & test) and not (val & test)
    assert split_seeds("val", 3) == split_seeds("val", 3)
    # base_seed shifts inside the split's range: a second set that does not overlap the first
    assert not set(split_seeds("train", 100, base_seed=100)) & set(split_seeds("train", 100))
    with pytest.raises(ValueError):
        split_seeds("train", 11_000_000)


# --- statistics over 200 slices -----------------------------------------------------------------


def test_no_tumour_outside_the_brain_and_mask_excludes_oedema(population):
    for s in population:
        assert not (s.mask & ~s.brain).any()
        np.testing.assert_array_equal(s.mask, (s.regions == 1) | (s.regions == 2))
        assert not (s.regions[~s.brain]).any()


def test_empty_slice_share_and_kinds(population):
    kinds = [s.kind for s in population]
    share_empty = kinds.count("none") / len(kinds)
    assert 0.2 <= share_empty <= 0.4, share_empty
    for kind in TUMOUR_KINDS:
        assert kinds.count(kind) >= 20, (kind, kinds.count(kind))
    # a slice labelled with a kind has tumour pixels; a "none" slice has none
    for s in population:
        assert s.mask.any() == (s.kind != "none")
    assert {s.plane for s in population} == set(PLANES)


def test_tumour_size_distribution(population):
    fractions = np.array([s.mask.sum() / s.brain.sum() for s in population])
    positive = fractions[fractions > 0]
    assert positive.max() <= MAX_FRACTION + 0.01  # up to ~25 % of the brain
    assert positive.min() < 0.01  # down to under 1 % of the brain
    assert 0.03 < np.median(positive) < 0.08  # about 5 %, as in the real slices
    # right-skewed areas (documented: CALF picks its branch from this skewness)
    areas = np.array([s.mask.sum() for s in population], float)
    assert stats.skew(areas) > 1.0


def test_value_range_and_contrast(population):
    for s in population[:50]:
        img = s.image.astype(float)
        assert 200 < np.percentile(img[s.brain], 50) < 3000  # white matter stored at 600-2000
        assert img.max() < 65535
        corner = np.concatenate([img[:6, :6].ravel(), img[-6:, -6:].ravel()])
        assert corner.mean() < 0.25 * np.median(img[s.brain])  # air is dark (noise only)


def test_tumour_kinds_look_and_sit_right():
    for seed in split_seeds("val", 6):
        m = generate_slice(seed, 128, plane="coronal", tumour="meningioma")
        assert m.kind == "meningioma" and m.mask.any()
        # extra-axial: the tumour reaches the intracranial surface (within ~3 mm)
        depth_mm = ndi.distance_transform_edt(m.brain) * m.spacing[0]
        assert depth_mm[m.mask].min() <= 3.0
        # bright on T1-CE: brighter than the brain around it
        assert np.median(m.image[m.mask]) > np.median(m.image[m.brain & ~m.mask])

        p = generate_slice(seed, 128, plane="sagittal", tumour="pituitary")
        assert p.kind == "pituitary" and p.mask.any()
        rows, cols = np.nonzero(p.mask)
        # at the sella: below the brain's centre, and small
        brain_rows = np.nonzero(p.brain)[0]
        assert rows.mean() > brain_rows.mean()
        assert p.mask.sum() / p.brain.sum() < 0.1

    gliomas = [generate_slice(s, 128, tumour="glioma") for s in split_seeds("val", 12)]
    assert all(g.kind == "glioma" for g in gliomas)
    assert sum((g.regions == 2).any() for g in gliomas) >= 6  # necrotic cores
    assert sum((g.regions == 3).any() for g in gliomas) >= 9  # oedema
    assert all(generate_slice(s, 64, tumour=None).kind == "none" for s in range(5))


# --- 3D --------------------------------------------------------------------------------------


def test_volume_shape_spacing_and_consistency():
    v = generate_volume(11, (20, 64, 64), tumour="glioma")
    assert v.image.shape == v.mask.shape == v.regions.shape == v.brain.shape == (20, 64, 64)
    assert v.image.dtype == np.uint16 and v.kind == "glioma" and len(v.spacing) == 3
    assert 130 / 20 <= v.spacing[0] <= 150 / 20
    assert not (v.mask & ~v.brain).any()
    # one tumour: a connected blob occupying a contiguous run of slices
    labels, n = ndi.label(v.mask)
    sizes = np.bincount(labels.ravel())[1:]
    assert n >= 1 and sizes.max() >= 0.9 * v.mask.sum()
    z = np.nonzero(v.mask.any((1, 2)))[0]
    assert np.array_equal(z, np.arange(z[0], z[-1] + 1))
    assert (~v.mask.any((1, 2))).sum() > 0  # slices away from it are tumour-free
    # deterministic, and the slab-wise rendering does not depend on the slab size
    np.testing.assert_array_equal(generate_volume(11, (20, 64, 64), tumour="glioma").image, v.image)
    assert generate_volume(4, (6, 32, 32), tumour=None).mask.sum() == 0


def test_volume_random_always_has_a_tumour():
    kinds = {generate_volume(s, (10, 40, 40)).kind for s in range(6)}
    assert "none" not in kinds and kinds <= set(TUMOUR_KINDS)


# --- building blocks, cross-checked against scipy ---------------------------------------------


def test_smooth_field_matches_direct_sum_and_is_chunk_consistent():
    rng = np.random.default_rng(0)
    f = SmoothField(rng, [(0, 40), (-30, 30), (0, 50)], 10.0, 2)
    axes = [np.linspace(0, 40, 9), np.linspace(-30, 30, 7), np.linspace(0, 50, 6)]
    bases = [f._basis(i, a) for i, a in enumerate(axes)]
    direct = np.einsum("cijk,ai,bj,dk->cabd", f.weights, *bases)
    full = f(*axes)
    np.testing.assert_allclose(full, direct, atol=1e-5)
    np.testing.assert_allclose(f(axes[0][2:5], axes[1], axes[2]), full[:, 2:5], atol=1e-5)
    # unit variance, smooth: neighbours 1 mm apart are strongly correlated
    big = SmoothField(np.random.default_rng(1), [(0, 400), (0, 400)], 10.0, 1)(np.arange(400.0), np.arange(400.0))[0]
    assert 0.85 < big.std() < 1.15
    assert np.corrcoef(big[:, :-1].ravel(), big[:, 1:].ravel())[0, 1] > 0.95


def test_rician_noise_matches_scipy_rice():
    rng = np.random.default_rng(0)
    sigma_level, snr = 1000.0, 4.0  # noise sigma 250
    for nu in (0.0, 0.5, 2.0):  # in white-matter units: air, dark tissue, bright tissue
        image = np.full((256, 256), nu, np.float32)
        out = acquire(image, rng, blur_mm=(0.0, 0.0), spacing=(1.0, 1.0), wm_level=sigma_level, snr=snr)
        sigma = sigma_level / snr
        ref = stats.rice(b=nu * sigma_level / sigma, scale=sigma)
        assert out.mean() == pytest.approx(ref.mean(), rel=0.02)
        assert out.std() == pytest.approx(ref.std(), rel=0.03)


def test_generated_background_is_rayleigh():
    s = generate_slice(8, 256, tumour=None)
    air = s.image[:12, :12].astype(float).ravel()
    # Rayleigh: mean / std = sqrt(pi / 2) / sqrt(2 - pi / 2) = 1.913
    assert air.mean() / air.std() == pytest.approx(stats.rayleigh.mean() / stats.rayleigh.std(), rel=0.15)


# --- export and sample data ---------------------------------------------------------------


def test_write_dataset_png_round_trip(tmp_path):
    from skimage.io import imread

    from napari_segloss.data.export import write_dataset

    paths = write_dataset(tmp_path, 3, fmt="png", size=64, split="val")
    assert len(paths) == 3
    for k, path in enumerate(paths):
        sample = generate_slice(split_seeds("val", 3)[k], 64, plane="random")
        assert path.name == f"val_{k:04d}_{sample.kind}.png"
        mask = imread(path.with_name(path.stem + "_mask.png"))
        np.testing.assert_array_equal(mask > 0, sample.mask)
        image = imread(path)
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        # the 8-bit image is a monotone windowing of the 16-bit scan
        assert stats.spearmanr(image.ravel(), sample.image.ravel())[0] > 0.98
    assert (tmp_path / "manifest.csv").read_text().count("\n") == 4
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path, 1, fmt="png", size=64, split="val")


def test_write_dataset_tiff_and_dicom_round_trip(tmp_path):
    import pydicom
    import tifffile

    from napari_segloss.data.export import write_dataset

    [tif] = write_dataset(tmp_path / "t", 1, fmt="tiff", size=48, split="test")
    sample = generate_slice(split_seeds("test", 1)[0], 48, plane="random")
    np.testing.assert_array_equal(tifffile.imread(tif), sample.image)
    np.testing.assert_array_equal(tifffile.imread(tif.with_name(tif.stem + "_mask.tif")) > 0, sample.mask)

    [series] = write_dataset(tmp_path / "d", 1, fmt="dicom", size=32, depth=4, split="test")
    volume = generate_volume(split_seeds("test", 1)[0], (4, 32, 32))
    files = sorted(series.glob("*.dcm"))
    assert len(files) == 4
    slices = [pydicom.dcmread(f) for f in files]
    np.testing.assert_array_equal(np.stack([d.pixel_array for d in slices]), volume.image)
    dz = float(slices[1].ImagePositionPatient[2]) - float(slices[0].ImagePositionPatient[2])
    assert dz == pytest.approx(volume.spacing[0], rel=1e-4)
    assert [float(v) for v in slices[0].PixelSpacing] == pytest.approx(list(volume.spacing[1:]), rel=1e-4)
    assert slices[0].Modality == "MR"


def test_sample_data_hooks_return_image_and_labels():
    from napari_segloss.napari._sample_data import brain_mri_2d

    (image, image_kw, image_type), (labels, labels_kw, labels_type) = brain_mri_2d()
    assert (image_type, labels_type) == ("image", "labels")
    assert image_kw["name"] == "Brain MRI (synthetic)" and labels_kw["name"] == "Tumour (ground truth)"
    assert image_kw["colormap"] == "gray" and image.shape == labels.shape == (256, 256)
    low, high = image_kw["contrast_limits"]
    assert image.min() <= low < high <= image.max()
    assert image_kw["scale"] == labels_kw["scale"] and all(0.5 < s < 1.5 for s in image_kw["scale"])
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}


@pytest.mark.gui
def test_sample_opens_in_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "brain_mri_2d")
    assert [layer.name for layer in viewer.layers] == ["Brain MRI (synthetic)", "Tumour (ground truth)"]
    assert type(viewer.layers[1]).__name__ == "Labels"


def test_skull_option():
    with_skull = generate_slice(21, 96, tumour=None)
    stripped = generate_slice(21, 96, tumour=None, skull=False)
    np.testing.assert_array_equal(with_skull.brain, stripped.brain)
    outside = ~ndi.binary_dilation(with_skull.brain, iterations=2)
    # the scalp (fat, brighter than white matter) is there only with the skull
    assert np.percentile(with_skull.image[outside], 99) > 2 * np.percentile(stripped.image[outside], 99)


def test_mass_effect_is_a_smooth_outward_push():
    from napari_segloss.data.tumour import draw_tumour, displace
    from napari_segloss.data.template import load_template

    template = load_template()
    spec = draw_tumour(np.random.default_rng(3), "glioma", template, lambda p: p)
    r = np.linspace(0.0, 6 * spec.mass_length, 400, dtype=np.float32)
    direction = np.array([0.6, 0.0, 0.8], np.float32)
    points = spec.centre.astype(np.float32)[:, None] + direction[:, None] * r
    source = displace(points, spec)
    r_src = np.linalg.norm(source - spec.centre.astype(np.float32)[:, None], axis=0)
    assert np.all(np.diff(r_src) > 0)  # monotonic: no folding
    assert np.all(r_src <= r + 1e-4)  # tissue comes from nearer the centre: pushed outward
    assert abs(r_src[-1] - r[-1]) < 1e-3  # identity far away
    # the tissue at the tumour edge came from well inside it
    edge = np.argmin(np.abs(r - spec.radius))
    assert r_src[edge] < 0.85 * spec.radius
