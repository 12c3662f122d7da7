"""What the widget says about the scale a checkpoint saw the image at: after a run, how each
scan was brought to the training scale (:func:`scale_text`, shown in the status line, with how
to switch it off; :func:`batch_scale_text` for the Batch tab); with the switch off, a hint when
the layer's pixels are far from the checkpoint's (:func:`pixel_size_hint`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from napari_segloss.inference import pixel_size_ratio
from napari_segloss.napari._results import RunResult
from napari_segloss.spacing import layer_spacing


#: what the status line adds after a run that brought the scan to the training scale
SWITCH_OFF = "untick 'Bring the scan to the checkpoint's training scale' to run on the scan's own grid"


def scale_text(results: Sequence[RunResult]) -> str:
    """How the runs saw the image (``Prediction.metadata["scaling_note"]``), for the status line:
    ``"Scale: <note>."`` when every checkpoint was scaled alike, else one ``name: note`` per
    checkpoint; with the way to switch it off when it was on. "" without results."""
    notes: dict[str, list[str]] = {}
    for result in results:
        notes.setdefault(result.run.get("scaling_note", ""), []).append(result.checkpoint)
    notes.pop("", None)
    if not notes:
        return ""
    if len(notes) == 1:
        text = f"Scale: {next(iter(notes))}"
    else:
        text = "Scale: " + "; ".join(f"{', '.join(names)}: {note}" for note, names in notes.items())
    scaled = any(result.run.get("scaling", "none") != "none" for result in results)
    return f"{text}{f' ({SWITCH_OFF})' if scaled else ''}."


def batch_scale_text(resample: bool) -> str:
    """The scale rule a batch ran with (its per-image choice follows each file's pixel size), for
    the Batch tab's status line, with how to switch it off when it was on."""
    if not resample:
        return "Scale: each image ran on the file's own grid."
    return ("Scale: each image ran at the checkpoint's training pixel size where the file records one (DICOM, "
            "NIfTI, TIFF), else at its training image size (untick 'Bring each scan to the checkpoint's training "
            "scale' to run on the files' own grids).")


def pixel_size_hint(scale: tuple[float, ...], card_spacing: tuple[float, ...] | None) -> str:
    """A suggestion to resample when the layer's pixels are far from the checkpoint's (else "").

    A layer scale of 1 in-plane means "pixel size unknown" (PNG, JPG) and gives no hint; so does
    a ratio within [0.75, 4/3].
    """
    if layer_spacing(scale) is None:
        return ""
    ratio = pixel_size_ratio(scale, card_spacing)
    if ratio is None or 0.75 <= ratio <= 4.0 / 3.0:
        return ""
    card_mm = math.sqrt(card_spacing[-2] * card_spacing[-1])  # type: ignore[index]
    image_mm = ratio * card_mm
    return (f"The image's pixels ({image_mm:.2g} mm) are {'finer' if ratio < 1 else 'coarser'} than the "
            f"checkpoint's training pixels ({card_mm:.2g} mm): tick 'Bring the scan to the checkpoint's training scale' "
            "to run it at its own scale.")
