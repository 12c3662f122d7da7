"""The Batch tab (GUI; run with xvfb-run): validation, a run in a thread worker, report, worst cases, cancel."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from qtpy.QtCore import Qt

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

from napari_segloss.data.synthetic import generate_slice  # noqa: E402
from napari_segloss.napari._batch_tab import BATCH_TAG, BatchTab, format_eta  # noqa: E402
from napari_segloss.napari._layers import source_key, tag_of, tagged  # noqa: E402


def write_pairs(folder: Path, n: int, size: int = 48) -> Path:
    folder.mkdir()
    for i in range(n):
        sample = generate_slice(i, size)
        for name, array in ((f"s{i}.png", sample.image), (f"s{i}_mask.png", sample.mask.astype(np.uint8) * 255)):
            buffer = io.BytesIO()
            PILImage.fromarray(array).save(buffer, format="PNG")
            (folder / name).write_bytes(buffer.getvalue())
    return folder


@pytest.fixture
def tab(make_napari_viewer, tiny_registry: Path, qtbot) -> BatchTab:
    widget = BatchTab(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    return widget


def wait_idle(qtbot, tab: BatchTab, timeout: int = 120_000) -> None:
    qtbot.waitUntil(lambda: tab.worker is None, timeout=timeout)


def test_format_eta() -> None:
    assert format_eta(None) == "ETA …"
    assert format_eta(65.4) == "ETA 1:05"
    assert format_eta(3723) == "ETA 1:02:03"


def test_run_is_enabled_only_for_valid_settings(tab: BatchTab, tmp_path: Path) -> None:
    assert not tab.run_button.isEnabled() and "input" in tab.status.text()
    assert tab.checklist.names() == ["tiny_bce", "tiny_focal", "tiny_dice"]
    tab.input_edit.setText(str(tmp_path / "missing"))
    assert "folder or a ZIP" in tab.status.text()
    tab.input_edit.setText(str(write_pairs(tmp_path / "in", 1)))
    tab.output_edit.setText(str(tmp_path / "out.txt"))
    assert "end in .zip" in tab.status.text()
    tab.output_edit.setText(str(tmp_path / "out.zip"))
    assert "Tick the checkpoints" in tab.status.text() and not tab.run_button.isEnabled()
    tab.checklist.set_checked(["tiny_dice"])
    assert tab.run_button.isEnabled() and not tab.cancel_button.isEnabled()
    (tmp_path / "out.zip").write_bytes(b"old")
    tab.validate()
    assert not tab.run_button.isEnabled() and "exists" in tab.status.text()
    tab.overwrite_box.setChecked(True)
    assert tab.run_button.isEnabled()
    assert not tab.report_button.isEnabled() and not tab.worst_button.isEnabled()


def test_run_report_and_worst_cases(tab: BatchTab, tmp_path: Path, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    tab.input_edit.setText(str(write_pairs(tmp_path / "in", 3)))
    out = tmp_path / "results.zip"
    tab.output_edit.setText(str(out))
    tab.checklist.set_checked(["tiny_dice", "tiny_bce"])
    values: list[int] = []
    tab.progress_bar.valueChanged.connect(values.append)
    tab.run()
    assert tab.worker is not None and not tab.run_button.isEnabled() and tab.cancel_button.isEnabled()
    wait_idle(qtbot, tab)
    assert tab.result is not None and tab.result.out == out and zipfile.is_zipfile(out)
    assert "Done: 3 image(s) x 2 checkpoint(s)" in tab.status.text()
    assert values[-1] == tab.progress_bar.maximum() and len(values) >= 2
    assert tab.resample_box.isChecked() and "Scale: each image ran at the checkpoint's training pixel size" in \
        tab.status.text() and "untick 'Bring each scan" in tab.status.text()  # the default rule, and its switch
    assert tab.report_button.isEnabled() and tab.worst_button.isEnabled()
    assert not tab.run_button.isEnabled()  # the output exists now and overwrite is off

    opened: list = []
    monkeypatch.setattr("napari_segloss.napari._batch_tab.QDesktopServices.openUrl", opened.append)
    tab.open_report()
    path = Path(opened[0].toLocalFile())
    assert path.read_bytes() == zipfile.ZipFile(out).read("report.html")

    tab.load_worst(2)
    qtbot.waitUntil(lambda: len(tab.case_layers()) == 2, timeout=60_000)
    worst = tab.result.worst(2)
    images = tab.case_layers()
    assert [(layer.metadata[BATCH_TAG]["item"], layer.metadata[BATCH_TAG]["checkpoint"]) for layer in images] == [
        (case.item, case.checkpoint) for case in worst
    ]
    for image, case in zip(images, worst):
        roles = {tag_of(layer)["role"]: layer for layer in tagged(tab.viewer, source_key(image))}
        assert set(roles) == {"prediction", "contour", "difference"}
        truth = np.asarray(PILImage.open(tmp_path / "in" / f"{case.item}_mask.png")) != 0
        pred = np.asarray(PILImage.open(io.BytesIO(zipfile.ZipFile(out).read(case.members["pred_mask"])))) != 0
        diff = roles["difference"].data
        np.testing.assert_array_equal(diff == 1, pred & truth)
        np.testing.assert_array_equal(diff == 3, ~pred & truth)
        assert tuple(roles["difference"].scale) == tuple(image.scale)
    tab.remove_cases()
    assert tab.case_layers() == [] and list(tagged(tab.viewer)) == []


def test_cancel_writes_nothing(tab: BatchTab, tmp_path: Path, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    import napari_segloss.batch as batch

    tab.input_edit.setText(str(write_pairs(tmp_path / "in", 4)))
    out = tmp_path / "cancelled.zip"
    tab.output_edit.setText(str(out))
    tab.checklist.set_checked(["tiny_dice", "tiny_bce", "tiny_focal"])
    real = batch.run_batch

    def cancel_after_first(*args, progress, **kwargs):
        # Cancel in the worker thread itself (a queued click could come after the whole small batch);
        # the user's Cancel button goes through tab.cancel(), i.e. the same Job.cancel().
        def report(p):
            progress(p)
            if p.done >= 1:
                tab.worker.cancel()
        return real(*args, progress=report, **kwargs)

    monkeypatch.setattr(batch, "run_batch", cancel_after_first)
    tab.run()
    wait_idle(qtbot, tab)
    assert "Cancelled" in tab.status.text() and tab.result is None
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in", "no_bundled_weights"]
    assert tab.run_button.isEnabled()


def test_resample_box_reaches_run_batch(tab: BatchTab, tmp_path: Path, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    import napari_segloss.batch as batch

    tab.input_edit.setText(str(write_pairs(tmp_path / "in", 1)))
    tab.output_edit.setText(str(tmp_path / "results.zip"))
    tab.checklist.set_checked(["tiny_dice"])
    seen: list[dict] = []

    def fake_run_batch(*args, **kwargs):
        seen.append(kwargs)
        raise batch.BatchCancelled("not run")

    monkeypatch.setattr(batch, "run_batch", fake_run_batch)
    tab.resample_box.setChecked(not tab.resample_box.isChecked())
    tab.run()
    wait_idle(qtbot, tab)
    assert seen and seen[0]["resample"] is tab.resample_box.isChecked()
    returned = type("Result", (), {"items": [1], "checkpoints": ["tiny_dice"], "seconds": 1.0, "failed": 0,
                                   "out": tmp_path / "results.zip"})()
    tab.auto_load_box.setChecked(False)
    tab._on_returned(returned)  # the scale rule of the run is said with its result
    off = "Scale: each image ran on the file's own grid."
    assert (off in tab.status.text()) is (not seen[0]["resample"])


def test_a_late_load_of_older_worst_cases_is_dropped(tab: BatchTab, tmp_path: Path, qtbot,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import napari_segloss.batch as batch

    tab.input_edit.setText(str(write_pairs(tmp_path / "in", 3)))
    tab.output_edit.setText(str(tmp_path / "results.zip"))
    tab.checklist.set_checked(["tiny_dice"])
    tab.run()
    wait_idle(qtbot, tab)
    real, release, calls = batch.load_case, threading.Event(), []

    def slow_first(result, case):
        calls.append(case)
        if len(calls) == 1:
            release.wait(20)  # the first load is still reading when the user asks again
        return real(result, case)

    monkeypatch.setattr(batch, "load_case", slow_first)
    tab.load_worst(1)
    first = tab._case_worker
    first_done: list[bool] = []
    first.finished.connect(lambda: first_done.append(True))
    tab.load_worst(2)
    qtbot.waitUntil(lambda: len(tab.case_layers()) == 2, timeout=60_000)
    release.set()
    qtbot.waitUntil(lambda: bool(first_done), timeout=60_000)
    qtbot.wait(100)
    assert len(tab.case_layers()) == 2  # the older, slower load did not replace the newer one
