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


CHUNK = 1 << 20
"""Paired differences computed at once by ``gap`` (8 MB): at 100,000 trials all of a regret's
are 625 million (5 GB), and cache-sized slices of rows are faster than one array."""


def gap(x: Floats, y: Floats, level: float = CONFIDENCE) -> Gap:
    """The gap min_i μ(x_i) - min_j μ(y_j) with its ``level`` interval (see the module doc).

    ``x`` is (..., nx, seeds) and ``y`` (..., ny, seeds), the same seeds in the same order; a
    cell not run is NaN in every seed and is left out of both minima.

    With ``PRUNE_PAIRS`` pairs or more, ``_pruned`` skips the pairs that cannot decide a
    bound. Otherwise every pair is computed, ``CHUNK`` at a time in slices of x's rows: each
    pair's arithmetic is the same as over the whole array, and minima and maxima are exact,
    so neither the slicing nor the skipping changes a bit of the result.
    """
    seeds = x.shape[-1]
    x_ok = np.asarray(~np.isnan(x).any(axis=-1), dtype=bool)  # (..., nx)
    y_ok = np.asarray(~np.isnan(y).any(axis=-1), dtype=bool)
    ok = x_ok.any(axis=-1) & y_ok.any(axis=-1)
    batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    nx, ny = x.shape[-2], y.shape[-2]
    upper_t = lower_t = np.zeros(batch)
    if seeds > 1:
        upper_t = _critical(seeds, x_ok.sum(axis=-1), level)
        lower_t = _critical(seeds, y_ok.sum(axis=-1), level)
        if nx * ny >= PRUNE_PAIRS and _tame(x) and _tame(y):
            return _pruned(x, y, x_ok, y_ok, np.asarray(ok, dtype=bool), upper_t, lower_t)
    estimate = np.empty((*batch, nx))  # per row i: max over valid j, before the min over i
    high = np.empty((*batch, nx))
    low = np.full((*batch, ny), np.inf)  # per column j: min over valid i, so far
    rows = max(1, CHUNK // max(1, math.prod(batch) * ny * seeds))
    for first in range(0, nx, rows):
        part = slice(first, first + rows)
        d = x[..., part, None, :] - y[..., None, :, :]  # (..., rows, ny, seeds)
        with np.errstate(invalid="ignore"):
            mean = d.mean(axis=-1)
            se = (
                d.std(axis=-1, ddof=1) / math.sqrt(seeds)
                if seeds > 1
                else np.full_like(mean, np.nan)
            )
        valid = x_ok[..., part, None] & y_ok[..., None, :]
        estimate[..., part] = np.where(valid, mean, -np.inf).max(axis=-1)
        if seeds > 1:
            upper = mean + upper_t[..., None, None] * se
            lower = mean - lower_t[..., None, None] * se
            high[..., part] = np.where(valid, upper, -np.inf).max(axis=-1)
            low = np.minimum(low, np.where(valid, lower, np.inf).min(axis=-2))

    def over_x(inner: Floats) -> Floats:
        """min over valid i."""
        return np.asarray(np.where(x_ok, inner, np.inf).min(axis=-1), dtype=np.float64)

    point = over_x(estimate)
    if seeds < 2:
        nan = np.full(point.shape, np.nan)
        return Gap(np.where(ok, point, np.nan), nan, nan.copy(), seeds)
    low = np.asarray(np.where(y_ok, low, -np.inf).max(axis=-1), dtype=np.float64)
    return Gap(
        estimate=np.where(ok, point, np.nan),
        low=np.where(ok, low, np.nan),
        high=np.where(ok, over_x(high), np.nan),
        seeds=seeds,
    )


PRUNE_PAIRS = 50_000
"""Cells x cells from which ``gap`` skips the pairs that cannot decide a bound (``_pruned``)."""
PILOTS = 16
"""The rows (and columns) ``_pruned`` computes first, whose results bound all the others."""


def _tame(values: Floats) -> bool:
    """Whether no difference or square of differences of ``values`` can overflow (NaN cells
    aside): then every pair's interval is a number, and comparisons between them decide."""
    return bool(np.abs(np.nan_to_num(values, nan=0.0)).max(initial=0.0) < 1e150)


def _pairs(x: Floats, y: Floats) -> tuple[Floats, Floats]:
    """D_ij's mean and standard error over the seeds for every row of ``x`` (n, seeds) and
    of ``y`` (m, seeds): each pair's arithmetic is ``gap``'s over the whole array, so a pair
    has the same value however it is reached."""
    seeds = x.shape[-1]
    means, ses = [], []
    rows = max(1, CHUNK // max(1, y.shape[0] * seeds))
    for first in range(0, x.shape[0], rows):
        d = x[first : first + rows, None, :] - y[None, :, :]
        means.append(d.mean(axis=-1))
        ses.append(d.std(axis=-1, ddof=1) / math.sqrt(seeds))
    if not means:
        return np.zeros((0, y.shape[0])), np.zeros((0, y.shape[0]))
    return np.concatenate(means), np.concatenate(ses)


def _pruned(
    x: Floats,
    y: Floats,
    x_ok: Bools,
    y_ok: Bools,
    ok: Bools,
    upper_t: Floats,
    lower_t: Floats,
) -> Gap:
    """``gap`` for many cells (at least two seeds), the same values computed over far fewer
    pairs.

    The estimate and the upper bound are minima over rows i of row maxima over j; the lower
    bound a maximum over columns j of column minima over i. A row's maximum is at least its
    value at any one column: so after the exact maxima of a few promising rows (the lowest
    means; their minimum τ bounds the answer from above), a row whose values at those rows'
    arg-max columns already reach τ cannot lower the minimum, and is skipped. Likewise for
    columns and the lower bound. Every value compared is computed exactly as in the full
    array, and a skipped row or column provably does not change a minimum or maximum, so the
    result is the full computation's, bit for bit (``tests/service/analysis/test_bounds.py``);
    at 100,000 trials about 20 rows of a regret's 1,250 remain, and a few columns.
    """
    batch = ok.shape
    estimate, low, high = np.full(batch, np.nan), np.full(batch, np.nan), np.full(batch, np.nan)
    x_b, y_b = (
        np.broadcast_to(x, (*batch, *x.shape[-2:])),
        np.broadcast_to(y, (*batch, *y.shape[-2:])),
    )
    x_okb = np.broadcast_to(x_ok, (*batch, x.shape[-2]))
    y_okb = np.broadcast_to(y_ok, (*batch, y.shape[-2]))
    tx_b, ty_b = np.broadcast_to(upper_t, batch), np.broadcast_to(lower_t, batch)
    for index in np.ndindex(batch):
        if not ok[index]:
            continue
        xs, ys = x_b[index][x_okb[index]], y_b[index][y_okb[index]]  # the cells run
        tx, ty = tx_b[index], ty_b[index]
        # Rows: the estimate's and the upper bound's minima of row maxima.
        pilots = np.argsort(xs.mean(axis=-1), kind="stable")[:PILOTS]
        mean, se = _pairs(xs[pilots], ys)
        upper = mean + tx * se
        tau_e, tau_h = mean.max(axis=-1).min(), upper.max(axis=-1).min()
        columns = np.unique(np.concatenate([mean.argmax(axis=-1), upper.argmax(axis=-1)]))
        mean, se = _pairs(xs, ys[columns])
        maybe = (mean.max(axis=-1) < tau_e) | ((mean + tx * se).max(axis=-1) < tau_h)
        maybe[pilots] = False
        mean, se = _pairs(xs[maybe], ys)
        if mean.shape[0]:
            tau_e = min(tau_e, mean.max(axis=-1).min())
            tau_h = min(tau_h, (mean + tx * se).max(axis=-1).min())
        # Columns: the lower bound's maximum of column minima.
        pilots = np.argsort(ys.mean(axis=-1), kind="stable")[:PILOTS]
        mean, se = _pairs(xs, ys[pilots])
        lower = mean - ty * se
        tau_l = lower.min(axis=0).max()
        rows = np.unique(lower.argmin(axis=0))
        mean, se = _pairs(xs[rows], ys)
        maybe = (mean - ty * se).min(axis=0) > tau_l
        maybe[pilots] = False
        mean, se = _pairs(xs, ys[maybe])
        if mean.shape[1]:
            tau_l = max(tau_l, (mean - ty * se).min(axis=0).max())
        estimate[index], low[index], high[index] = tau_e, tau_l, tau_h
    seeds = x.shape[-1]
    return Gap(estimate=estimate, low=low, high=high, seeds=seeds)


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
