"""Confidence bounds for gaps between best cells, valid whatever the ties. Pure numpy.

Every loss estimand of the analysis is a *gap* between the best of one set of cells and the
best of another, measured on the same (paired) seeds::

    gap = min_i μ(x_i) - min_j μ(y_j)

Adam's warmup regret takes x = Adam's cells at w=0 and y = all of Adam's cells; Γ takes x =
RAdam's cells at w=0 and y = all of Adam's; one lr's warmup effect takes x = that lr at w=0
and y = that lr at every warmup.

With D_ij = μ(x_i) - μ(y_j) the gap is min_i max_j D_ij. Each D_ij is a paired difference
over the seeds with a Student t interval. Let i*, j* be the (unknown) best cells:

- **upper bound** min_i max_j U_ij: it is at least the gap whenever U_ij* ≥ D_ij* for every i,
  because D_ij* ≥ D_i*j* = gap. Only the column of the true best j* must hold, jointly over
  its len(x) intervals: Bonferroni over x.
- **lower bound** max_j min_i L_ij: at most the gap whenever L_i*j ≤ D_i*j for every j,
  because D_i*j ≤ gap. Bonferroni over y.

Nothing is selected from the data, so neither the winner's curse nor near-tied cells can make
the interval too narrow: under normal seed noise each bound errs in at most (1 - level) / 2 of
studies, at any number of seeds. The price is the Bonferroni factor, and the t quantile at
few seeds. Failures (a seed at the chance loss) are not normal: their measured effect on the
error rates is in ``tests/service/analysis/test_calibration.py`` and the README.

The point estimate is the plug-in min_i x̄_i - min_j ȳ_j, which always lies inside the
interval. With near-tied cells it is biased upward (the minimum of noisy means is too low,
and y has more cells than x), i.e. towards "needs warmup", never towards REMOVES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import norm, t

from api_schemas.analysis import CONFIDENCE, Interval

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

POWER = 0.8
"""The power ``seeds_for`` aims at."""


@dataclass(frozen=True)
class Gap:
    """Estimates and bounds of one gap for every batch index (arrays of the batch's shape).

    NaN where a side has no cell run, or there are fewer than two seeds (bounds only).
    """

    estimate: Floats
    low: Floats
    high: Floats
    seeds: int

    def arm(self, index: int) -> Gap:
        """The slice of a per-arm gap (arms on the last axis) at one arm."""
        return Gap(
            self.estimate[..., index], self.low[..., index], self.high[..., index], self.seeds
        )

    def at(self, index: tuple[int, ...] = ()) -> Interval | None:
        """The gap at one batch index as an Interval; None where it cannot be estimated."""
        values = (float(self.estimate[index]), float(self.low[index]), float(self.high[index]))
        if not all(math.isfinite(v) for v in values):
            return None
        return Interval(estimate=values[0], low=values[1], high=values[2])


def _critical(seeds: int, tests: npt.NDArray[np.int64], level: float) -> Floats:
    """One-sided Student t quantile at (1 - level) / 2 split over ``tests`` (Bonferroni)."""
    tail = (1 - level) / 2 / np.maximum(tests, 1)
    return np.asarray(t.ppf(1 - tail, seeds - 1), dtype=np.float64)


def gap(x: Floats, y: Floats, level: float = CONFIDENCE) -> Gap:
    """The gap min_i μ(x_i) - min_j μ(y_j) with its ``level`` interval (see the module doc).

    ``x`` is (..., nx, seeds) and ``y`` (..., ny, seeds), the same seeds in the same order; a
    cell not run is NaN in every seed and is left out of both minima.
    """
    seeds = x.shape[-1]
    x_ok = np.asarray(~np.isnan(x).any(axis=-1), dtype=bool)  # (..., nx)
    y_ok = np.asarray(~np.isnan(y).any(axis=-1), dtype=bool)
    d = x[..., :, None, :] - y[..., None, :, :]  # (..., nx, ny, seeds)
    with np.errstate(invalid="ignore"):
        mean = d.mean(axis=-1)
        se = d.std(axis=-1, ddof=1) / math.sqrt(seeds) if seeds > 1 else np.full_like(mean, np.nan)
    valid = x_ok[..., :, None] & y_ok[..., None, :]
    ok = x_ok.any(axis=-1) & y_ok.any(axis=-1)

    def min_max(values: Floats) -> Floats:
        """min over valid i of max over valid j."""
        inner = np.where(valid, values, -np.inf).max(axis=-1)
        return np.asarray(np.where(x_ok, inner, np.inf).min(axis=-1), dtype=np.float64)

    def max_min(values: Floats) -> Floats:
        """max over valid j of min over valid i."""
        inner = np.where(valid, values, np.inf).min(axis=-2)
        return np.asarray(np.where(y_ok, inner, -np.inf).max(axis=-1), dtype=np.float64)

    estimate = min_max(mean)
    if seeds < 2:
        nan = np.full(estimate.shape, np.nan)
        return Gap(np.where(ok, estimate, np.nan), nan, nan.copy(), seeds)
    upper_t = _critical(seeds, x_ok.sum(axis=-1), level)[..., None, None]
    lower_t = _critical(seeds, y_ok.sum(axis=-1), level)[..., None, None]
    high = min_max(mean + upper_t * se)
    low = max_min(mean - lower_t * se)
    return Gap(
        estimate=np.where(ok, estimate, np.nan),
        low=np.where(ok, low, np.nan),
        high=np.where(ok, high, np.nan),
        seeds=seeds,
    )


def seeds_for(interval: Interval, delta: float, seeds: int, most: int) -> int | None:
    """Seeds per trial at which a bound this far from δ excludes it with probability POWER.

    The bound's half-width on δ's side is read as t_R · s / sqrt(R); at n seeds the bound
    excludes δ with probability POWER when (t_n + z_POWER) · s / sqrt(n) ≤ |estimate - δ|.
    None when the estimate sits on δ or not even ``most`` seeds would do.
    """
    distance = abs(interval.estimate - delta)
    half = (
        interval.high - interval.estimate
        if interval.estimate < delta
        else interval.estimate - interval.low
    )
    if distance == 0 or seeds < 2:
        return None
    t_now = float(t.ppf(1 - (1 - CONFIDENCE) / 2, seeds - 1))
    spread = half * math.sqrt(seeds) / t_now  # s, with the Bonferroni factor folded in
    z = float(norm.ppf(POWER))
    for n in range(seeds + 1, most + 1):
        if (float(t.ppf(1 - (1 - CONFIDENCE) / 2, n - 1)) + z) * spread / math.sqrt(n) <= distance:
            return n
    return None


@dataclass(frozen=True)
class Difference:
    """Paired differences of failure rates, p(x) - p(y), with Newcombe's interval (arrays)."""

    x_rate: Floats
    y_rate: Floats
    estimate: Floats
    low: Floats
    high: Floats


def _wilson(successes: Floats, n: int, z: float) -> tuple[Floats, Floats]:
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return np.clip(centre - half, 0, p), np.clip(centre + half, p, 1)


def failure_difference(fx: Bools, fy: Bools, level: float = CONFIDENCE) -> Difference:
    """p(x fails) - p(y fails) from paired seeds, ``fx`` and ``fy`` (..., seeds).

    Newcombe's hybrid score interval for paired proportions (his method 10, Stat. Med. 1998):
    Wilson intervals of both rates, combined through the correlation of the pairs. It keeps
    close to its level at a handful of seeds, where the normal interval does not.
    """
    n = fx.shape[-1]
    z = float(norm.ppf(1 - (1 - level) / 2))
    a = (fx & fy).sum(axis=-1).astype(np.float64)
    b = (fx & ~fy).sum(axis=-1).astype(np.float64)
    c = (~fx & fy).sum(axis=-1).astype(np.float64)
    d = n - a - b - c
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson(a + b, n, z)
    l2, u2 = _wilson(a + c, n, z)
    denominator = np.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(denominator > 0, (a * d - b * c) / denominator, 0.0)
    theta = p1 - p2
    below = np.sqrt(
        np.maximum((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0)
    )
    above = np.sqrt(
        np.maximum((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0)
    )
    return Difference(p1, p2, theta, np.maximum(theta - below, -1), np.minimum(theta + above, 1))
