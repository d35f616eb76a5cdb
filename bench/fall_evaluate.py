"""Score the shipped fall model on real trial sets that live outside the repository.

The suite tests the evaluation code on synthetic trials it makes itself; the real sets
(FallAllD, UMAFall, SmartFallMM, SPSW: see the data notes that come with them) are never
committed, so scoring them is a benchmark that takes their paths as arguments:

    python bench/fall_evaluate.py ../shared/data/fallalld_wrist_50hz.npz ../shared/data/umafall_wrist.npz

With no arguments it scores every ``*.npz`` trial set in ``../shared/data/`` when that
folder exists beside the clone. Each set prints its per-activity table; the last line is
``fall_sets=<n> sensitivity_min=<a> specificity_min=<b>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.detect import fall_evaluate

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help="trial-set files (.npz)")
    parser.add_argument("--window-s", type=float, default=1.0, help="streaming window length")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.sets] or sorted(DEFAULT_DIR.glob("*.npz"))
    if not paths:
        print(f"no trial sets given and none found in {DEFAULT_DIR}", file=sys.stderr)
        return 2
    sens: list[float] = []
    spec: list[float] = []
    for path in paths:
        try:
            report = fall_evaluate.evaluate(path, args.window_s)
        except (OSError, ValueError, KeyError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
        for line in report.lines():
            print(line)
        if report.n_falls:
            sens.append(report.sensitivity)
        if report.n_adl:
            spec.append(report.specificity)
        print()
    print(
        f"fall_sets={len(paths)} sensitivity_min={min(sens, default=float('nan')):.3f} "
        f"specificity_min={min(spec, default=float('nan')):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
