"""One arm, and one (RAdam, Adam) pair, of one workload in numbers: the API's views."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from api_schemas.analysis import (
    ArmAnalysis,
    Bounded,
    CellTable,
    EquivalenceOutcome,
    FailureDifference,
    Interval,
    LearningCurve,
    LrDifference,
    LrEffect,
    MaYaratsComparison,
    PairAnalysis,
    Rate,
    StableRange,
)
from api_schemas.trials import MAX_LOSS
from service.analysis.bounds import Difference
from service.analysis.cells import Floats, Outcomes
from service.analysis.estimands import Estimates, PairEstimates
from service.analysis.rates import wilson
from service.analysis.stable import StableRanges


def _none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _argmin(values: Floats) -> int | None:
    """Index of the smallest non-NaN value (the first on ties), or None if all are NaN."""
    if np.all(np.isnan(values)):
        return None
    return int(np.nanargmin(values))


def _spread(values: Floats, axis: int) -> Floats:
    """max - min along ``axis`` where at least two values are there, else NaN."""
    enough = (~np.isnan(values)).sum(axis=axis) >= 2
    high = np.where(np.isnan(values), -np.inf, values).max(axis=axis)
    low = np.where(np.isnan(values), np.inf, values).min(axis=axis)
    return np.where(enough, high - low, np.nan)


def curve_lr(outcomes: Outcomes, arm: int) -> int | None:
    """The lr whose learning curves ``arm`` shows: where warmup changes the final loss most,
    which shows what it does; else the best lr's. None when the arm has no cell run."""
    mean = outcomes.loss[arm].mean(axis=-1)  # (lr, warmup); NaN where not run
    flat = _argmin(mean.ravel())
    best_l = None if flat is None else flat // mean.shape[1]
    by_lr = _spread(mean, axis=1)
    widest = _argmin(-by_lr)
    return widest if widest is not None and by_lr[widest] > 0 else best_l


def curve_trials(outcomes: Outcomes, arm: int) -> list[int]:
    """The storage ids of the trials whose curves ``arm`` shows (one per warmup run)."""
    lr = curve_lr(outcomes, arm)
    if lr is None:
        return []
    return [int(outcomes.trial_ids[i]) for i in outcomes.cell_trial[arm, lr] if i >= 0]


def _curves(
    outcomes: Outcomes, arm: int, lr: int, shown: Mapping[int, Mapping[int, float]]
) -> list[LearningCurve]:
    curves = []
    for w, warmup in enumerate(outcomes.warmups):
        index = int(outcomes.cell_trial[arm, lr, w])
        if index < 0:
            continue
        # Only finite values within the edge's bounds (older databases may hold others).
        values = {
            s: float(v)
            for s, v in shown.get(int(outcomes.trial_ids[index]), {}).items()
            if math.isfinite(v) and abs(v) <= MAX_LOSS
        }
        steps = sorted(values)
        curves.append(
            LearningCurve(
                trial_number=int(outcomes.numbers[index]),
                lr=float(outcomes.lrs[lr]),
                warmup=warmup,
                steps=steps,
                loss=[values[s] for s in steps],
            )
        )
    return curves


def bounded(values: Floats, transform: str, lrs: Floats) -> Bounded | None:
    """(estimate, low, high), ±inf beyond the grid, as a Bounded; None when NaN.

    ``transform`` "exp" turns log lrs into lrs (a bound beyond the grid on the far side is
    the grid's end: lr50 is surely past it); "log2" keeps G as it is.
    """
    estimate, low, high = (float(v) for v in values)
    if math.isnan(estimate) or math.isnan(low) or math.isnan(high):
        return None

    def out(v: float) -> float:
        return math.exp(v) if transform == "exp" else v

    ends = (float(lrs.min()), float(lrs.max())) if transform == "exp" else (None, None)
    return Bounded(
        estimate=out(estimate) if math.isfinite(estimate) else None,
        low=out(low) if math.isfinite(low) else (ends[1] if low > 0 else None),
        high=out(high) if math.isfinite(high) else (ends[0] if high < 0 else None),
        censored=None
        if math.isfinite(estimate)
        else ("above_grid" if estimate > 0 else "below_grid"),
    )


def arm_analysis(
    outcomes: Outcomes,
    arm: int,
    estimates: Estimates | None,
    ranges: StableRanges | None,
    curves: Mapping[int, Mapping[int, float]],
) -> ArmAnalysis:
    """Everything the analysis reports about ``arm`` of ``outcomes`` (see ArmAnalysis);
    ``curves`` holds the learning curves of the trials ``curve_trials`` names, by trial id."""
    spec_arm = outcomes.arms[arm]
    mean = outcomes.loss[arm].mean(axis=-1)  # (lr, warmup); NaN where not run
    w0 = outcomes.w0
    flat = _argmin(mean.ravel())
    best_l, best_w = (None, None) if flat is None else divmod(flat, mean.shape[1])
    l0 = None if w0 is None else _argmin(mean[:, w0])
    failures, runs = outcomes.failures[arm], outcomes.runs[arm]

    def rate(w: int | None) -> Rate:  # over every lr at warmup w
        return (
            wilson(0, 0) if w is None else wilson(int(failures[:, w].sum()), int(runs[:, w].sum()))
        )

    shown_lr = curve_lr(outcomes, arm)
    stable: list[StableRange] = []
    gain, gain_warmup = None, None
    if ranges is not None:
        for w, warmup in enumerate(outcomes.warmups):
            lr50 = bounded(ranges.log_lr50[:, arm, w], "exp", outcomes.lrs)
            if lr50 is not None:
                stable.append(StableRange(warmup=warmup, lr50=lr50))
        best = int(ranges.best_warmup[arm])
        if best >= 0:
            gain = bounded(ranges.gain[:, arm], "log2", outcomes.lrs)
            gain_warmup = outcomes.warmups[best]
    return ArmAnalysis(
        arm=spec_arm.label,
        optimizer=spec_arm.optimizer,
        settings=dict(spec_arm.settings),
        best_loss_w0=None if l0 is None or w0 is None else float(mean[l0, w0]),
        best_lr_w0=None if l0 is None else float(outcomes.lrs[l0]),
        best_loss=None if flat is None else float(mean.ravel()[flat]),
        best_lr=None if best_l is None else float(outcomes.lrs[best_l]),
        best_warmup=None if best_w is None else outcomes.warmups[best_w],
        regret=None if estimates is None else estimates.regret.at((arm,)),
        placebo_regret=None
        if estimates is None or estimates.placebo is None
        else estimates.placebo.at((arm,)),
        warmup_effect=[]
        if estimates is None
        else [
            LrEffect(lr=float(lr), effect=estimates.effect.at((arm, i)))
            for i, lr in enumerate(outcomes.lrs)
        ],
        stable_range=stable,
        stable_gain=gain,
        stable_gain_warmup=gain_warmup,
        failure_rate_w0=rate(w0),
        failure_rate_best_warmup=rate(best_w),
        cells=CellTable(
            lrs=[float(x) for x in outcomes.lrs],
            warmups=outcomes.warmups,
            mean_loss=[[_none(float(v)) for v in row] for row in mean],
            failures=failures.tolist(),
            runs=runs.tolist(),
        ),
        curves=[] if shown_lr is None else _curves(outcomes, arm, shown_lr, curves),
    )


def _difference(d: Difference, index: tuple[int, ...]) -> Interval:
    return Interval(
        estimate=float(d.estimate[index]), low=float(d.low[index]), high=float(d.high[index])
    )


def equivalence(difference: Interval, delta: float) -> EquivalenceOutcome:
    """Inside (-δ, δ): equivalent; beyond δ on one side: that side is better."""
    if -delta < difference.low and difference.high < delta:
        return EquivalenceOutcome.EQUIVALENT
    if difference.high < -delta:
        return EquivalenceOutcome.RADAM_BETTER
    if difference.low > delta:
        return EquivalenceOutcome.UNTUNED_WARMUP_BETTER
    return EquivalenceOutcome.INCONCLUSIVE


def pair_analysis(
    outcomes: Outcomes, estimates: Estimates, pair: PairEstimates, margin: float | None
) -> PairAnalysis:
    """RAdam against its Adam arm on one workload (see PairAnalysis)."""
    radam, adam = outcomes.arms[pair.radam].label, outcomes.arms[pair.adam].label
    warmups = outcomes.warmups
    missing = np.isnan(outcomes.loss[pair.radam, :, outcomes.w0 or 0]).any(axis=-1)
    ran_w0 = [not bool(m) for m in np.atleast_1d(missing)]
    by_lr = [
        FailureDifference(
            lr=float(lr),
            adam_warmup=warmups[int(pair.adam_warmup_by_lr[i])],
            radam_rate=float(pair.failures_by_lr.x_rate[i]),
            adam_rate=float(pair.failures_by_lr.y_rate[i]),
            difference=_difference(pair.failures_by_lr, (i,)),
        )
        for i, lr in enumerate(outcomes.lrs)
        if ran_w0[i]
    ]
    adam_mean = outcomes.loss[pair.adam].mean(axis=-1)
    best = _argmin(adam_mean.ravel())
    at_best = None
    if best is not None:
        at_best = FailureDifference(
            lr=None,
            adam_warmup=warmups[best % len(warmups)],
            radam_rate=float(pair.failures_at_best.x_rate),
            adam_rate=float(pair.failures_at_best.y_rate),
            difference=_difference(pair.failures_at_best, ()),
        )
    comparisons = []
    for schedule, untuned in pair.untuned.items():
        difference = untuned.at()
        if difference is None:
            continue
        comparisons.append(
            MaYaratsComparison(
                workload=outcomes.label,
                radam_arm=radam,
                adam_arm=adam,
                schedule="untuned_linear"
                if schedule == "untuned_linear"
                else "untuned_exponential",
                difference=difference,
                margin=margin,
                outcome=None if margin is None else equivalence(difference, margin),
                by_lr=[
                    LrDifference(lr=float(lr), difference=pair.untuned_by_lr[schedule].at((i,)))
                    for i, lr in enumerate(outcomes.lrs)
                ],
            )
        )
    return PairAnalysis(
        radam_arm=radam,
        adam_arm=adam,
        radam_regret=estimates.regret.at((pair.radam,)),
        adam_regret=estimates.regret.at((pair.adam,)),
        gap=pair.gap.at(),
        failure_at_best=at_best,
        failures_by_lr=by_lr,
        ma_yarats=comparisons,
    )
