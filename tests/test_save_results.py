"""The widget's *Save results…* (DICOM SEG for a DICOM series opened by the plugin, PNG for a
plain image; asks before replacing) and ``make demo``'s state, in a real napari viewer (xvfb)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from qtpy.QtWidgets import QFileDialog, QMessageBox

from napari_segloss.data import generate_slice
from napari_segloss.io import read_scans
from napari_segloss.io.writers import write_dicom_series
from napari_segloss.napari import _layers

pytestmark = pytest.mark.gui
PLUGIN, WIDGET = "napari-segloss", "Loss explorer"
TIMEOUT_MS = 120_000


@pytest.fixture
def widget(make_napari_viewer, tiny_registry):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return w


def _run(qtbot, w, start) -> None:
    start()
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)


def _answer(monkeypatch, folder, reply=QMessageBox.StandardButton.Yes) -> list[str]:
    """Make the folder dialog return ``folder`` and the replace question ``reply``; returns the
    questions asked."""
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))

    def question(_parent, _title, text, *a, **k):
        asked.append(text)
        return reply

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def test_dicom_series_results_are_saved_as_seg_and_never_replaced_unasked(widget, qtbot, tmp_path, monkeypatch):
    volume = np.stack([generate_slice(40 + k, 64).image for k in range(3)])
    write_dicom_series(volume, tmp_path / "series", spacing=(3.0, 1.1, 1.1), origin=(-20.0, 5.0, 30.0),
                       orientation=(0.8, 0.6, 0.0, 0.0, 0.0, -1.0))
    w = widget
    w.viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    w.run_tab.combo.select("tiny_dice")
    _run(qtbot, w, w.run_single)
    result = w.current_result()
    assert result is not None

    asked = _answer(monkeypatch, tmp_path / "out")
    (saved,) = w.save_button.ask_and_save()
    assert saved.name == "tiny_dice.seg.dcm" and not asked
    (back,) = read_scans(saved)
    np.testing.assert_array_equal(back.data > 0, result.derived.mask.astype(bool))
    image = w.inputs.image()
    assert back.spacing == pytest.approx(tuple(image.scale)) and back.origin == pytest.approx(tuple(image.translate))
    first = pydicom.dcmread(sorted((tmp_path / "series").iterdir())[0])
    assert pydicom.dcmread(saved).ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID

    before = saved.read_bytes()
    asked = _answer(monkeypatch, tmp_path / "out", QMessageBox.StandardButton.No)
    assert w.save_button.ask_and_save() == [] and len(asked) == 1 and "tiny_dice.seg.dcm" in asked[0]
    assert saved.read_bytes() == before and "kept" in w.status.text()

    names = ["tiny_bce", "tiny_dice", "tiny_focal"]
    w.compare_tab.checklist.set_checked(names)
    w.show_page(w.compare_tab)
    _run(qtbot, w, w.run_compare)
    asked = _answer(monkeypatch, tmp_path / "out")  # replace: yes
    written = w.save_button.ask_and_save()
    assert sorted(p.name for p in written) == ["comparison.seg.dcm", *[f"{n}.seg.dcm" for n in names]]
    assert len(asked) == 1
    assert sorted(s.metadata["segments"][0]["label"] for s in read_scans(written[-1])) == names
    key = _layers.source_key(image)
    for path in written[:-1]:
        np.testing.assert_array_equal(read_scans(path)[0].data > 0, w.results[(key, path.name[:-8])].derived.mask > 0)


def test_plain_image_results_are_pngs_and_nothing_to_save_is_said(widget, qtbot, tmp_path, monkeypatch):
    w = widget
    _answer(monkeypatch, tmp_path / "out")
    sample = generate_slice(3, 64)
    w.viewer.add_image(sample.image, name="scan")
    assert w.save_button.ask_and_save() == [] and "Nothing to save" in w.status.text()
    w.run_tab.combo.select("tiny_focal")
    _run(qtbot, w, w.run_single)
    (saved,) = w.save_button.ask_and_save()
    assert saved.name == "tiny_focal.png"
    np.testing.assert_array_equal(read_scans(saved)[0].data > 0, w.current_result().derived.mask > 0)


def test_demo_runs_the_default_checkpoint_and_a_three_checkpoint_comparison(tiny_registry, qtbot, mock_app_model):
    """(``mock_app_model`` + a cleared plugin cache: a fresh napari app for this real viewer, so the
    plugins an earlier test's viewer registered do not clash.)"""
    from napari.plugins import _initialize_plugins

    from napari_segloss.napari._demo import compared_checkpoints, open_demo
    from napari_segloss.napari._widget import LossExplorerWidget

    _initialize_plugins.cache_clear()
    viewer = open_demo(2, show=False)
    try:
        (w,) = viewer.window._qt_window.findChildren(LossExplorerWidget)
        key = _layers.source_key(w.inputs.image())
        assert w.current_result() is not None and w.current_result().checkpoint == "tiny_dice"
        assert w.run_tab.metrics.table.rowCount() > 0  # the metrics panel is filled
        assert sorted(w.compare_sets[key]) == ["tiny_bce", "tiny_dice", "tiny_focal"]
        assert w.compare_tab.table.rowCount() == 3 and w.current_page() is w.compare_tab
        for name in w.compare_sets[key]:
            roles = {(_layers.tag_of(layer) or {}).get("role") for layer in viewer.layers
                     if (_layers.tag_of(layer) or {}).get("checkpoint") == name}
            assert {"prediction", "probability"} <= roles
    finally:
        viewer.close()
    assert compared_checkpoints([], "dice") == []
