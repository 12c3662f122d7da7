"""The "Batch" tab of the Loss explorer: a folder or ZIP of scans through several checkpoints.

Input and output pickers, the checkpoints to run (grouped by loss family), device, threshold,
threads and overwrite; Run and Cancel; a progress bar with the ETA. The run is
:func:`napari_segloss.batch.run_batch` as a :class:`~napari_segloss.napari._jobs.Job` (one thread
worker; its progress callback reaches the main thread through a queued signal; Cancel sets the
event the run polls between batches). When it is done, "Open report" shows report.html (extracted from the result ZIP into a
temporary folder) in the browser, and "Load worst cases" puts the images with the lowest Dice into
the viewer with their ground truth and result layers (a later load, or a new run, voids one still
loading). :meth:`BatchTab.teardown` cancels and removes the temporary folder when the dock goes.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QUrl
from qtpy.QtGui import QDesktopServices
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_segloss.checkpoints import list_checkpoints
from napari_segloss.models import available_devices, resolve_device
from napari_segloss.napari import _layers
from napari_segloss.napari._checkpoint_pickers import CheckpointChecklist
from napari_segloss.napari._jobs import Job
from napari_segloss.napari._scale import batch_scale_text

#: tag of the image layers the tab loads (worst cases); their result layers use _layers.TAG
BATCH_TAG = "napari_segloss_batch"
_PROGRESS_STEPS = 1000
_COLORS = {"info": "", "warning": "color: #E69F00", "error": "color: #D55E00"}


def format_eta(seconds: float | None) -> str:
    """``"ETA 1:05"`` / ``"ETA 1:02:03"``; ``"ETA …"`` while unknown."""
    if seconds is None:
        return "ETA …"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"ETA {hours}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes}:{secs:02d}"


def _path_row(edit: QLineEdit, *buttons: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    for button in buttons:
        row.addWidget(button)
    return row


class BatchTab(QWidget):
    """The Batch tab. ``run()`` starts a batch with the current settings (Run button);
    ``cancel()`` stops it; ``result`` holds the last :class:`~napari_segloss.batch.BatchResult`;
    ``worker`` is the :class:`~napari_segloss.napari._jobs.Job` in flight (None when idle)."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.result: Any = None
        self.worker: Job | None = None
        self._case_worker: Any = None
        self._case_generation = 0  # bumped by every load and run: a late load of older cases is dropped
        self._resample = True  # the scale rule of the last run
        self._report_dir: Path | None = None

        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("folder or .zip of images (x.png + x_mask.png, or images/ + masks/)")
        self.input_folder_button = QPushButton("Folder…")
        self.input_zip_button = QPushButton("ZIP…")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("results.zip")
        self.output_button = QPushButton("Save as…")
        self.checklist = CheckpointChecklist()
        self.refresh_button = QToolButton()
        self.refresh_button.setText("↻")
        self.refresh_button.setToolTip("Look for checkpoints again (weights folder and NAPARI_SEGLOSS_CHECKPOINTS)")
        self.device_combo = QComboBox()
        self.device_combo.addItem(f"auto ({resolve_device('auto')})", "auto")
        for name in available_devices()[1:]:
            self.device_combo.addItem(name, name)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setValue(0.5)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 16)
        self.overwrite_box = QCheckBox("Replace an existing result file")
        self.resample_box = QCheckBox("Bring each scan to the checkpoint's training scale")
        self.resample_box.setChecked(True)
        self.worst_spin = QSpinBox()
        self.worst_spin.setRange(1, 20)
        self.worst_spin.setValue(3)
        self.auto_load_box = QCheckBox("when the run ends")
        self.run_button = QPushButton("Run batch")
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, _PROGRESS_STEPS)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.report_button = QPushButton("Open report")
        self.worst_button = QPushButton("Load worst cases")
        self._set_tooltips()
        self._build_layout()

        self.input_folder_button.clicked.connect(self._pick_folder)
        self.input_zip_button.clicked.connect(self._pick_zip)
        self.output_button.clicked.connect(self._pick_output)
        self.refresh_button.clicked.connect(self.refresh_checkpoints)
        for signal in (self.input_edit.textChanged, self.output_edit.textChanged, self.checklist.changed,
                       self.overwrite_box.toggled):
            signal.connect(self.validate)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.report_button.clicked.connect(self.open_report)
        self.worst_button.clicked.connect(lambda: self.load_worst(self.worst_spin.value()))
        self.refresh_checkpoints()

    # ------------------------------------------------------------------ layout
    def _set_tooltips(self) -> None:
        tips = {
            self.input_folder_button: "Pick a folder of images and masks (PNG, JPG, TIFF, DICOM files or series folders)",
            self.input_zip_button: "Pick a ZIP of images and masks (unsafe or non-image members are refused)",
            self.output_button: "Where to write the result ZIP (masks, overlays, metrics, summary, report)",
            self.device_combo: "Where the networks run; auto picks CUDA, then Apple MPS, then the CPU",
            self.threshold_spin: "Probability at or above which a pixel counts as tumour",
            self.workers_spin: "Batches processed at the same time (threads)",
            self.resample_box: "On (default): each image runs at the checkpoint's training pixel size when the file "
            "records one (DICOM, NIfTI, TIFF), else (PNG/JPG) at its training image size; results are mapped back "
            "to the file's grid. Off: run on the file's own grid",
            self.worst_spin: "How many image x checkpoint results with the lowest Dice to load",
            self.auto_load_box: "Load the worst cases into the viewer as soon as the batch is done",
            self.run_button: "Run every ticked checkpoint over every image",
            self.cancel_button: "Stop after the current batch; nothing is written",
            self.report_button: "Open report.html of the last run in the web browser",
            self.worst_button: "Add the images with the lowest Dice, their ground truth and results to the viewer",
        }
        for widget, tip in tips.items():
            widget.setToolTip(tip)

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("Input", _path_row(self.input_edit, self.input_folder_button, self.input_zip_button))
        form.addRow("Output", _path_row(self.output_edit, self.output_button))
        options = QHBoxLayout()
        for label, widget in (("Device", self.device_combo), ("Threshold", self.threshold_spin),
                              ("Threads", self.workers_spin)):
            options.addWidget(QLabel(label))
            options.addWidget(widget)
        options.addStretch(1)
        form.addRow(options)
        form.addRow("", self.overwrite_box)
        form.addRow("", self.resample_box)
        header = QHBoxLayout()
        header.addWidget(QLabel("Checkpoints"))
        header.addStretch(1)
        header.addWidget(self.refresh_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        after = QHBoxLayout()
        after.addWidget(self.report_button)
        after.addWidget(self.worst_button)
        after.addWidget(self.worst_spin)
        after.addWidget(self.auto_load_box)
        after.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(header)
        layout.addWidget(self.checklist, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addLayout(after)

    # ------------------------------------------------------------------ pickers and validation
    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Batch input folder", self.input_edit.text())
        if folder:
            self.input_edit.setText(folder)

    def _pick_zip(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Batch input ZIP", self.input_edit.text(), "ZIP files (*.zip)")
        if path:
            self.input_edit.setText(path)

    def _pick_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Result ZIP", self.output_edit.text() or "results.zip",
                                              "ZIP files (*.zip)")
        if path:
            self.output_edit.setText(path if path.lower().endswith(".zip") else path + ".zip")

    def refresh_checkpoints(self) -> None:
        """Look for checkpoints again and fill the list (ticked ones stay ticked)."""
        self.checklist.set_checkpoints(list_checkpoints())

    def say(self, text: str, level: str = "info", *, notify: bool = False) -> None:
        """Show ``text`` in the tab's status line; with ``notify`` also as a napari notification."""
        self.status.setText(text)
        self.status.setStyleSheet(_COLORS[level])
        if notify:
            {"info": show_info, "warning": show_warning, "error": show_error}[level](text)

    def problem(self) -> str | None:
        """Why a batch cannot start now, or None."""
        source = self.input_edit.text().strip()
        out = self.output_edit.text().strip()
        if not source:
            return "Pick an input folder or ZIP."
        path = Path(source).expanduser()
        if not (path.is_dir() or (path.is_file() and zipfile.is_zipfile(path))):
            return f"The input must be a folder or a ZIP file: {source}"
        if not out:
            return "Pick where to write the result ZIP."
        if not out.lower().endswith(".zip"):
            return "The result file must end in .zip."
        if Path(out).expanduser().exists() and not self.overwrite_box.isChecked():
            return f"{out} exists: tick 'Replace an existing result file' or pick another name."
        if not self.checklist.checked():
            return "Tick the checkpoints to run."
        return None

    def validate(self, *_: object, quiet: bool = False) -> None:
        """Re-check the settings: Run is enabled only when they are valid and no batch is running.
        The problem goes to the status line unless ``quiet`` (used to keep a run's final message)."""
        idle = self.worker is None
        problem = self.problem()
        self.run_button.setEnabled(idle and problem is None)
        self.cancel_button.setEnabled(not idle)
        done = idle and self.result is not None
        self.report_button.setEnabled(done)
        self.worst_button.setEnabled(done)
        if quiet or not idle:
            return
        if problem:
            self.say(problem, "warning")
        elif self.status.styleSheet() == _COLORS["warning"]:
            self.say("Ready.")

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Start the batch in a thread worker (does nothing but warn while inputs are invalid or a run is on)."""
        from napari_segloss.batch import run_batch

        problem = "A batch is already running." if self.worker is not None else self.problem()
        if problem:
            self.say(problem, "warning", notify=True)
            return
        names = [str(info.path) for info in self.checklist.checked()]
        kwargs = {
            "device": self.device_combo.currentData(),
            "threshold": self.threshold_spin.value(),
            "workers": self.workers_spin.value(),
            "overwrite": self.overwrite_box.isChecked(),
            "resample": self.resample_box.isChecked(),
        }
        source, out = Path(self.input_edit.text().strip()).expanduser(), Path(self.output_edit.text().strip()).expanduser()
        self._case_generation += 1  # the cases of the previous result are stale now
        self._resample = kwargs["resample"]  # the scale rule of this run, said when it ends
        self.progress_bar.setValue(0)
        self.worker = Job(lambda report, cancelled: run_batch(source, names, out, progress=report, cancel=cancelled,
                                                              **kwargs),
                          description=f"Batch: {len(names)} checkpoint(s) on {source.name}", reported=self._on_progress,
                          returned=self._on_returned, errored=self._on_errored, finished=self._on_finished)
        self.say(f"Starting {len(names)} checkpoint(s) on {source.name}…")
        self.validate()

    def cancel(self) -> None:
        """Ask the running batch to stop after its current batch of images."""
        if self.worker is not None:
            self.worker.cancel()
            self.say("Cancelling…")

    def _on_progress(self, progress: Any) -> None:
        self.progress_bar.setValue(round(progress.fraction * _PROGRESS_STEPS))
        if self.worker is not None:
            self.worker.set_fraction(progress.fraction)
        failed = f", {progress.failed} failed" if progress.failed else ""
        self.say(f"{progress.done} / {progress.total} image(s){failed} · {progress.elapsed_s:.0f} s · "
                 f"{format_eta(progress.eta_s)}")

    def _on_returned(self, result: Any) -> None:
        self.result = result
        self._drop_report()
        self.progress_bar.setValue(_PROGRESS_STEPS)
        level = "warning" if result.failed else "info"
        failed = f", {result.failed} failed (see manifest.csv)" if result.failed else ""
        self.say(f"Done: {len(result.items)} image(s) x {len(result.checkpoints)} checkpoint(s) in "
                 f"{result.seconds:.1f} s{failed}. Wrote {result.out}. {batch_scale_text(self._resample)}",
                 level, notify=True)
        if self.auto_load_box.isChecked():
            self.load_worst(self.worst_spin.value())

    def _on_errored(self, exc: Exception) -> None:
        from napari_segloss.batch import BatchCancelled

        if isinstance(exc, BatchCancelled):
            self.say("Cancelled: nothing was written.", "warning", notify=True)
        else:
            self.say(f"Batch failed: {exc}", "error", notify=True)

    def _on_finished(self) -> None:
        self.worker = None
        self.validate(quiet=True)

    # ------------------------------------------------------------------ after a run
    def report_path(self) -> Path:
        """report.html of the last run, extracted from the result ZIP into a temporary folder."""
        if self.result is None:
            raise RuntimeError("no batch has finished yet")
        if self._report_dir is None:
            self._report_dir = Path(tempfile.mkdtemp(prefix="napari-segloss-report-"))
        target = self._report_dir / f"{self.result.out.stem}_report.html"
        if not target.exists():
            with zipfile.ZipFile(self.result.out) as archive:
                target.write_bytes(archive.read("report.html"))
        return target

    def open_report(self) -> None:
        """Show the last run's report in the default web browser."""
        try:
            path = self.report_path()
        except (OSError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:
            self.say(f"Cannot open the report: {exc}", "error", notify=True)
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def load_worst(self, n: int) -> None:
        """Add the ``n`` results with the lowest Dice to the viewer (replacing earlier ones): the image
        (with its spacing), the ground truth, and the prediction's difference map and outline."""
        from napari_segloss.batch import load_case

        result = self.result  # the worker reads this one, whatever self.result becomes meanwhile
        if result is None:
            return
        cases = result.worst(n)
        if not cases:
            self.say("No result with a ground truth to rank by Dice.", "warning", notify=True)
            return
        self._case_generation += 1
        generation = self._case_generation
        handlers = {
            "returned": lambda loaded: self._show_cases(loaded, generation, result.out),
            "errored": lambda exc: self.say(f"Cannot load the cases: {exc}", "error", notify=True)
            if generation == self._case_generation else None,
        }
        worker = create_worker(lambda: [load_case(result, case) for case in cases], _start_thread=False,
                               _connect=handlers)
        self._case_worker = worker
        worker.start()

    def _show_cases(self, loaded: list[Any], generation: int, batch: Path) -> None:
        """Show the cases loaded from the result ZIP ``batch``, unless a later load or run (``generation``)
        made them stale."""
        from napari_segloss.overlays import contour_labels, difference_map

        if generation != self._case_generation:
            return
        self.remove_cases()
        for data in loaded:
            case, sample = data.case, data.sample
            name = f"{case.item}{_layers.SEPARATOR}{case.checkpoint} (Dice {case.dice:.3f})"
            image = Image(sample.image, name=_layers.free_name(self.viewer, name), rgb=sample.rgb,
                          scale=sample.spacing, metadata={BATCH_TAG: {"item": case.item, "checkpoint": case.checkpoint}})
            self.viewer.layers.append(image)
            has_truth = sample.truth is not None
            results = {"prediction": data.prediction, "contour": contour_labels(data.prediction)}
            if has_truth:
                results["difference"] = difference_map(data.prediction, sample.truth)
            for role, array in results.items():
                _layers.upsert(self.viewer, image, checkpoint=case.checkpoint, role=role,
                               name=_layers.layer_name(name, None, role), data=array, has_truth=has_truth,
                               run={"batch": str(batch), "dice": case.dice})
            image.visible = data is loaded[-1]
            for layer in _layers.tagged(self.viewer, _layers.source_key(image)):
                layer.visible = layer.visible and image.visible
        self.say(f"Loaded {len(loaded)} worst case(s); the last one is shown.")

    def case_layers(self) -> list[Any]:
        """The image layers of the loaded worst cases."""
        return [layer for layer in self.viewer.layers if BATCH_TAG in layer.metadata]

    def remove_cases(self) -> None:
        """Remove the loaded worst cases and their result layers."""
        for image in self.case_layers():
            _layers.remove(self.viewer, [*_layers.tagged(self.viewer, _layers.source_key(image)), image])

    def _drop_report(self) -> None:
        if self._report_dir is not None:
            shutil.rmtree(self._report_dir, ignore_errors=True)
            self._report_dir = None

    def teardown(self) -> None:
        """Stop a running batch, void a load in flight and remove the extracted report (plain Python:
        safe after Qt deleted the tab; the widget's Lifetime calls it)."""
        if self.worker is not None:
            self.worker.detach()
        self._case_generation += 1
        self._drop_report()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Tear down when Qt closes the tab."""
        self.teardown()
        super().closeEvent(event)
