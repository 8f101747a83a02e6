"""Failure rates with Wilson score intervals (good near 0 and 1, unlike the normal interval)."""

from __future__ import annotations

import math
from statistics import NormalDist

from api_schemas.analysis import CONFIDENCE, Rate

Z = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)


def wilson(failures: int, runs: int) -> Rate:
    """``failures`` out of ``runs`` with its 95 % Wilson score interval; [0, 1] without runs."""
    if runs == 0:
        return Rate(failures=0, runs=0, rate=None, low=0.0, high=1.0)
    p = failures / runs
    denominator = 1 + Z**2 / runs
    centre = (p + Z**2 / (2 * runs)) / denominator
    half = Z * math.sqrt(p * (1 - p) / runs + Z**2 / (4 * runs**2)) / denominator
    # Rounding can push an end a hair past the estimate at p = 0 or 1.
    return Rate(
        failures=failures,
        runs=runs,
        rate=p,
        low=max(0.0, min(p, centre - half)),
        high=min(1.0, max(p, centre + half)),
    )
