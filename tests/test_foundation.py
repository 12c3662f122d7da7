"""Packaging: CLI version, npe2 manifest validity, wheel and editable installs, weights lookup."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import napari_segloss
from napari_segloss import cli
from napari_segloss.paths import WEIGHTS_ENV, weights_dir

REPO = Path(__file__).resolve().parents[1]


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"napari-segloss {napari_segloss.__version__}"


def test_console_script_runs():
    exe = Path(sys.executable).with_name("napari-segloss")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert napari_segloss.__version__ in out.stdout


def test_root_manifest_is_the_package_manifest():
    root = REPO / "napari.yaml"
    package = REPO / "src" / "napari_segloss" / "napari.yaml"
    assert root.is_symlink()
    assert root.resolve() == package.resolve()


def test_npe2_validate_editable_install():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-segloss", "--imports"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_manifest_name_and_command_prefix():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-segloss")
    assert manifest.name == "napari-segloss"
    assert all(c.id.startswith("napari-segloss.") for c in manifest.contributions.commands)
    assert {s.key for s in manifest.contributions.sample_data} == {"brain_mri_2d", "brain_mri_3d"}


def test_weights_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert weights_dir() == tmp_path
    monkeypatch.delenv(WEIGHTS_ENV)
    assert weights_dir() == REPO / "weights"


def _overlay_site_packages(tmp_path: Path) -> Path:
    """A folder of links to this environment's packages, minus the editable napari-segloss."""
    site = Path(sysconfig.get_paths()["purelib"])
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if "napari_segloss" in name or "napari-segloss" in name or name.endswith(".pth"):
            continue
        (overlay / entry.name).symlink_to(entry)
    return overlay


@pytest.mark.slow
def test_wheel_install_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next(dist.glob("napari_segloss-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    target_site = Path(
        subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )
    (target_site / "heavy_packages.pth").write_text(str(_overlay_site_packages(tmp_path)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target_site), str(wheel)],
        check=True,
    )
    env = {k: v for k, v in os.environ.items() if k != WEIGHTS_ENV}
    check = (
        "import napari_segloss, pathlib; from napari_segloss.paths import weights_dir;"
        "p = pathlib.Path(napari_segloss.__file__).resolve();"
        f"assert str(p).startswith({str(target_site)!r}), p;"
        "w = weights_dir(); assert w.is_dir() and w.parent == p.parent, w;"
        "assert (p.parent / 'napari.yaml').is_file();"
        "from npe2 import PluginManager; pm = PluginManager.instance(); pm.discover();"
        "m = pm.get_manifest('napari-segloss'); print(len(m.contributions.commands))"
    )
    out = subprocess.run([str(py), "-c", check], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 5
    val = subprocess.run([str(py), "-m", "npe2", "validate", "napari-segloss", "--imports"],
                         capture_output=True, text=True, env=env)
    assert val.returncode == 0, val.stdout + val.stderr
