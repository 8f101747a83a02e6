"""Cross-fitted best losses and warmup regrets, with a paired seed bootstrap. Pure numpy.

For one arm with mean losses ``Y[lr, w, seed]`` the warmup regret is

    Δ = min over lr of Y[lr, w=0]  -  min over (lr, w) of Y[lr, w]

Choosing the best cell and measuring it on the same seeds is biased (the winner's curse: the
minimum of noisy means is too low, more so over more cells). So every "best loss" here is
*cross-fitted*: the seeds are split in two halves, the best cell is chosen on the mean over one
half and measured on the other, both ways round, averaged over random splits.

Inference is a paired bootstrap over seed ids: one resample of the seeds (as counts, i.e.
weights) is used for every cell, arm and workload, so that differences between them are paired.
Each resample is cross-fitted on a random split of the seed ids it contains, copies of a seed
staying on one side, so choosing and measuring never share a seed.

Everything is matrix products of the (cells x seeds) losses with (seeds x replicates) weights,
chunked so that memory stays bounded whatever the study's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from api_schemas.analysis import CONFIDENCE, Interval

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

POINT_SPLITS = 32
"""Random splits averaged for the point estimate."""
BOOT_SPLITS = 4
"""Random splits per bootstrap resample (their noise widens the interval slightly)."""
CHUNK = 4_000_000
"""Floats per intermediate (cells x replicates) matrix."""


@dataclass(frozen=True)
class Weights:
    """Seed weights of ``groups`` estimates, each averaged over ``splits`` split directions.

    ``choose`` and ``measure`` are (groups, splits, seeds); each row sums to 1 over the seeds
    of one half (a row with an empty half is NaN).
    """

    choose: Floats
    measure: Floats


def split_weights(counts: npt.NDArray[np.int64], splits: int, rng: np.random.Generator) -> Weights:
    """Weights for ``splits`` random half-splits of each row of seed ``counts``, both ways round.

    ``counts`` is (groups, seeds): how often each seed id is in the group's resample.
    """
    groups, seeds = counts.shape
    present = counts > 0
    keys = rng.random((groups, splits, seeds))
    keys[np.broadcast_to(~present[:, None, :], keys.shape)] = 2.0  # absent seeds sort last
    rank = keys.argsort(axis=-1).argsort(axis=-1)
    half = (present.sum(axis=1) // 2)[:, None, None]
    first = (rank < half) & present[:, None, :]
    second = ~first & present[:, None, :]
    w = counts[:, None, :].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = w * first / (w * first).sum(axis=-1, keepdims=True)
        b = w * second / (w * second).sum(axis=-1, keepdims=True)
    return Weights(np.concatenate([a, b], axis=1), np.concatenate([b, a], axis=1))


def point_weights(seeds: int, rng: np.random.Generator) -> Weights:
    """Weights for the point estimate: every seed once, ``POINT_SPLITS`` splits."""
    return split_weights(np.ones((1, seeds), dtype=np.int64), POINT_SPLITS, rng)


def bootstrap_weights(seeds: int, resamples: int, rng: np.random.Generator) -> Weights:
    """Weights for ``resamples`` paired bootstrap resamples of the seed ids."""
    counts = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=resamples)
    return split_weights(counts.astype(np.int64), BOOT_SPLITS, rng)


def crossfit_best(loss: Floats, masks: Sequence[Bools], weights: Weights) -> list[Floats]:
    """Cross-fitted best loss of every arm over (lr, w) with ``mask[w]``, for each mask.

    Returns one (arms, groups) array per mask. ``loss`` is (arms, lrs, warmups, seeds) with NaN
    for cells that were not run; they are never chosen. An arm with no cell run under a mask
    gets NaN. The products with the weights are shared by all masks.
    """
    arms, lrs, _, seeds = loss.shape
    cells = loss.reshape(arms, -1, seeds)
    on_cells = [np.tile(mask, lrs) for mask in masks]  # cell index is lr * warmups + w
    groups, splits, _ = weights.choose.shape
    outs = [np.full((arms, groups), np.nan) for _ in masks]
    step = max(1, CHUNK // max(1, arms * cells.shape[1] * splits))
    for start in range(0, groups, step):
        stop = min(groups, start + step)
        chosen_on = cells @ weights.choose[start:stop].reshape(-1, seeds).T  # (arm, cell, rep)
        chosen_on[np.isnan(chosen_on)] = np.inf
        measured_on = cells @ weights.measure[start:stop].reshape(-1, seeds).T
        for mask, out in zip(on_cells, outs, strict=True):
            if not mask.any():
                continue
            chosen = chosen_on[:, mask, :]
            best = chosen.argmin(axis=1)[:, None, :]
            measured = np.take_along_axis(measured_on[:, mask, :], best, axis=1)[:, 0, :]
            # A replicate that had no cell to choose from chose nothing: NaN, not a number.
            measured[~np.isfinite(np.take_along_axis(chosen, best, axis=1)[:, 0, :])] = np.nan
            out[:, start:stop] = measured.reshape(arms, stop - start, splits).mean(axis=2)
    return outs


def naive_best(loss: Floats, warmups: Bools) -> Floats:
    """Best mean-over-seeds loss of every arm over (lr, w) with ``warmups[w]``, all seeds."""
    mean = loss[:, :, warmups, :].mean(axis=-1).reshape(loss.shape[0], -1)
    out = np.full(loss.shape[0], np.nan)
    ok = ~np.all(np.isnan(mean), axis=1)
    out[ok] = np.nanmin(mean[ok], axis=1)
    return out


def interval(point: float, boot: Floats, seeds: int) -> Interval | None:
    """The estimate with the percentile interval of its bootstrap replicates; None if NaN.

    The bootstrap spread of a mean over R seeds is that of the plug-in variance, too small by
    sqrt(R / (R - 1)); the replicates are widened by that factor around their median before
    the percentiles are taken. (Simulated coverage of the true regret, tests/service/analysis:
    about 0.90 with 4 seeds, 0.95 with 8 or more.)
    """
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(point) or boot.size < 10 or seeds < 2:
        return None
    centre = np.median(boot)
    boot = centre + (boot - centre) * np.sqrt(seeds / (seeds - 1))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return Interval(estimate=float(point), low=float(low), high=float(high))
