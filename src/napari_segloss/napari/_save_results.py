"""The Loss explorer's *Save results…* button: the current or compared checkpoints' masks, saved
in the input's format (:func:`napari_segloss.io.results.save_results`: DICOM SEG for a DICOM
series, NIfTI with the source affine for NIfTI, else PNG/TIFF; a comparison on a DICOM series
also gets one SEG with a segment per checkpoint), never replacing a file unasked.

:func:`results_to_save` and :func:`save` are Qt-free; :class:`SaveResultsButton` only adds the
folder dialog and the replace question.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QFileDialog, QMessageBox, QPushButton, QWidget

from napari_segloss.io.results import SegmentResult, default_format, planned_files, save_results

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_segloss.napari._results import RunResult
    from napari_segloss.napari._widget import LossExplorerWidget


def segment_result(result: RunResult) -> SegmentResult:
    """A widget result at its current threshold as what the writers take."""
    card = result.card
    return SegmentResult(card.name, card.loss, result.derived.mask.astype(bool), result.probability,
                         card.weights_sha256, result.derived.threshold)


def results_to_save(widget: LossExplorerWidget) -> tuple[Image | None, list[RunResult]]:
    """The selected image layer and what to save of it: the checkpoints of its last comparison
    when the Compare tab is shown, else the Run tab's checkpoint (empty when not run)."""
    from napari_segloss.napari import _layers

    image = widget.inputs.image()
    if image is None:
        return None, []
    key = _layers.source_key(image)
    if widget.current_page() is widget.compare_tab and key in widget.compare_sets:
        names = widget.compare_sets[key]
        return image, [widget.results[(key, n)] for n in names if (key, n) in widget.results]
    current = widget.current_result()
    return image, [] if current is None else [current]


def save(image: Image, results: list[RunResult], folder: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Save ``results`` of ``image`` into ``folder`` (see :func:`napari_segloss.io.results.save_results`)."""
    metadata: dict[str, Any] = dict(image.metadata)
    return save_results(folder, metadata, tuple(float(s) for s in results[0].spacing),
                        [segment_result(r) for r in results], combined=True, where=image.name, overwrite=overwrite)


class SaveResultsButton(QPushButton):
    """*Save results…*: asks for a folder, asks before replacing files, reports in the status line."""

    def __init__(self, widget: LossExplorerWidget, parent: QWidget | None = None) -> None:
        super().__init__("Save results…", parent)
        self.widget = widget
        self.setToolTip("Save the masks of the current checkpoint (Run tab) or of the compared checkpoints "
                        "(Compare tab), in the input's format: DICOM SEG for DICOM, NIfTI for NIfTI, else PNG/TIFF")
        self.clicked.connect(self.ask_and_save)

    def ask_and_save(self) -> list[Path]:
        """The button's action; returns the written files (none when cancelled or refused)."""
        image, results = results_to_save(self.widget)
        if image is None or not results:
            self.widget.say("Nothing to save yet: run a checkpoint (or a comparison) on the selected image.", "warning")
            return []
        fmt = default_format(image.metadata)
        folder = QFileDialog.getExistingDirectory(self, f"Save {len(results)} result(s) as {fmt} into folder")
        if not folder:
            return []
        planned = planned_files(Path(folder), fmt, [segment_result(r) for r in results], combined=True)
        existing = [p for p in planned if p.exists()]
        if existing:
            answer = QMessageBox.question(
                self, "Replace results?",
                f"{len(existing)} file(s) already exist in {folder} (first: {existing[0].name}). Replace them?")
            if answer != QMessageBox.StandardButton.Yes:
                self.widget.say("Nothing saved: the existing files were kept.", "warning")
                return []
        try:
            written = save(image, results, folder, overwrite=bool(existing))
        except (ValueError, OSError) as exc:  # a format that does not fit, a file that appeared meanwhile
            self.widget.say(f"Nothing saved: {exc}", "error")
            return []
        both = f" and their comparison, {written[-1].name}," if len(written) > len(results) else ""
        self.widget.say(f"Saved {len(results)} result(s) as {fmt}{both} to {folder}.")
        return written
