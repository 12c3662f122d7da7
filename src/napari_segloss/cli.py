"""The ``napari-segloss`` command: ``demo``, ``predict``, ``batch``, ``train``, ``data``.

Each sub-command's handler is a thin function here; the work lives in the core modules.
Heavy imports (torch, napari) happen inside the handlers so ``--help`` and ``--version`` are fast.

Every error is one line on stderr (``napari-segloss COMMAND: error: ...``) and one of the exit
statuses of :data:`EXIT_STATUSES`; a traceback is shown only with ``--debug`` or
``NAPARI_SEGLOSS_DEBUG=1``. SIGTERM stops a run like Ctrl-C (temporary files are removed).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from napari_segloss import __version__

#: exit status -> meaning (also printed by ``napari-segloss --help`` and listed in the README)
EXIT_STATUSES = {
    0: "success",
    1: "batch: the result ZIP was written but some images failed, or a checkpoint ran on no image",
    2: "bad arguments or options, or a bad NAPARI_SEGLOSS_* environment value",
    3: "an input is missing or cannot be read",
    4: "the output may not be written (it exists, is not a previous result, overlaps an input) "
       "or cannot be (permission denied, read-only or full disk)",
    5: "a checkpoint is missing or invalid",
    70: "internal error (a bug: please report it with the --debug traceback)",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM)",
}
DEBUG_ENV = "NAPARI_SEGLOSS_DEBUG"


class CLIError(Exception):
    """An error reported to the user as one line, with a non-zero exit ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds (and cleans up) like Ctrl-C."""


def _cmd_demo(args: argparse.Namespace) -> int:
    from napari_segloss.napari._demo import run_demo

    return run_demo(dims=args.dims, screenshot=args.screenshot)


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from napari_segloss.threads import configured_threads
    from napari_segloss.train import Recipe, train

    try:
        loss_args = json.loads(args.loss_args) if args.loss_args else {}
    except json.JSONDecodeError as exc:
        raise CLIError(f"--loss-args is not valid JSON: {exc}") from None
    if not isinstance(loss_args, dict):
        raise CLIError("--loss-args must be a JSON object, e.g. '{\"gamma\": 2}'")
    chosen = {k: getattr(args, k) for k in ("epochs", "patch", "batch", "seed") if getattr(args, k) is not None}
    chosen["threads"] = args.threads or configured_threads() or 0  # the variable was checked by main
    recipe = Recipe(**chosen)
    try:
        result = train(args.loss, out=args.out, loss_args=loss_args, data=args.data, recipe=recipe,
                       device=args.device, name=args.name, resume=args.resume)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    dice = result.card.get("test_metrics", {}).get("dice")
    from napari_segloss.metrics import format_value

    print(f"saved {result.path}" + (f" (test Dice {format_value('dice', dice)})" if isinstance(dice, float) else ""))
    return 0


def _cmd_data_figshare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_segloss.data.convert import ConversionError, convert_figshare

    with tqdm(unit="slice", disable=not sys.stderr.isatty(), leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            result = convert_figshare(args.src, args.out, size=args.size, folds=args.folds, table=args.table,
                                      overwrite=args.overwrite, progress=progress)
        except ConversionError as exc:
            raise CLIError(str(exc), status=3) from None
    print("\n".join(result.summary()))
    return 0


def _check_environment() -> None:
    """Refuse a bad ``NAPARI_SEGLOSS_*`` value before any work (status 2; the message names it)."""
    from napari_segloss.backends import configured_backend
    from napari_segloss.checkpoints.loading import cache_limit_bytes
    from napari_segloss.threads import configured_threads

    try:
        configured_threads()
        cache_limit_bytes()
        configured_backend()
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _apply_threads(threads: int) -> None:
    """Set torch's CPU threads from ``--threads`` (0: ``NAPARI_SEGLOSS_THREADS``, checked by
    :func:`_check_environment`, or torch's default)."""
    from napari_segloss.threads import apply_thread_policy

    apply_thread_policy(threads)


def _cmd_predict(args: argparse.Namespace) -> int:
    from napari_segloss.predict_cli import run

    _apply_threads(args.threads)
    return run(args)


def _cmd_batch(args: argparse.Namespace) -> int:
    from napari_segloss.batch.console import run_command

    _apply_threads(args.threads)
    return run_command(args)


def _status(exc: BaseException) -> int | None:
    """The exit status of a known error type (see :data:`EXIT_STATUSES`), None for a bug."""
    from napari_segloss.batch.errors import BatchCheckpointError, BatchError, BatchInputError
    from napari_segloss.checkpoints import CheckpointError
    from napari_segloss.io import ScanReadError
    from napari_segloss.outputs import OutputError
    from napari_segloss.predict_cli import PredictError

    for types, status in (
        ((CLIError,), getattr(exc, "status", 2)),
        ((OutputError,), 4),
        ((ScanReadError, BatchInputError), 3),
        ((CheckpointError, BatchCheckpointError), 5),
        ((PredictError, BatchError), 2),
    ):
        if isinstance(exc, types):
            return status
    return None


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises :class:`Terminated`."""
    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated()

    try:
        previous: Callable | int | None = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a whole number >= 1, got '0'")
    return value


RESAMPLE_HELP = ("bring each scan to the checkpoint's training scale and map the result back (default): a known "
                 "pixel size (DICOM, NIfTI, TIFF with resolution) is resampled to the card's, an unknown one "
                 "(PNG/JPG) is resized to the card's training image size; --no-resample runs on the file's grid")
THREADS_HELP = "torch CPU threads (default 0: $NAPARI_SEGLOSS_THREADS if set, else one per core)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (status 2); sub-command parsers are of this class too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _epilog() -> str:
    lines = [f"  {status:>3}  {meaning}" for status, meaning in EXIT_STATUSES.items()]
    return "exit status:\n" + "\n".join(lines) + f"\n\n--debug or {DEBUG_ENV}=1 shows the traceback of an error."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = _Parser(
        prog="napari-segloss",
        description="See what the choice of training loss does to a segmentation.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-segloss {__version__}")
    debug_help = f"show tracebacks of errors (also {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # accepted after the sub-command too; SUPPRESS keeps a --debug given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", parents=[common], help="open napari with the synthetic sample scan and the Loss explorer")
    demo.add_argument("--screenshot", metavar="PATH", help="save a screenshot of the whole window and exit")
    demo.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D slice or 3D volume sample")
    demo.set_defaults(handler=_cmd_demo)

    pr = sub.add_parser("predict", parents=[common], help="segment one image or volume with one or all checkpoints",
                        description="Write prediction, heatmap, contour and difference images and metrics.csv/json.")
    pr.add_argument("image", metavar="IMAGE", help="PNG/JPG/TIFF/NIfTI/DICOM file or DICOM series folder")
    pr.add_argument("--mask", metavar="GT", help="ground-truth mask of the same shape: metrics and a difference map")
    pr.add_argument("--checkpoint", metavar="NAME|all", help="checkpoint name or path, or 'all' (default: the default one)")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps")
    pr.add_argument("--threshold", type=_threshold, default=0.5, help="probability threshold of the mask")
    pr.add_argument("--out", metavar="DIR", help="output folder (default: ./<image name>_segloss)")
    pr.add_argument("--overwrite", action="store_true", help="replace a previous result of this command in --out (nothing else)")
    pr.add_argument("--resample", action=argparse.BooleanOptionalAction, default=True, help=RESAMPLE_HELP)
    from napari_segloss.io.results import RESULT_FORMATS  # numpy only: --help stays fast

    pr.add_argument("--format", choices=RESULT_FORMATS, default="png",
                    help="the prediction's file: png (PNG 2D, TIFF 3D; default), nifti (.nii.gz with the input's "
                    "geometry) or dicom-seg (a DICOM SEG referencing the input series; DICOM inputs only; with "
                    "several checkpoints also comparison.seg.dcm, one segment per checkpoint)")
    pr.add_argument("--probability-seg", action="store_true",
                    help="with --format dicom-seg: also each checkpoint's probabilities as a FRACTIONAL DICOM SEG "
                    "(probability.seg.dcm)")
    pr.add_argument("--threads", type=_non_negative, default=0, metavar="N", help=THREADS_HELP)
    pr.set_defaults(handler=_cmd_predict)

    ba = sub.add_parser("batch", parents=[common], help="run checkpoints over a folder or ZIP of images (and masks): one result ZIP",
                        description="Pairs x.png + x_mask.png (or images/ + masks/); writes per image x checkpoint "
                        "masks and overlays, metrics.csv, summary.csv, manifest.csv, report.html and report.pdf into one ZIP. "
                        "Exit status: 0 all done, 1 some images failed (see manifest.csv) or a checkpoint ran on "
                        "no image; the others: napari-segloss --help.")
    ba.add_argument("input", metavar="INPUT", help="folder or ZIP of PNG/JPG/TIFF/DICOM images and masks")
    ba.add_argument("--checkpoint", action="append", metavar="NAME|all",
                    help="checkpoint name or path, or 'all'; repeatable (default: all)")
    ba.add_argument("--out", required=True, metavar="RESULTS.zip", help="result ZIP (written atomically)")
    ba.add_argument("--workers", type=int, default=1, help="local threads processing batches")
    ba.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps")
    ba.add_argument("--threshold", type=_threshold, default=0.5, help="probability threshold of the masks")
    ba.add_argument("--overwrite", action="store_true", help="replace a previous result ZIP of this command (nothing else)")
    ba.add_argument("--resample", action=argparse.BooleanOptionalAction, default=True, help=RESAMPLE_HELP)
    ba.add_argument("--threads", type=_non_negative, default=0, metavar="N", help=THREADS_HELP)
    ba.add_argument("--scheduler", metavar="ADDRESS",
                    help="dask.distributed scheduler (tcp://host:8786); workers need the checkpoint files")
    ba.add_argument("--quiet", action="store_true", help="no progress bar")
    ba.set_defaults(handler=_cmd_batch)

    tr = sub.add_parser("train", parents=[common], help="train a checkpoint with one loss (the bundled checkpoints' recipe)")
    tr.add_argument("--loss", required=True, help="loss name (see napari_segloss.losses.available())")
    tr.add_argument("--loss-args", metavar="JSON", help="loss hyper-parameters as a JSON object")
    tr.add_argument("--data", required=True, metavar="DIR|synthetic",
                    help="'synthetic' or a folder of x.png + x_mask.png pairs (or images/ + masks/)")
    tr.add_argument("--epochs", type=int, help="passes over the training slices (default: the bundled recipe's)")
    tr.add_argument("--patch", type=int, help="training crop size in pixels, a multiple of 32 (default: the recipe's)")
    tr.add_argument("--batch", type=int, help="slices per step (default: the recipe's)")
    tr.add_argument("--seed", type=int, help="seed of initialisation, batch order and augmentation (default 0)")
    tr.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps")
    tr.add_argument("--out", required=True, metavar="DIR", help="folder for <name>.safetensors + <name>.json")
    tr.add_argument("--name", help="checkpoint name (default: the loss name)")
    tr.add_argument("--resume", action="store_true", help="continue from <out>/<name>.resume.pt")
    tr.add_argument("--threads", type=_non_negative, default=0, metavar="N", help=THREADS_HELP)
    tr.set_defaults(handler=_cmd_train)

    da = sub.add_parser("data", parents=[common], help="convert a public dataset into the labelled-folder layout training reads")
    da_sub = da.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    fs = da_sub.add_parser("figshare", parents=[common], help="Cheng's figshare brain tumour dataset (.mat release or images/ + masks/ PNGs)",
                           description="Writes images/, masks/ (8-bit PNG), labels.csv (fold, tumour type, patient, "
                           "size, pixel size) and dataset.json (licence, citation) into --out.")
    fs.add_argument("src", metavar="SRC", help="folder of the figshare N.mat files, or of images/N.png + masks/N_mask.png")
    fs.add_argument("--out", required=True, metavar="DIR", help="output folder (written atomically)")
    fs.add_argument("--size", type=_positive, metavar="N",
                    help="box-average every slice to N x N (256: the 512x512 originals at 0.98 mm); default: keep sizes")
    fs.add_argument("--folds", metavar="cvind.mat", help="the record's fold file (default: a cvind*.mat found in SRC)")
    fs.add_argument("--table", metavar="CSV", help="PNG sources: folds, tumour types and patient ids per slice")
    fs.add_argument("--overwrite", action="store_true", help="replace a previous result of this command in --out (nothing else)")
    fs.set_defaults(handler=_cmd_data_figshare)

    return parser


def _say(command: str, text: str) -> None:
    from napari_segloss.outputs import printable

    line = " ".join(printable(text).split())  # one line, whatever the message holds
    print(f"napari-segloss {command}: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-segloss`` console script; returns an :data:`EXIT_STATUSES` key."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        with _sigterm_as_interrupt():
            _check_environment()
            return int(args.handler(args) or 0)
    except Terminated:
        _say(args.command, "terminated")
        return 143
    except KeyboardInterrupt:
        _say(args.command, "interrupted")
        return 130
    except BaseException as exc:  # noqa: BLE001 - one line, native panics included; --debug: the traceback
        if debug or isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        status = _status(exc)
        if status is None:
            _say(args.command, f"internal error: {type(exc).__name__}: {exc} (--debug shows the traceback)")
            return 70
        _say(args.command, f"error: {exc}")
        return status


if __name__ == "__main__":
    sys.exit(main())
