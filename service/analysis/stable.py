"""The stable lr range: lr50, the lr at which half the seeds fail, and its gain with warmup.

Xiong et al. (ICML 2020): a Post-LN Transformer needs warmup because without it a high lr
fails; a Pre-LN one trains there too. At short budgets warmup speeds any model's start, so the
regret alone cannot show that contrast: the range of lrs that train can. Per (arm, warmup):

    lr50 = where the failure rate, made monotone in log lr (isotonic regression), crosses 1/2,
           interpolated linearly in log lr between the fits at the grid points around it
    G    = log2(lr50 with the warmup that reaches the highest lr50 / lr50 without warmup)

A fitted logistic curve would be the textbook choice, but at a handful of seeds per lr the
failures usually separate perfectly and its maximum-likelihood fit has no finite slope; the
isotonic crossing needs no slope. Where the rate never reaches 1/2 on the grid, lr50 lies above
it (censored: only a bound is known), and likewise below it.

Intervals: a paired seed bootstrap, the same resampled seeds for every warmup and arm (so that
G's interval is paired). Choosing the best warmup on the same seeds biases G upward a little;
the analysis is descriptive here, the verdict does not use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from api_schemas.analysis import CONFIDENCE
from service.analysis.cells import Floats, Outcomes

Ints = npt.NDArray[np.int64]


BLOCK = 1 << 15
"""Bootstrap rates per block of ``_lr50_over_warmups`` (256 KB)."""
TIE = 1e-12
"""Rounding slack when a pooled failure rate is exactly 1/2."""


def lr50(failed: Floats, log_lrs: Floats) -> Floats:
    """log lr50 from failure rates (..., lrs) on increasing ``log_lrs``; ±inf when censored.

    The isotonic (increasing, least-squares) fit of the rates never needs building: with
    q = cumsum(rate - 1/2) from 0, the fit at k is ≥ 1/2 exactly when min(q[0..k]) ≤
    min(q[k+1..n]). The first such k starts a pooled block, whose fit is the least mean of
    rates[k..j] over j; the fit at k - 1 ends one, and is the largest mean of rates[i..k-1].
    O(lrs) per row. NaN where the design has fewer than two lrs.
    """
    n = log_lrs.size
    if n < 2:
        return np.full(failed.shape[:-1], np.nan)
    zero = np.zeros((*failed.shape[:-1], 1))
    q = np.concatenate([zero, np.cumsum(failed - 0.5, axis=-1)], axis=-1)  # (..., n + 1)
    prefix_min = np.minimum.accumulate(q[..., :-1], axis=-1)
    suffix_min = np.minimum.accumulate(q[..., ::-1], axis=-1)[..., ::-1][..., 1:]
    above = prefix_min <= suffix_min + TIE  # (..., n): the fit at k is at least 1/2
    first = np.where(above.any(axis=-1), above.argmax(axis=-1), -1)
    inside = first > 0
    k = np.where(inside, first, 1)[..., None]
    total = np.concatenate([zero, np.cumsum(failed, axis=-1)], axis=-1)
    at = np.take_along_axis(total, k, axis=-1)  # the rates summed before k
    index = np.arange(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ahead = (total[..., 1:] - at) / (index - k + 1)  # mean of rates[k..j], j = index
        behind = (at - total[..., :-1]) / (k - index)  # mean of rates[i..k-1], i = index
    fit_k = np.where(index >= k, ahead, np.inf).min(axis=-1)
    fit_before = np.where(index < k, behind, -np.inf).max(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(fit_k > fit_before, (0.5 - fit_before) / (fit_k - fit_before), 1.0)
    at_k = k[..., 0]
    point = log_lrs[at_k - 1] + np.clip(share, 0, 1) * (log_lrs[at_k] - log_lrs[at_k - 1])
    censored = np.where(first == 0, -np.inf, np.inf)  # at the lowest lr already, or never
    return np.asarray(np.where(inside, point, censored), dtype=np.float64)


@dataclass(frozen=True)
class StableRanges:
    """log lr50 per (arm, warmup), and G per arm, each with bootstrap percentiles."""

    log_lr50: Floats
    """(3, arms, warmups): estimate, low, high; ±inf beyond the grid, NaN where not run."""
    gain: Floats
    """(3, arms): G in log2 units, estimate, low, high; NaN without w=0 or another warmup."""
    best_warmup: Ints
    """(arms,): the warmup of the highest lr50 other than w=0, or -1."""


def _runs(outcomes: Outcomes) -> Floats:
    """Per-seed failures (arms, lrs, warmups, seeds) as 0/1, NaN where a cell was not run."""
    ran = ~np.isnan(outcomes.loss).any(axis=-1, keepdims=True)
    return np.where(ran, outcomes.failed.astype(np.float64), np.nan)


def _gain(log50: Floats, w0: int, best: Ints) -> Floats:
    """G = log2(lr50(best warmup) / lr50(w=0)) along the arms axis; NaN where undefined."""
    arms = np.arange(log50.shape[-2])
    picked = log50[..., arms, np.maximum(best, 0)]
    with np.errstate(invalid="ignore"):
        g = (picked - log50[..., w0]) / np.log(2)
    return np.where(best >= 0, g, np.nan)


def stable_ranges(outcomes: Outcomes, resamples: int, seed: int = 0) -> StableRanges | None:
    """lr50 and G of every arm with paired-bootstrap intervals; None without w=0 or 2 lrs."""
    runs = _runs(outcomes)
    arms, lrs, warmups, seeds = runs.shape
    if outcomes.w0 is None or lrs < 2 or seeds < 1 or arms == 0:
        return None
    log_lrs = np.log(outcomes.lrs)
    counts = np.random.default_rng(seed).multinomial(seeds, np.full(seeds, 1 / seeds), resamples)
    weights = counts / seeds  # (B, seeds)
    ran = np.asarray(~np.isnan(runs).any(axis=-1), dtype=bool)  # (arms, lrs, warmups)
    point = np.where(ran, np.nan_to_num(runs).mean(axis=-1), np.nan)
    # (arms, lrs, warmups, seeds) @ (seeds, B): BLAS, then the resamples in front. Cells not
    # run hold 0 here, not NaN: no curve reads them (``_lr50_over_warmups`` keeps the lrs
    # run), and masking 100 million values (100,000 trials) took as long as the product.
    boot = np.moveaxis(np.nan_to_num(runs) @ weights.T, -1, 0)
    point_50 = _lr50_over_warmups(point, log_lrs, ran)
    boot_50 = _lr50_over_warmups(boot, log_lrs, ran)
    w0 = outcomes.w0
    others = np.where(np.arange(warmups) == w0, -np.inf, np.nan_to_num(point_50, nan=-np.inf))
    best = np.asarray(others.argmax(axis=-1), dtype=np.int64)
    best = np.where((warmups > 1) & (others.max(axis=-1) > -np.inf), best, -1)
    tail = (1 - CONFIDENCE) / 2
    quantiles = np.quantile(boot_50, [tail, 1 - tail], axis=0, method="inverted_cdf")
    boot_gain = _gain(boot_50, w0, best)
    gain_q = np.quantile(boot_gain, [tail, 1 - tail], axis=0, method="inverted_cdf")
    return StableRanges(
        log_lr50=np.stack([point_50, quantiles[0], quantiles[1]]),
        gain=np.stack([_gain(point_50, w0, best), gain_q[0], gain_q[1]]),
        best_warmup=best,
    )


def _lr50_over_warmups(rates: Floats, log_lrs: Floats, ran: npt.NDArray[np.bool_]) -> Floats:
    """log lr50 per (..., arms, warmups) from rates (..., arms, lrs, warmups).

    Only lrs that ran enter a curve; a (arm, warmup) with fewer than two is NaN.
    """
    curves = np.moveaxis(rates, -2, -1)  # (..., arms, warmups, lrs)
    complete = np.moveaxis(ran, -2, -1)  # (arms, warmups, lrs)
    out = np.full(curves.shape[:-1], np.nan)
    # One curve at a time: the (resamples, lrs) temporaries stay in cache, 2.5x faster than
    # the whole (resamples, arms, warmups, lrs) array at once at 125 lrs.
    for a, w in np.ndindex(complete.shape[:2]):
        keep = complete[a, w]
        if keep.sum() >= 2:
            curve = curves[..., a, w, :]
            # Resamples a block at a time (each row's arithmetic is its own): at 1,250 lrs a
            # whole curve's resamples are 10 MB, a block stays in cache.
            rows = max(1, BLOCK // keep.size)
            for first in range(0, curve.shape[0] if curve.ndim > 1 else 1, rows):
                part = (slice(first, first + rows),) if curve.ndim > 1 else ()
                out[(*part, a, w)] = lr50(curve[part][..., keep], log_lrs[keep])
    return out
