"""Write ``docs/results.md`` and its figures from the checkpoints in ``weights/``.

Usage: ``python scripts/make_results.py [--weights weights] [--out docs]``. Every checkpoint is
re-run on the fixed synthetic test set for the paired comparisons and its 1-D loss landscape
(a few minutes on CPU); the calibration columns and reliability panels come from the cards (run
``scripts/make_calibration.py`` first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_segloss.paths import weights_dir
from napari_segloss.train.results import write_report


def main(argv: list[str] | None = None) -> int:
    """Generate the report; prints its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=weights_dir(), help="checkpoint folder (default weights/)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output folder (default docs/)")
    args = parser.parse_args(argv)
    print(write_report(args.weights, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
