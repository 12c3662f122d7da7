"""The ``napari-segloss batch`` command's front end: a progress bar with ETA and a short summary.

Exit status: 0 when every image was processed, 1 when the result ZIP was written but some images
failed (listed in its manifest.csv) or a requested checkpoint ran on no image; input, output,
checkpoint and option errors raise for the CLI (:data:`napari_segloss.cli.EXIT_STATUSES`).
"""

from __future__ import annotations

import argparse
import sys

from napari_segloss import metrics
from napari_segloss.outputs import printable
from napari_segloss.batch.runner import BatchProgress, run_batch


def run_command(args: argparse.Namespace) -> int:
    """Run ``run_batch`` from parsed ``napari-segloss batch`` arguments; returns the exit status."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="image", file=sys.stderr, dynamic_ncols=True, disable=args.quiet)

    def progress(p: BatchProgress) -> None:
        bar.total = p.total
        bar.update(p.done - bar.n)
        bar.set_postfix_str(f"failed {p.failed}" + (f", {p.current}" if p.current else ""), refresh=True)

    try:
        result = run_batch(
            args.input,
            args.checkpoint or ["all"],
            args.out,
            device=args.device,
            threshold=args.threshold,
            workers=args.workers,
            scheduler=args.scheduler,
            overwrite=args.overwrite,
            resample=args.resample,
            progress=progress,
        )
    finally:
        bar.close()
    print(
        f"wrote {printable(str(result.out))}: {len(result.items)} image(s) x {len(result.checkpoints)} checkpoint(s) "
        f"in {result.seconds:.1f} s, {result.failed} failed"
    )
    for row in result.summary:
        dice = metrics.format_value("dice", row["dice_mean"])
        print(f"  {row['checkpoint']:<28} {row['loss']:<20} mean Dice {dice} over {row['dice_n']} image(s)")
    status = 0
    if result.failed:
        print(f"{result.failed} image(s) failed; see manifest.csv in {printable(str(result.out))}", file=sys.stderr)
        status = 1
    if result.idle:
        print(f"checkpoint(s) that ran on no image: {', '.join(result.idle)}; see manifest.csv", file=sys.stderr)
        status = 1
    return status
