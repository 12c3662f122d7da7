"""The Interpret tab on a real viewer (xvfb-run): loss-map layers, response and confidence plots,
fine-tuning into a new checkpoint that the Loss explorer's pickers then offer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloss.interpret import loss_map
from napari_segloss.napari import _layers

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

PLUGIN = "napari-segloss"


@pytest.fixture
def tab(make_napari_viewer, tiny_registry):
    """A viewer and an Interpret tab on a stand-alone inputs panel."""
    from napari_segloss.napari._inputs import InputsPanel
    from napari_segloss.napari._interpret_tab import InterpretTab

    viewer = make_napari_viewer()
    inputs = InputsPanel(viewer)
    return viewer, InterpretTab(viewer, inputs)


def _scene(viewer, shape=(48, 56), scale=(0.5, 0.7)):
    """Image + Labels ground truth + two checkpoints' probability layers tagged as the widget does."""
    rng = np.random.default_rng(0)
    truth = np.zeros(shape, np.uint8)
    truth[..., 12:30, 15:35] = 1
    image = viewer.add_image((rng.random(shape) * 500 + 800.0 * truth).astype(np.uint16), name="scan", scale=scale)
    viewer.add_labels(truth, name="scan_mask", scale=scale)
    probs = {}
    for k, name in enumerate(("tiny_dice", "tiny_focal")):
        prob = np.clip(0.15 + 0.6 * truth + 0.2 * rng.random(shape) - 0.1 * k, 0.0, 1.0).astype(np.float32)
        _layers.upsert(viewer, image, checkpoint=name, role="probability", name=f"scan · {name} · probability",
                       data=prob, has_truth=True)
        probs[name] = prob
    return image, truth, probs


def _wait(qtbot, page, timeout=60_000):
    qtbot.waitUntil(lambda: page.worker is None, timeout=timeout)


def test_loss_map_layer_matches_the_core_and_follows_the_image(tab, qtbot):
    viewer, widget = tab
    image, truth, probs = _scene(viewer)
    page = widget.loss_map
    assert [page.prediction.itemText(i) for i in range(page.prediction.count())] == ["tiny_dice", "tiny_focal"]
    page.prediction.setCurrentText("tiny_dice")
    page.loss.setCurrentIndex(page.loss.findData("focal"))
    page.mode.setCurrentIndex(page.mode.findData("per_pixel"))
    page.button.click()
    _wait(qtbot, page)
    (layer,) = [lyr for lyr in viewer.layers if _layers.tag_of(lyr) and _layers.tag_of(lyr)["role"] == "loss map"]
    expected = loss_map(probs["tiny_dice"], truth, "focal", kind="probability", spacing=(0.5, 0.7))
    np.testing.assert_allclose(layer.data, expected.per_pixel, rtol=1e-6)
    np.testing.assert_allclose(layer.scale, image.scale)
    assert layer.name == "scan · tiny_dice · focal term" and "focal" in page.status.text()

    page.loss.setCurrentIndex(page.loss.findData("dice"))  # no per-pixel term: falls back to the gradient
    page.button.click()
    _wait(qtbot, page)
    assert [lyr for lyr in viewer.layers if _layers.tag_of(lyr) and _layers.tag_of(lyr)["role"] == "loss map"] == [layer]
    np.testing.assert_allclose(layer.data, loss_map(probs["tiny_dice"], truth, "dice").gradient, rtol=1e-6)
    assert "does not decompose" in page.status.text() and layer.name == "scan · tiny_dice · dice gradient"


def test_loss_map_of_the_current_slice_and_a_feature_loss(tab, qtbot):
    viewer, widget = tab
    image, truth, probs = _scene(viewer, shape=(3, 40, 40), scale=(3.0, 0.8, 0.8))
    viewer.dims.set_current_step(0, 2)
    page = widget.loss_map
    page.prediction.setCurrentText("tiny_dice")
    page.loss.setCurrentIndex(page.loss.findData("fess"))  # needs decoder features: re-runs the checkpoint
    page.button.click()
    _wait(qtbot, page)
    layer = _layers.find(viewer, _layers.source_key(image), "tiny_dice", "loss map")
    assert layer.data.shape == (3, 40, 40) and not layer.data[:2].any() and layer.data[2].max() > 0
    assert _layers.tag_of(layer)["run"]["index"] == 2


def test_response_and_confidence_plots(tab, qtbot):
    viewer, widget = tab
    _, truth, probs = _scene(viewer)
    response = widget.response
    response.set_checked(["bce", "tversky"])
    response.plot()
    _wait(qtbot, response)
    axes = response.canvas.figure.axes
    assert len(axes) == 6 and [ax.get_title() for ax in axes[:2]] == ["Binary cross-entropy", "Tversky"]
    assert "ground truth of 'scan'" in response.status.text()
    assert len(axes[4].lines[0].get_xdata()) == 11  # size response over radii -5..5

    confidence = widget.confidence
    confidence.plot()
    _wait(qtbot, confidence)
    titles = {ax.get_title().splitlines()[0]: ax.get_title() for ax in confidence.canvas.figure.axes
              if ax.get_visible()}
    assert sorted(titles) == ["tiny_dice", "tiny_focal"]
    for name, title in titles.items():
        assert f"tumour {probs[name][truth > 0].mean():.2f}, background {probs[name][truth == 0].mean():.2f}" in title


def test_fine_tune_from_the_tab_appears_in_the_widget_pickers(make_napari_viewer, tiny_registry, qtbot, tmp_path,
                                                                monkeypatch):
    from napari_segloss.data.synthetic import generate_slice

    monkeypatch.setenv("NAPARI_SEGLOSS_USER_DIR", str(tmp_path / ".napari-segloss" / "checkpoints"))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss explorer")
    sample = generate_slice(6, 128)
    viewer.add_image(sample.image, name="glioma")
    viewer.add_labels(sample.mask.astype(np.uint8), name="glioma_mask")
    tabs = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
    assert "Interpret" in tabs
    page = widget.interpret_tab.fine_tune
    page.checkpoint.select("tiny_dice")
    page.steps.setValue(4)
    page.batch.setValue(2)
    page.name.setText("tiny_dice_on_glioma")
    with qtbot.waitSignal(widget.interpret_tab.checkpoint_saved, timeout=120_000) as saved:
        page.button.click()
    assert saved.args == ["tiny_dice_on_glioma"]
    assert (tmp_path / ".napari-segloss" / "checkpoints" / "tiny_dice_on_glioma.json").is_file()
    assert page.curve["steps"] == [1, 2, 3, 4] and page.curve["dice_steps"] == [1, 2, 3, 4]
    widget.run_tab.combo.select("tiny_dice_on_glioma")  # the Run tab's picker lists it
    assert "tiny_dice_on_glioma" in widget.compare_tab.checklist.names()

    page.steps.setValue(10_000)
    page.name.setText("")
    page.button.click()
    qtbot.waitUntil(lambda: len(page.curve["steps"]) >= 1, timeout=60_000)
    page.cancel()
    _wait(qtbot, page)
    assert "Cancelled" in page.status.text()


def test_calibration_page_plots_the_images_reliability_and_calibrates_heatmaps(tab, qtbot):
    from napari_segloss.interpret.calibration import reliability, rescale_probability

    viewer, widget = tab
    image, truth, probs = _scene(viewer)
    page = widget.calibration
    assert [page.prediction.itemText(i) for i in range(page.prediction.count())] == ["tiny_dice", "tiny_focal"]
    page.prediction.setCurrentText("tiny_focal")
    drawn = {}
    page.draw = lambda name, image_name, curves, calibration: drawn.update(curves)
    page.button.click()
    _wait(qtbot, page)
    expected = reliability(probs["tiny_focal"], truth)
    np.testing.assert_allclose(drawn["as trained"].frequency, expected.frequency, equal_nan=True)
    card = {"temperature": 2.0}
    np.testing.assert_array_equal(page.shown_probability(probs["tiny_focal"], card), probs["tiny_focal"])
    with qtbot.waitSignal(page.display_changed):
        page.calibrated.setChecked(True)
    shown = page.shown_probability(probs["tiny_focal"], card)
    np.testing.assert_allclose(shown, rescale_probability(probs["tiny_focal"], 2.0))
    np.testing.assert_array_equal(shown >= 0.5, probs["tiny_focal"] >= 0.5)  # the mask does not move
    assert "unchanged" in page.status.text()


def test_landscape_page_matches_the_core_and_reports_progress(tab, qtbot):
    from napari_segloss.interpret.landscape import checkpoint_landscape

    viewer, widget = tab
    image, truth, _ = _scene(viewer)
    page = widget.landscape
    page.checkpoint.select("tiny_bce")
    page.compare.setText("dice")
    page.steps.setValue(3)
    page.button.click()
    _wait(qtbot, page)
    result = page.landscape
    assert result is not None and page.progress.value() == page.progress.maximum() == 3
    expected = checkpoint_landscape(page.checkpoint.current_info().path, np.asarray(image.data)[None],
                                    truth[None], compare=("dice",), steps=3, spacing=(0.5, 0.7))
    for name in ("own", "dice"):
        np.testing.assert_allclose(result.values[name], expected.values[name], rtol=1e-6)


def test_landscape_page_refuses_an_unknown_loss(tab, qtbot):
    viewer, widget = tab
    _scene(viewer)
    page = widget.landscape
    page.compare.setText("dice, not_a_loss")
    page.button.click()
    assert page.worker is None and "not_a_loss" in page.status.text()


def test_compare_gives_an_uncertainty_layer_and_heatmaps_follow_the_calibration_box(make_napari_viewer, tiny_registry,
                                                                                   qtbot):
    from qtpy.QtCore import Qt

    from napari_segloss.data import generate_slice
    from napari_segloss.interpret.calibration import rescale_probability
    from napari_segloss.overlays import uncertainty

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss explorer")
    sample = generate_slice(7, 96, tumour="glioma")
    image = viewer.add_image(sample.image, name="scan", scale=sample.spacing)
    viewer.add_labels(sample.mask.astype(np.uint8), name="truth", scale=sample.spacing)
    w.show_page(w.compare_tab)
    w.compare_tab.checklist.all_box.setChecked(True)
    qtbot.mouseClick(w.compare_tab.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    key = _layers.source_key(image)
    results = [r for (source, _), r in w.results.items() if source == key]
    assert len(results) == 3
    layer = _layers.find(viewer, key, _layers.ALL_CHECKPOINTS, _layers.UNCERTAINTY_ROLE)
    assert layer is not None and not layer.visible
    np.testing.assert_allclose(layer.data, uncertainty([r.probability for r in results]), atol=1e-6)

    result = results[0]
    result.card.calibration = {"temperature": 3.0}
    masks = {r.checkpoint: _layers.find(viewer, key, r.checkpoint, "prediction").data.copy() for r in results}
    w.interpret_tab.calibration.calibrated.setChecked(True)
    heat = _layers.find(viewer, key, result.checkpoint, "probability")
    np.testing.assert_allclose(heat.data, rescale_probability(result.probability, 3.0), atol=1e-6)
    for r in results:
        np.testing.assert_array_equal(_layers.find(viewer, key, r.checkpoint, "prediction").data, masks[r.checkpoint])
    w.interpret_tab.calibration.calibrated.setChecked(False)
    np.testing.assert_allclose(heat.data, result.probability, atol=1e-6)


def test_calibration_page_draws_the_cards_test_curves(tab):
    from napari_segloss.interpret.calibration import calibration_summary, reliability

    viewer, widget = tab
    page = widget.calibration
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (2, 8, 8))
    y = rng.random(z.shape) < 1 / (1 + np.exp(-z / 2))
    stored = calibration_summary(z, y, z, y)
    page.draw("tiny_dice", "scan", {"as trained": reliability(1 / (1 + np.exp(-z)), y)}, stored)
    left, right = page.canvas.figure.axes
    assert len(right.get_lines()) == 3  # diagonal, as trained, calibrated
    assert f"temperature {stored['temperature']:.2f}" in page.status.text()
    page.draw("tiny_dice", "scan", {}, {})
    assert "no calibration" in page.status.text()
