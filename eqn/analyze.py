"""Analysis of a finished run: label correlations, per-class F1, intensity distributions, micro-emotion counts.

    python -m eqn.analyze <run dir> [<other run dir> ...]   # e.g. an EQN run and a baseline run

Writes into <run dir>/analysis/: correlation.csv + correlation.png (label x label Pearson correlation of
predicted test intensities), per_class_f1.png (+ .csv), intensity_distribution.png, micro_emotions.json
(eqn/figures.py draws them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eqn.figures import analyze_run


def main(argv: list[str] | None = None) -> None:
    import sys

    from eqn.cli import OneLineParser, one_line

    parser = OneLineParser(
        prog="python -m eqn.analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir")
    parser.add_argument("others", nargs="*", help="more run dirs (e.g. the baseline run) for the per-class F1 bars")
    args = parser.parse_args(argv)
    for d in [args.run_dir, *args.others]:
        if not (Path(d) / "metrics.json").is_file():
            sys.exit(f"eqn.analyze: {d}: no metrics.json here; pass finished run directories")
    with one_line("eqn.analyze", invalid=f"{args.run_dir}: unreadable run files"):  # e.g. metrics.json not JSON
        print(json.dumps(analyze_run(args.run_dir, args.others), indent=2))


if __name__ == "__main__":
    main()
