"""One arm on one workload in numbers: best losses, regret, failure rates, sensitivities."""

from __future__ import annotations

import math

import numpy as np

from api_schemas.analysis import ArmAnalysis, CellTable, LearningCurve, Rate
from service.analysis.cells import Floats, Outcomes
from service.analysis.estimates import Estimates
from service.analysis.importance import warmup_importance
from service.analysis.rates import wilson


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
    safe = np.where(np.isnan(values), 0.0, values)
    high = np.where(np.isnan(values), -np.inf, safe).max(axis=axis)
    low = np.where(np.isnan(values), np.inf, safe).min(axis=axis)
    return np.where(enough, high - low, np.nan)


def _curves(outcomes: Outcomes, arm: int, lr: int) -> list[LearningCurve]:
    curves = []
    for w, warmup in enumerate(outcomes.warmups):
        index = int(outcomes.cell_trial[arm, lr, w])
        if index < 0:
            continue
        trial = outcomes.trials[index]
        steps = sorted(trial.intermediate_values)
        curves.append(
            LearningCurve(
                trial_number=trial.number,
                lr=float(outcomes.lrs[lr]),
                warmup=warmup,
                steps=steps,
                loss=[float(trial.intermediate_values[s]) for s in steps],
            )
        )
    return curves


def arm_analysis(
    outcomes: Outcomes,
    arm: int,
    estimates: Estimates | None,
    seeds: int,
    *,
    importance: bool = True,
) -> ArmAnalysis:
    """Everything the analysis reports about ``arm`` of ``outcomes`` (see ArmAnalysis)."""
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

    best_loss_w0 = None if l0 is None or w0 is None else float(mean[l0, w0])
    best_loss = None if flat is None else float(mean.ravel()[flat])
    lr_spread = None if w0 is None else _none(float(_spread(mean[:, w0], axis=0)))
    by_lr = _spread(mean, axis=1)
    # Curves where warmup changes the final loss most show what it does; else the best lr's.
    widest = _argmin(-by_lr)
    curve_lr = widest if widest is not None and by_lr[widest] > 0 else best_l
    return ArmAnalysis(
        arm=spec_arm.label,
        optimizer=spec_arm.optimizer,
        settings=dict(spec_arm.settings),
        best_loss_w0=best_loss_w0,
        best_lr_w0=None if l0 is None else float(outcomes.lrs[l0]),
        best_loss=best_loss,
        best_lr=None if best_l is None else float(outcomes.lrs[best_l]),
        best_warmup=None if best_w is None else outcomes.warmups[best_w],
        regret=None if estimates is None else estimates.regret.arm(arm, seeds),
        naive_regret=None
        if best_loss_w0 is None or best_loss is None
        else best_loss_w0 - best_loss,
        failure_rate_w0=rate(w0),
        failure_rate_best_warmup=rate(best_w),
        warmup_sensitivity=None if np.all(np.isnan(by_lr)) else float(np.nanmean(by_lr)),
        lr_sensitivity_w0=lr_spread,
        warmup_importance=warmup_importance(outcomes, arm) if importance else None,
        cells=CellTable(
            lrs=[float(x) for x in outcomes.lrs],
            warmups=outcomes.warmups,
            mean_loss=[[_none(float(v)) for v in row] for row in mean],
            failures=failures.tolist(),
            runs=runs.tolist(),
        ),
        curves=[] if curve_lr is None else _curves(outcomes, arm, curve_lr),
    )
