"""The stable lr range: lr50, the lr at which half the seeds fail, and its gain with warmup.

Xiong et al. (ICML 2020): a Post-LN Transformer needs warmup because without it a high lr
fails; a Pre-LN one trains there too. At short budgets warmup speeds any model's start, so the
regret alone cannot show that contrast: the range of lrs that train can. Per (arm, warmup):

    lr50 = where the failure rate, made monotone in log lr (isotonic regression), crosses 1/2,
           interpolated linearly in log lr between the two grid points around it
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


def isotonic(rates: Floats) -> Floats:
    """Increasing isotonic regression along the last axis (equal weights), vectorised.

    The max-min formula: fit_k = max over i ≤ k of min over j ≥ k of mean(rates[i..j]).
    O(n³) in the (short) lr axis, linear in the batch.
    """
    n = rates.shape[-1]
    total = np.concatenate([np.zeros((*rates.shape[:-1], 1)), np.cumsum(rates, axis=-1)], -1)
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (total[..., None, 1:] - total[..., :-1, None]) / (j - i + 1)  # [..., i, j]
    means = np.where(j >= i, means, np.nan)
    fit = np.empty_like(rates)
    for k in range(n):
        inner = np.nanmin(means[..., : k + 1, k:], axis=-1)  # over j ≥ k, for each i ≤ k
        fit[..., k] = np.max(inner, axis=-1)
    return fit


def lr50(failed: Floats, log_lrs: Floats) -> Floats:
    """log lr50 from failure rates (..., lrs) on increasing ``log_lrs``; ±inf when censored.

    NaN where the design has fewer than two lrs.
    """
    if log_lrs.size < 2:
        return np.full(failed.shape[:-1], np.nan)
    fit = isotonic(failed)
    above = fit >= 0.5
    first = np.where(above.any(axis=-1), above.argmax(axis=-1), -1)
    out = np.full(failed.shape[:-1], np.inf)  # never reaches 1/2: above the grid
    out[first == 0] = -np.inf  # at or above 1/2 at the lowest lr: below the grid
    inside = first > 0
    k = np.where(inside, first, 1)
    lo = np.take_along_axis(fit, (k - 1)[..., None], -1)[..., 0]
    hi = np.take_along_axis(fit, k[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(hi > lo, (0.5 - lo) / (hi - lo), 1.0)
    point = log_lrs[k - 1] + share * (log_lrs[k] - log_lrs[k - 1])
    return np.where(inside, point, out)


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
    boot = np.einsum("alws,bs->balw", np.nan_to_num(runs), weights)
    boot = np.where(ran, boot, np.nan)
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
    out = np.full(curves.shape[:-1], np.nan)
    complete = np.moveaxis(ran, -2, -1)  # (arms, warmups, lrs)
    for a, w in np.ndindex(complete.shape[:2]):
        keep = complete[a, w]
        if keep.sum() >= 2:
            out[..., a, w] = lr50(curves[..., a, w, :][..., keep], log_lrs[keep])
    return out
