"""The Loss explorer dock widget, driven like a user in a real napari viewer (run under xvfb-run).

Checkpoints are the tiny random ones from conftest (``tiny_registry``); images are small. Every
value the widget shows is checked against an independent computation: inference.predict for the
probability, plain numpy/scipy for the difference map and outline, metrics.compute for the numbers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
import time

import numpy as np
import pytest
import torch
from napari.layers import Image, Labels
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QApplication
from scipy import ndimage

from napari_segloss import losses, metrics
from napari_segloss.data import generate_slice
from napari_segloss.inference import predict
from napari_segloss.napari import _layers, _runner
from napari_segloss.overlays import DIFFERENCE_COLORS

pytestmark = pytest.mark.gui

PLUGIN, WIDGET = "napari-segloss", "Loss explorer"
ROLES = ("probability", "prediction", "difference", "contour")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def slice2d():
    """A 96x96 synthetic slice with a glioma (pixel spacing about 2.4 mm)."""
    return generate_slice(7, 96, tumour="glioma")


@pytest.fixture
def widget(make_napari_viewer, tiny_registry):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return w


def _add_scan(viewer, sample, *, scale=None, translate=None, truth=True):
    scale = sample.spacing if scale is None else scale
    image = viewer.add_image(sample.image, name="scan", scale=scale, translate=translate or (0,) * sample.image.ndim)
    labels = None
    if truth:
        labels = viewer.add_labels(sample.mask.astype(np.uint8), name="truth", scale=scale,
                                   translate=translate or (0,) * sample.image.ndim)
    return image, labels


def _click_and_wait(qtbot, w, button):
    assert button.isEnabled(), w.status.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)


def _result_layers(viewer, checkpoint):
    return {_layers.tag_of(layer)["role"]: layer for layer in viewer.layers
            if (_layers.tag_of(layer) or {}).get("checkpoint") == checkpoint}


def _expected_difference(pred, truth):
    return np.select([pred & truth, pred & ~truth, ~pred & truth], [1, 2, 3], 0).astype(np.uint8)


def _expected_outline(mask):
    return (mask & ~ndimage.binary_erosion(mask, border_value=0)).astype(np.uint8)


def _table_column(table, column):
    return {table.item(r, 0).text(): table.item(r, column).text() for r in range(table.rowCount())}


def test_sample_run_layers_and_metrics(widget, qtbot, tmp_path, tiny_registry):
    w, viewer = widget, widget.viewer
    assert w.status.text().startswith("No image layer")
    assert not w.run_tab.run_button.isEnabled()
    viewer.open_sample(PLUGIN, "brain_mri_2d")
    image = next(layer for layer in viewer.layers if isinstance(layer, Image))
    truth_layer = next(layer for layer in viewer.layers if isinstance(layer, Labels))
    assert w.inputs.image() == image and w.inputs.truth() == truth_layer  # the mask is suggested
    w.run_tab.combo.select("tiny_dice")
    assert "Dice" in w.run_tab.description.text() and "test Dice" in w.run_tab.description.text()
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    assert w.status.text().startswith("Done"), w.status.text()

    found = _result_layers(viewer, "tiny_dice")
    assert set(found) == set(ROLES)
    for role, layer in found.items():
        assert layer.name == f"{image.name} · dice · {role}"
        assert isinstance(layer, Image if role == "probability" else Labels)
        assert layer.data.shape == image.data.shape
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)

    expected = predict(image.data, tiny_registry / "tiny_dice.json", device="cpu", spacing=tuple(image.scale),
                       resample=w.inputs.resample()).probability
    np.testing.assert_allclose(found["probability"].data, expected, atol=1e-6)
    assert found["probability"].blending == "additive" and tuple(found["probability"].contrast_limits) == (0, 1)
    pred = expected >= 0.5
    truth = np.asarray(truth_layer.data) > 0
    np.testing.assert_array_equal(found["prediction"].data, pred)
    np.testing.assert_array_equal(found["difference"].data, _expected_difference(pred, truth))
    np.testing.assert_array_equal(found["contour"].data, _expected_outline(pred))
    for value, rgba in DIFFERENCE_COLORS.items():
        np.testing.assert_allclose(found["difference"].colormap.map(value), rgba, atol=1e-6)
    edge = found["contour"].colormap.map(1)[:3]
    assert all(np.abs(edge - np.array(c[:3])).max() > 0.2 for c in DIFFERENCE_COLORS.values())
    assert found["probability"].metadata[_layers.TAG]["run"]["weights_sha256"]

    reference = metrics.compute(pred, truth, spacing=tuple(image.scale))
    shown = dict(line.split("\t") for line in w.run_tab.metrics.text().splitlines()[1:])
    for key in metrics.METRIC_KEYS:
        assert shown[metrics.REGISTRY[key].title] == metrics.format_value(key, reference[key], ndim=2), key
    w.run_tab.metrics.copy()
    assert QApplication.clipboard().text() == w.run_tab.metrics.text()
    out = w.run_tab.metrics.export_csv(tmp_path / "metrics.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["checkpoint"] == "tiny_dice" and rows[0]["threshold"] == "0.5"
    for key in ("dice", "hd95", "tp", "fp", "fn", "pct_missed"):
        value = float(rows[0][key])
        assert (math.isnan(value) and math.isnan(reference[key])) or value == pytest.approx(reference[key])

    card = w.run_tab.card
    assert card.card.name == "tiny_dice"
    assert losses.info("dice").reference in card.card_view.toPlainText()
    line = card.figure.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [e["epoch"] for e in card.card.history])


def test_rerun_replaces_layers_and_never_touches_user_layers(widget, qtbot, slice2d):
    w, viewer = widget, widget.viewer
    image, _ = _add_scan(viewer, slice2d)
    squatter = viewer.add_labels(np.full(image.data.shape, 7, np.uint8), name="scan · dice · prediction")
    w.inputs.truth_picker.select(None)  # no ground truth: no difference layer, no metrics
    w.run_tab.combo.select("tiny_dice")
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    found = _result_layers(viewer, "tiny_dice")
    assert set(found) == {"probability", "prediction", "contour"}
    assert found["prediction"].name == "scan · dice · prediction [2]"
    assert (squatter.data == 7).all() and squatter.name == "scan · dice · prediction"
    assert "ground-truth" in w.run_tab.metrics.title.text()
    count = len(viewer.layers)

    w.inputs.truth_picker.select(viewer.layers["truth"])
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    again = _result_layers(viewer, "tiny_dice")
    assert len(viewer.layers) == count + 1  # only the difference layer is new
    assert all(again[role] is found[role] for role in found)  # updated in place
    found["prediction"].name = "renamed by the user"
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    assert _result_layers(viewer, "tiny_dice")["prediction"] is found["prediction"]
    assert len(viewer.layers) == count + 1


def test_rgb_image(widget, qtbot, slice2d, tiny_registry):
    w, viewer = widget, widget.viewer
    grey = (slice2d.image / slice2d.image.max() * 255).astype(np.uint8)
    rgb = np.stack([grey, grey // 2, grey], axis=-1)
    image = viewer.add_image(rgb, name="photo", rgb=True, scale=(0.5, 0.5))
    assert w.inputs.image() == image
    assert w.inputs.truth() is None, w.inputs.truth()
    w.run_tab.combo.select("tiny_dice")
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    found = _result_layers(viewer, "tiny_dice")
    assert set(found) == {"probability", "prediction", "contour"}
    assert all(layer.data.shape == grey.shape and tuple(layer.scale) == (0.5, 0.5) for layer in found.values())
    expected = predict(rgb, tiny_registry / "tiny_dice.json", device="cpu", spacing=(0.5, 0.5)).probability
    np.testing.assert_allclose(found["probability"].data, expected, atol=1e-6)  # the default: training scale


def test_threshold_updates_layers_without_rerunning(widget, qtbot, slice2d, monkeypatch):
    w, viewer = widget, widget.viewer
    image, truth_layer = _add_scan(viewer, slice2d)
    w.run_tab.combo.select("tiny_focal")
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    found = _result_layers(viewer, "tiny_focal")
    probability = found["probability"].data.copy()
    monkeypatch.setattr(_runner, "predict", lambda *a, **k: pytest.fail("the model must not run again"))

    threshold = float(np.round(np.quantile(probability, 0.7), 2))
    w.inputs.set_threshold(threshold)
    pred = probability >= np.float32(threshold)
    qtbot.waitUntil(lambda: np.array_equal(found["prediction"].data, pred), timeout=TIMEOUT_MS)
    truth = slice2d.mask
    np.testing.assert_array_equal(found["contour"].data, _expected_outline(pred))
    np.testing.assert_array_equal(found["difference"].data, _expected_difference(pred, truth))
    qtbot.waitUntil(lambda: f"threshold {threshold:.2f}" in w.run_tab.metrics.title.text(), timeout=TIMEOUT_MS)
    reference = metrics.compute(pred, truth, spacing=tuple(image.scale))
    assert w.results[(_layers.source_key(image), "tiny_focal")].derived.metrics == reference


def test_compare_three_checkpoints(widget, qtbot, slice2d, tmp_path):
    w, viewer = widget, widget.viewer
    image, truth_layer = _add_scan(viewer, slice2d)
    w.show_page(w.compare_tab)
    assert not w.compare_tab.run_button.isEnabled()  # nothing ticked
    w.compare_tab.checklist.all_box.setChecked(True)
    names = w.compare_tab.checklist.names()
    assert sorted(names) == ["tiny_bce", "tiny_dice", "tiny_focal"]
    _click_and_wait(qtbot, w, w.compare_tab.run_button)
    assert all(w.compare_tab.checklist._items[n].text(2) == "done" for n in names)

    truth = slice2d.mask
    masks = {}
    for name in names:
        found = _result_layers(viewer, name)
        assert set(found) - {"view"} == set(ROLES)
        masks[name] = found["prediction"].data.astype(bool)
    shared = _result_layers(viewer, _layers.ALL_CHECKPOINTS)
    fraction = np.mean([masks[n] for n in names], axis=0)
    np.testing.assert_allclose(shared["agreement"].data, fraction, atol=1e-6)
    np.testing.assert_array_equal(shared["disagreement"].data, (fraction > 0) & (fraction < 1))

    table = w.compare_tab.table
    assert table.rowCount() == 3
    dice_column = 3 + metrics.METRIC_KEYS.index("dice")
    for name, text in _table_column(table, dice_column).items():
        assert text == metrics.format_value("dice", metrics.compute(masks[name], truth)["dice"])
    table.sortItems(dice_column, Qt.SortOrder.DescendingOrder)
    order = [table.item(r, 0).text() for r in range(3)]
    dices = [metrics.compute(masks[n], truth)["dice"] for n in order]
    assert dices == sorted(dices, reverse=True)
    rows = list(csv.DictReader(w.compare_tab.export_csv(tmp_path / "comparison.csv").open()))
    assert [r["checkpoint"] for r in rows] == order
    assert float(rows[0]["dice"]) == pytest.approx(dices[0])

    grid = viewer.canvas.grid
    assert grid.enabled and w.grid_active()
    boxes = {}
    for index, layer in enumerate(viewer.layers):
        tag = _layers.tag_of(layer)
        if layer.visible:
            assert tag is not None, f"{layer.name} should be hidden in the grid"
            boxes.setdefault(grid.position(index, viewer.layers), set()).add((tag["checkpoint"], tag["role"]))
    assert len(boxes) == 4  # one viewbox per checkpoint + the agreement
    for name in names:
        box = next(b for b in boxes.values() if (name, "view") in b)
        assert box == {(name, "view"), (name, "difference"), (name, "contour")}
    views = [layer for layer in viewer.layers if (_layers.tag_of(layer) or {}).get("role") == "view"]
    assert all(v.data is image.data and np.allclose(v.scale, image.scale) for v in views)

    w.compare_tab.grid_box.setChecked(False)
    assert not grid.enabled and not w.grid_active()
    assert not any((_layers.tag_of(layer) or {}).get("role") == "view" for layer in viewer.layers)
    assert image.visible and truth_layer.visible


def test_cancel_stops_the_run(widget, qtbot, monkeypatch):
    w, viewer = widget, widget.viewer
    volume = np.random.default_rng(0).integers(0, 1000, (48, 64, 64)).astype(np.uint16)
    viewer.add_image(volume, name="volume")
    real = _runner.predict

    def held_after_first_batch(*args, progress, cancel, **kwargs):
        def report(done, total):
            progress(done, total)
            deadline = time.monotonic() + 20
            while done and not cancel() and time.monotonic() < deadline:
                time.sleep(0.01)  # wait for the user's click (deterministic cancel point)
        return real(*args, progress=report, cancel=cancel, **kwargs)

    monkeypatch.setattr(_runner, "predict", held_after_first_batch)
    w.run_tab.combo.select("tiny_bce")
    qtbot.mouseClick(w.run_tab.run_button, Qt.MouseButton.LeftButton)
    assert not w.run_tab.run_button.isEnabled() and w.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: w.status.text().startswith("Running"), timeout=TIMEOUT_MS)
    qtbot.mouseClick(w.run_tab.run_button, Qt.MouseButton.LeftButton)  # disabled: no second job
    qtbot.mouseClick(w.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert w.status.text().startswith("Cancelled: 0 of 1")
    assert not any(_layers.is_result(layer) for layer in viewer.layers)
    assert w.run_tab.run_button.isEnabled() and not w.cancel_button.isEnabled()


def test_event_loop_stays_responsive_on_a_volume(widget, qtbot, monkeypatch):
    w, viewer = widget, widget.viewer
    zz, yy, xx = np.mgrid[:64, :192, :192]
    volume = (500 + 300 * (((yy - 80) ** 2 + (xx - 70) ** 2 + (zz - 30) ** 2) < 400)).astype(np.uint16)
    viewer.add_image(volume, name="volume", scale=(2.0, 1.0, 1.0))
    w.run_tab.combo.select("tiny_dice")
    processed: list[float] = []  # when the worker had the volume's probabilities, layers and metrics ready
    real_derive = _runner.derive

    def timed_derive(*args, **kwargs):
        derived = real_derive(*args, **kwargs)
        processed.append(time.perf_counter())
        return derived

    monkeypatch.setattr(_runner, "derive", timed_derive)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    qtbot.mouseClick(w.run_tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    timer.stop()
    assert w.status.text().startswith("Done"), w.status.text()
    # while the volume is processed; napari building the new layers' visuals afterwards is not counted
    gaps = np.diff([t for t in ticks if t <= processed[0]] + [processed[0]])
    assert len(gaps) >= 10, f"processing took only {len(gaps)} heartbeats: too short to measure"
    assert gaps.max() < 0.1, f"longest event-loop stall {gaps.max() * 1000:.0f} ms"


def test_anisotropic_volume_geometry_and_slice_metrics(widget, qtbot):
    w, viewer = widget, widget.viewer
    zz, yy, xx = np.mgrid[:8, :64, :64]
    truth = ((yy - 30) ** 2 / 200 + (xx - 34) ** 2 / 150 + (zz - 4) ** 2 / 6) < 1
    volume = (400 + 600 * truth + 20 * np.random.default_rng(1).standard_normal(truth.shape)).astype(np.float32)
    scale, translate = (3.0, 0.7, 0.9), (12.0, -5.0, 2.5)
    placed = {"affine_lps": np.diag([*scale, 1.0]).tolist(), "axcodes_on_disk": "RAS"}  # as the NIfTI reader puts it
    image = viewer.add_image(volume, name="mri", scale=scale, translate=translate, metadata=placed)
    viewer.add_labels(truth.astype(np.uint8), name="mask", scale=scale, translate=translate)
    w.run_tab.combo.select("tiny_bce")
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    found = _result_layers(viewer, "tiny_bce")
    for layer in found.values():
        assert {k: layer.metadata.get(k) for k in placed} == placed  # napari's Save Layer writes it to NIfTI
        np.testing.assert_allclose(layer.scale, scale)
        np.testing.assert_allclose(layer.translate, translate)
        np.testing.assert_allclose(layer.affine.affine_matrix, image.affine.affine_matrix)
        np.testing.assert_allclose(layer.data_to_world([3, 10, 20]), image.data_to_world([3, 10, 20]))
    pred = found["prediction"].data.astype(bool)
    result = w.results[(_layers.source_key(image), "tiny_bce")]
    assert result.derived.metrics == metrics.compute(pred, truth, spacing=scale)

    viewer.dims.set_point(0, translate[0] + 5 * scale[0])  # world z of slice 5
    header = w.run_tab.metrics.table.horizontalHeaderItem(2).text()
    assert header == "slice 5"
    expected = metrics.compute(pred[5], truth[5], spacing=scale[1:])
    shown = [w.run_tab.metrics.table.item(r, 2).text() for r in range(len(metrics.METRIC_KEYS))]
    assert shown == [metrics.format_value(k, expected[k], ndim=2) for k in metrics.METRIC_KEYS]


def test_resample_option_runs_at_the_card_pixel_size(widget, qtbot, slice2d):
    w, viewer = widget, widget.viewer
    _add_scan(viewer, slice2d)  # about 2.4 mm pixels; the tiny cards say 1 mm
    w.run_tab.combo.select("tiny_bce")
    assert w.inputs.resample()  # on by default: the network sees the scan at its training scale
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    shown = _result_layers(viewer, "tiny_bce")["probability"].data
    expected = predict(slice2d.image, "tiny_bce", device="cpu", spacing=slice2d.spacing)
    assert expected.metadata["resampled_to_mm"] == [1.0, 1.0]
    # the choice is shown (status line and metrics header), with the way to switch it off
    note = expected.metadata["scaling_note"]
    assert note.startswith("resampled to the checkpoint's 1 x 1 mm pixels")
    assert w.status.text().startswith("Done") and f"Scale: {note} (untick 'Bring the scan" in w.status.text()
    assert f"Scale: {note}" in w.run_tab.metrics.title.text()
    np.testing.assert_allclose(shown, expected.probability, atol=1e-5)
    native = predict(slice2d.image, "tiny_bce", device="cpu", resample=False).probability
    assert not np.allclose(shown, native, atol=1e-3)
    w.inputs.resample_check.setChecked(False)
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    off = predict(slice2d.image, "tiny_bce", device="cpu", resample=False).metadata["scaling_note"]
    assert off.startswith("run on the input grid") and f"Scale: {off}." in w.status.text()
    assert "untick" not in w.status.text() and f"Scale: {off}" in w.run_tab.metrics.title.text()
    assert "tick 'Bring the scan" in w.status.text()  # 2.4 mm vs 1 mm on the layer's grid: a hint


def test_pixel_size_hint_only_for_known_and_distant_pixel_sizes():
    from napari_segloss.napari._scale import pixel_size_hint

    assert pixel_size_hint((1.0, 1.0), (0.98, 0.98)) == ""  # unit scale: pixel size unknown
    assert pixel_size_hint((3.0, 1.0, 1.0), (0.98, 0.98)) == ""
    assert pixel_size_hint((1.1, 1.1), (0.98, 0.98)) == ""  # close enough
    assert pixel_size_hint((0.5, 0.5), None) == ""  # the card does not say
    assert "finer" in pixel_size_hint((0.5, 0.5), (1.0, 1.0))
    assert "coarser" in pixel_size_hint((2.0, 0.7, 0.7), (0.4, 0.4))


def test_messages_for_invalid_inputs(widget, qtbot, slice2d):
    w, viewer = widget, widget.viewer
    image, _ = _add_scan(viewer, slice2d, truth=False)
    wrong = viewer.add_labels(np.zeros((40, 50), np.uint8), name="other mask")
    w.inputs.truth_picker.select(wrong)
    assert not w.run_tab.run_button.isEnabled()
    assert "Ground truth 'other mask' is 40 x 50 but image 'scan' is 96 x 96" in w.status.text()
    w.inputs.truth_picker.select(None)
    assert w.run_tab.run_button.isEnabled() and w.status.text() == "Ready."
    if not torch.cuda.is_available():  # the greyed-out "cuda (not found)" entry, forced
        w.inputs.device_combo.setCurrentIndex(w.inputs.device_combo.findData("cuda"))
        _click_and_wait(qtbot, w, w.run_tab.run_button)
        assert w.status.text().startswith("Could not run: device 'cuda' requested but CUDA is not available")
        assert not any(_layers.is_result(layer) for layer in viewer.layers)
    viewer.layers.remove(image)
    assert w.status.text().startswith("No image layer") and not w.run_tab.run_button.isEnabled()


def test_scale_text_names_each_choice_and_the_switch():
    from napari_segloss.checkpoints import ModelCard
    from napari_segloss.derived import derive
    from napari_segloss.napari._results import RunResult
    from napari_segloss.napari._scale import SWITCH_OFF, scale_text

    def result(name: str, scaling: str, note: str) -> RunResult:
        card = ModelCard(name=name, loss=name, family="region", patch_size=(8, 8), recipe={}, history=[])
        probability = np.zeros((8, 8), np.float32)
        return RunResult("key", "scan", card, probability, None, (1.0, 1.0),
                         {"scaling": scaling, "scaling_note": note}, derive(probability, None, None, 0.5))

    fov = result("a", "field_of_view", "pixel size unknown: resized to the checkpoint's training image size (256 x 256)")
    same = result("b", "field_of_view", fov.run["scaling_note"])
    grid = result("c", "none", "run on the input grid (8 x 8)")
    assert scale_text([]) == ""
    assert scale_text([fov, same]) == f"Scale: {fov.run['scaling_note']} ({SWITCH_OFF})."
    assert scale_text([grid]) == "Scale: run on the input grid (8 x 8)."
    mixed = scale_text([fov, same, grid])
    assert mixed.startswith(f"Scale: a, b: {fov.run['scaling_note']}; c: run on the input grid (8 x 8)")
    assert mixed.endswith(f"({SWITCH_OFF}).")


def test_threshold_updater_applies_only_the_newest_threshold_and_nothing_after_close(qtbot):
    from napari_segloss.checkpoints import ModelCard
    from napari_segloss.derived import derive
    from napari_segloss.napari._results import RunResult
    from napari_segloss.napari._threshold import ThresholdUpdater

    probability = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    card = ModelCard(name="a", loss="dice", family="region", patch_size=(8, 8), recipe={}, history=[])
    result = RunResult("key", "scan", card, probability, None, (1.0, 1.0), {}, derive(probability, None, None, 0.5))
    current, applied, failed = [0.3], [], []
    updater = ThresholdUpdater(lambda: current[0], lambda t: [result], lambda done, t: applied.append((done, t)),
                               failed.append)
    updater.run()
    current[0] = 0.7
    updater.run()  # voids the computation for 0.3 still in flight
    qtbot.waitUntil(lambda: bool(applied), timeout=TIMEOUT_MS)
    qtbot.wait(300)
    ((done, threshold),) = applied
    assert threshold == 0.7 and done[0][0] is result
    np.testing.assert_array_equal(done[0][1].mask, probability >= np.float32(0.7))
    current[0] = 0.2
    updater.run()
    updater.close()  # teardown: nothing reaches the widget any more
    updater.schedule()
    qtbot.wait(400)
    assert len(applied) == 1 and not failed


def test_skipped_cards_are_named_under_the_picker(widget, tiny_checkpoint_dir, tmp_path, monkeypatch):
    bad = tmp_path / "bad_cards"
    bad.mkdir()
    (bad / "garbled.json").write_text("{not json")
    (bad / "garbled.safetensors").write_bytes((tiny_checkpoint_dir / "tiny_bce.safetensors").read_bytes())
    w = widget
    assert not w.run_tab.skipped.isVisibleTo(w.run_tab)
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", os.pathsep.join([str(tiny_checkpoint_dir), str(bad)]))
    w.refresh_checkpoints()
    from napari_segloss.checkpoints import scan_checkpoints

    problems = scan_checkpoints().problems
    assert len(problems) == 1 and "garbled.json" in problems[0]
    assert w.run_tab.skipped.isVisibleTo(w.run_tab) and "1 checkpoint card(s) skipped" in w.run_tab.skipped.text()
    assert w.run_tab.skipped.toolTip() == problems[0]
    assert sorted(w.compare_tab.checklist.names()) == ["tiny_bce", "tiny_dice", "tiny_focal"]  # the rest still listed
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", str(tiny_checkpoint_dir))
    w.refresh_checkpoints()
    assert not w.run_tab.skipped.isVisibleTo(w.run_tab)


def test_checkpoint_that_fails_to_load(widget, qtbot, slice2d, tiny_checkpoint_dir, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    card = json.loads((tiny_checkpoint_dir / "tiny_bce.json").read_text())
    card["name"] = "broken_bce"
    (broken / "broken_bce.json").write_text(json.dumps(card))
    payload = bytearray((tiny_checkpoint_dir / "tiny_bce.safetensors").read_bytes())
    payload[-10:] = b"\0" * 10
    (broken / "broken_bce.safetensors").write_bytes(bytes(payload))
    monkeypatch.setenv("NAPARI_SEGLOSS_CHECKPOINTS", os.pathsep.join([str(tiny_checkpoint_dir), str(broken)]))
    w, viewer = widget, widget.viewer
    w.refresh_checkpoints()
    _add_scan(viewer, slice2d)
    w.show_page(w.compare_tab)
    w.compare_tab.checklist.set_checked(["broken_bce", "tiny_dice"])
    _click_and_wait(qtbot, w, w.compare_tab.run_button)
    assert "Checkpoint 'broken_bce' could not be run" in w.status.text() and "sha256" in w.status.text()
    assert w.compare_tab.checklist._items["broken_bce"].text(2) == "failed"
    assert set(_result_layers(viewer, "tiny_dice")) >= set(ROLES)
    assert w.compare_tab.table.rowCount() == 1


def test_cuda_out_of_memory_fallback_of_the_core_is_reported(widget, qtbot, slice2d, monkeypatch):
    """The fallback itself is inference.predict's (tested there); the widget says where the run ended."""
    real_predict, real_segmenter = _runner.predict, _runner.Segmenter

    def predict_fell_back_to_cpu(image, loaded, *, device, **kwargs):
        assert torch.device(device).type == "cuda"  # the widget asks for the device the user picked...
        return real_predict(image, loaded, device="cpu", **kwargs)  # ...and predict finished on the CPU

    monkeypatch.setattr(_runner, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(_runner, "Segmenter", type("OnCpu", (), {
        "load": staticmethod(lambda checkpoint, device: real_segmenter.load(checkpoint, device="cpu"))}))
    monkeypatch.setattr(_runner, "predict", predict_fell_back_to_cpu)
    w, viewer = widget, widget.viewer
    _add_scan(viewer, slice2d)
    w.run_tab.combo.select("tiny_dice")
    _click_and_wait(qtbot, w, w.run_tab.run_button)
    assert "out of memory on cuda: finished on the CPU" in w.status.text()
    assert w.compare_tab.checklist._items["tiny_dice"].text(2) == "done (CPU)"
    result = next(iter(w.results.values()))
    assert result.run["device"] == "cpu"
    assert set(_result_layers(viewer, "tiny_dice")) == set(ROLES)


def test_runner_synchronously(tiny_registry, slice2d):
    request = _runner.Request(image=slice2d.image, truth=slice2d.mask, spacing=slice2d.spacing,
                              checkpoints=["tiny_dice", "no_such_checkpoint"], device="cpu", threshold=0.5)
    events: list = []
    outcome = _runner.run_jobs(request, report=events.append, cancel=lambda: False)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Started", "Progress", "Progress", "Finished", "Started", "Failed"]
    assert outcome == _runner.Outcome(finished=1, failed=1, cancelled=False)
    finished = events[3]
    expected = predict(slice2d.image, "tiny_dice", device="cpu", spacing=slice2d.spacing, resample=request.resample)
    np.testing.assert_array_equal(finished.prediction.probability, expected.probability)
    assert finished.derived.metrics == metrics.compute(expected.mask(0.5), slice2d.mask, slice2d.spacing)
    assert "unknown checkpoint" in events[-1].message


def test_runner_builds_no_torch_network_when_a_cpu_graph_is_cached(tiny_registry, slice2d, monkeypatch):
    """The widget's first run pays no network-library import: with ONNX Runtime and the graph
    cached, the runner never asks for the torch model (``checkpoints.load`` builds it)."""
    pytest.importorskip("onnxruntime")
    from napari_segloss import checkpoints
    from napari_segloss.checkpoints import loading

    monkeypatch.setenv("NAPARI_SEGLOSS_BACKEND", "onnx")
    request = _runner.Request(image=slice2d.image, truth=slice2d.mask, spacing=slice2d.spacing,
                              checkpoints=["tiny_dice"], device="cpu", threshold=0.5)
    first: list = []
    _runner.run_jobs(request, report=first.append, cancel=lambda: False)  # exports and caches the graph
    checkpoints.clear_cache()
    monkeypatch.setattr(loading, "_load_uncached", lambda *a, **k: pytest.fail("the torch network was built"))
    events: list = []
    outcome = _runner.run_jobs(request, report=events.append, cancel=lambda: False)
    assert outcome == _runner.Outcome(finished=1, failed=0, cancelled=False)
    np.testing.assert_array_equal(events[-1].prediction.probability, first[-1].prediction.probability)
    assert events[-1].card.name == "tiny_dice"


def test_demo_docks_the_widget(tiny_registry, qtbot):
    from napari_segloss.napari._demo import open_demo
    from napari_segloss.napari._widget import LossExplorerWidget

    viewer = open_demo(2, show=False)
    try:
        docked = [d.widget() for d in viewer.window._wrapped_dock_widgets.values()] \
            if hasattr(viewer.window, "_wrapped_dock_widgets") else []
        widgets = [w for w in docked if isinstance(w, LossExplorerWidget)] or \
            [w for w in viewer.window._qt_window.findChildren(LossExplorerWidget)]
        assert len(widgets) == 1
        assert widgets[0].inputs.image() is not None and widgets[0].inputs.truth() is not None
    finally:
        viewer.close()


def test_triton_guard_only_with_an_llvm_gl_driver(tmp_path, monkeypatch):
    import sys

    from napari_segloss.napari import _triton_guard

    maps = tmp_path / "maps"
    monkeypatch.setattr(_triton_guard, "_MAPS", maps)
    monkeypatch.setitem(sys.modules, "triton", None)  # restored after the test
    monkeypatch.delitem(sys.modules, "triton")
    maps.write_text("7f00 r-xp /usr/lib/x86_64-linux-gnu/libGLX_mesa.so.0\n")
    assert not _triton_guard.guard_triton() and "triton" not in sys.modules
    maps.write_text("7f00 r-xp /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n")
    assert _triton_guard.guard_triton() and sys.modules["triton"] is None
    with pytest.raises(ImportError):
        import triton  # noqa: F401
    assert not _triton_guard.guard_triton()  # already decided


_ACTIVATION_PROBE = """
import sys
import napari
import npe2
viewer = napari.Viewer(show=False)  # loads the GL driver (Mesa's llvmpipe under Xvfb)
assert "triton" not in sys.modules
npe2.PluginManager.instance().activate("napari-segloss")
import segmentation_models_pytorch  # imports torch._dynamo, which tries Triton
print("triton" in sys.modules, sys.modules.get("triton"))
"""


def test_the_triton_guard_runs_once_at_plugin_activation():
    """The manifest's on_activate applies the guard (no widget built); importing smp afterwards
    does not crash the process (without it: a segmentation fault under llvmpipe)."""
    import subprocess
    import sys

    from npe2 import PluginManifest

    from napari_segloss.napari import _interpret_tab

    manifest = PluginManifest.from_distribution(PLUGIN)
    assert manifest.on_activate == "napari_segloss.napari:activate"
    assert "guard_triton" not in vars(_interpret_tab)  # no call site left in the widgets
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "xcb")}
    done = subprocess.run([sys.executable, "-c", _ACTIVATION_PROBE], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["True", "None"]



def _held_run(monkeypatch, seen_cancel: threading.Event):
    """Make inference hold after its first batch until cancelled (records that it saw the cancel)."""
    real = _runner.predict

    def held(*args, progress, cancel, **kwargs):
        def report(done, total):
            progress(done, total)
            deadline = time.monotonic() + 30
            while done and not cancel() and time.monotonic() < deadline:
                time.sleep(0.01)
            if cancel():
                seen_cancel.set()
        return real(*args, progress=report, cancel=cancel, **kwargs)

    monkeypatch.setattr(_runner, "predict", held)


def _start_held_job_and_report_dir(qtbot, w, tmp_path, monkeypatch):
    """A run held mid-volume, and the Batch tab's extracted-report folder of a finished tiny batch."""
    from napari_segloss.batch import run_batch

    from test_batch_tab import write_pairs

    w.batch_tab.result = run_batch(write_pairs(tmp_path / "in", 1), ["tiny_dice"], tmp_path / "r.zip", device="cpu")
    report_dir = w.batch_tab.report_path().parent
    assert report_dir.is_dir()
    seen_cancel = threading.Event()
    _held_run(monkeypatch, seen_cancel)
    w.viewer.add_image(np.random.default_rng(0).integers(0, 1000, (48, 64, 64)).astype(np.uint16), name="volume")
    w.run_tab.combo.select("tiny_bce")
    qtbot.mouseClick(w.run_tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.status.text().startswith("Running"), timeout=TIMEOUT_MS)
    return seen_cancel, report_dir


def test_removing_the_dock_tears_the_widget_down(widget, qtbot, tmp_path, monkeypatch):
    w, viewer = widget, widget.viewer
    seen_cancel, report_dir = _start_held_job_and_report_dir(qtbot, w, tmp_path, monkeypatch)
    status = w.status.text()
    viewer.window.remove_dock_widget(w)  # napari never calls the widget's closeEvent here
    assert seen_cancel.wait(10), "the running job was not cancelled"
    assert not report_dir.exists()
    from napari_segloss.napari._lifetime import owned_callbacks

    assert owned_callbacks(viewer, w.lifetime._owners) == []
    entries = w.inputs.image_picker.count()
    viewer.add_image(np.zeros((32, 32), np.float32), name="added after")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="mask after")
    qtbot.wait(300)  # let the cancelled job's queued reports arrive
    assert w.inputs.image_picker.count() == entries  # the pickers no longer follow the viewer
    assert w.status.text() == status  # no handler of the removed widget ran
    assert not any(_layers.is_result(layer) for layer in viewer.layers)


def test_closing_the_viewer_tears_the_widget_down(tiny_registry, qtbot, tmp_path, monkeypatch, mock_app_model):
    """(A real viewer, closed by the test; ``mock_app_model``: a fresh napari app, as
    make_napari_viewer uses, so plugins registered by an earlier test's viewer do not clash.)"""
    import napari
    from napari.plugins import _initialize_plugins

    _initialize_plugins.cache_clear()  # register the plugins' actions into the fresh app
    viewer = napari.Viewer(show=False)
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    seen_cancel, report_dir = _start_held_job_and_report_dir(qtbot, w, tmp_path, monkeypatch)
    viewer.close()
    assert seen_cancel.wait(10), "the running job was not cancelled"
    assert not report_dir.exists()
    from napari_segloss.napari._lifetime import owned_callbacks

    assert owned_callbacks(viewer, w.lifetime._owners) == []


def _native_slices():
    from napari_segloss.paths import shared_data_dir

    return sorted((shared_data_dir() / "figshare" / "native" / "images").glob("*.png"))


@pytest.mark.skipif(not _native_slices(), reason="real data not here: ../shared/data/figshare/native is absent "
                                                 "(it never ships with the repository)")
def test_a_dropped_512_png_runs_at_the_training_field_of_view_by_default(make_napari_viewer, qtbot):
    """A real 512x512 PNG opened through the plugin's reader (pixel size unknown) with the bundled
    best real checkpoint: the widget's default run is ``predict``'s default (training field of view,
    mapped back), which ``tests/test_real_data.py`` holds to the 256x256 copies' Dice on all 40."""
    from napari_segloss.checkpoints import list_checkpoints

    real = [c for c in list_checkpoints() if (c.card.data or {}).get("source") == "labelled folder"]
    if not real:
        pytest.skip("no bundled checkpoint is trained on the real data yet")
    best = max(real, key=lambda c: c.card.test_metrics.get("dice") or 0.0).name
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    for path in _native_slices()[:2]:
        viewer.layers.clear()
        (layer,) = viewer.open(str(path), plugin=PLUGIN)
        assert tuple(layer.scale) == (1.0, 1.0) and w.inputs.image() == layer
        assert w.inputs.resample()
        w.run_tab.combo.select(best)
        _click_and_wait(qtbot, w, w.run_tab.run_button)
        expected = predict(layer.data, best, device="cpu")
        assert expected.metadata["scaling"] == "field_of_view"
        assert "pixel size unknown" in w.status.text(), w.status.text()
        shown = _result_layers(viewer, best)["prediction"].data > 0
        assert shown.shape == layer.data.shape == (512, 512)
        np.testing.assert_array_equal(shown, expected.mask())
