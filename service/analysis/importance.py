"""Optuna's importance of warmup against lr within one arm (descriptive, not a test).

PED-ANOVA, Optuna 5's default evaluator, asks which parameter values the best trials share. It
reads "best" as *lowest* only when the study minimises and no ``target`` is given, so the arm's
cells are put into a fresh in-memory study that minimises the held-out loss (failures at the
chance loss, like everywhere in the analysis): correct whatever the study's own objective.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from service.analysis.cells import Outcomes

MIN_CELLS = 6
"""Below this many cells the top quantile is one or two cells: no importance is reported."""
MAX_LR_CATEGORIES = 12
TARGET_QUANTILE = 0.5
"""PED-ANOVA asks what the cells better than this quantile share. Optuna's default, 0.1, is one
cell of a small grid and credits lr (more levels) even where w=0 fails everywhere; the better
half of the cells answers "does warmup matter at all" instead."""


def warmup_importance(outcomes: Outcomes, arm: int) -> float | None:
    """Warmup's share of the (lr, warmup) importance in ``arm``, or None when undefined."""
    mean = outcomes.loss[arm].mean(axis=-1)
    lr_index, w_index = np.nonzero(~np.isnan(mean))
    if len(lr_index) < MIN_CELLS or len(set(w_index)) < 2:
        return None
    if np.ptp(mean[lr_index, w_index]) == 0:
        return None  # every cell alike (all failed, say): nothing to attribute
    # Cells sit on discrete lr values (a grid's, or the bins of free search). A few are
    # categories; many are an ordinal index (Optuna compares categorical choices one by one,
    # which with a hundred lrs and thousands of cells takes longer than everything else).
    lr_values: list[float] | list[int]
    if len(outcomes.lrs) <= MAX_LR_CATEGORIES:
        lr_values = [float(x) for x in outcomes.lrs]
        lr_distribution: BaseDistribution = CategoricalDistribution(lr_values)
    else:
        lr_values = list(range(len(outcomes.lrs)))
        lr_distribution = IntDistribution(0, len(lr_values) - 1)
    distributions: dict[str, BaseDistribution] = {
        "lr": lr_distribution,
        "warmup": CategoricalDistribution(outcomes.warmups),
    }
    study = optuna.create_study(direction="minimize", storage=optuna.storages.InMemoryStorage())
    study.add_trials(
        optuna.trial.create_trial(
            params={"lr": lr_values[li], "warmup": outcomes.warmups[wi]},
            distributions=distributions,
            value=float(mean[li, wi]),
        )
        for li, wi in zip(lr_index, w_index, strict=True)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" and few-trials warnings
        try:
            scores = optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.PedAnovaImportanceEvaluator(
                    target_quantile=TARGET_QUANTILE
                ),
            )
        except (ValueError, RuntimeError, ZeroDivisionError):
            return None
    score = scores.get("warmup")
    return None if score is None or not np.isfinite(score) else float(score)
