"""The verdict's measured error rates and power: the table in the README, reproduced.

Draws ``--studies`` simulated studies per truth and seed count with the calibration tests'
simulator, decides them with the code that decides real studies, and prints a Markdown table.

    python bench/verdict_calibration.py --studies 4000
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from api_schemas.analysis import VerdictOutcome
from tests.service.analysis import simulate
from tests.service.analysis import test_calibration as cal

WRONG = {
    "at_margin": ("Δ_RAdam = Γ = δ", (VerdictOutcome.REMOVES, VerdictOutcome.NEEDS)),
    "gap_at_margin": (
        "Δ_RAdam = 0, Γ = δ",
        (VerdictOutcome.REMOVES, VerdictOutcome.NO_WARMUP_BUT_WORSE),
    ),
    "ties": ("near-tied best cells, Δ_RAdam = δ", (VerdictOutcome.REMOVES, VerdictOutcome.NEEDS)),
    "worse": ("RAdam 0.5 worse everywhere", (VerdictOutcome.REMOVES,)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 6, 8, 16])
    args = parser.parse_args()
    cal.STUDIES = args.studies
    truths = cal.truths()
    rare, rare_fail = cal.rare_failure(0.1)
    print(f"δ = {cal.DELTA}, {args.studies} studies per cell; rates of each outcome\n")
    print("| truth | seeds | " + " | ".join(o.value for o in VerdictOutcome) + " |")
    print("|---|---|" + "---|" * len(VerdictOutcome))
    rows: list[tuple[str, dict[str, object]]] = [
        (WRONG[name][0], {"means": truths[name]}) for name in WRONG
    ]
    rows += [
        ("null: Δ_RAdam = Γ = 0", {"means": simulate.truth(1.0, 0.0)}),
        ("effect: Δ_RAdam = δ + 0.3", {"means": simulate.truth(1.0, cal.DELTA + 0.3)}),
        ("RAdam's best w=0 cell fails 1 in 10", {"means": rare, "fail": rare_fail}),
    ]
    for label, kwargs in rows:
        for seeds in args.seeds:
            means = kwargs["means"]
            assert isinstance(means, np.ndarray)
            fail = kwargs.get("fail", 0.0)
            assert isinstance(fail, float | np.ndarray)
            counts: Counter[VerdictOutcome] = cal.decide(
                cal.estimates(means, seeds, seed=seeds, fail=fail)
            )
            cells = " | ".join(f"{counts[o] / args.studies:.1%}" for o in VerdictOutcome)
            print(f"| {label} | {seeds} | {cells} |")


if __name__ == "__main__":
    main()
