"""Write ``docs/results.md`` and its figures from the checkpoints in ``weights/``.

Usage: ``python scripts/make_results.py [--weights weights] [--out docs] [--data DIR]
[--seed-results FILE]``. Real-data checkpoints are re-run on fold 4 of their labelled folder (and
on the synthetic test set, as a second column); synthetic ones are re-run on the fixed synthetic test set for the paired comparisons and its 1-D loss landscape
(a few minutes on CPU); the calibration columns and reliability panels come from the cards (run
``scripts/make_calibration.py`` first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_segloss.paths import shared_data_dir, weights_dir
from napari_segloss.train.results import write_report


def main(argv: list[str] | None = None) -> int:
    """Generate the report; prints its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=weights_dir(), help="checkpoint folder (default weights/)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output folder (default docs/)")
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "figshare",
                        help="the real-data cards' labelled folder (default shared/data/figshare)")
    parser.add_argument("--seed-results", type=Path, default=shared_data_dir().parent / "seed_results.md",
                        help="the seed tool's published per-loss table (default shared/seed_results.md)")
    args = parser.parse_args(argv)
    print(write_report(args.weights, args.out, data=args.data, seed_results=args.seed_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
