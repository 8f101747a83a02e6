"""Optuna's PED-ANOVA importance of warmup within an arm, on planted effects."""

from __future__ import annotations

import numpy as np

from service.analysis.importance import warmup_importance
from tests.service.analysis import simulate


def test_warmup_matters_where_it_was_planted_and_not_where_only_lr_matters() -> None:
    rng = np.random.default_rng(0)
    means = np.empty((2, 4, 3))
    lr_effect = np.array([1.2, 0.8, 0.5, 0.9])[:, None]
    means[0] = lr_effect + np.array([2.0, 0.0, 0.0])  # arm 0: w=0 is far worse at every lr
    means[1] = lr_effect + np.zeros(3)  # arm 1: warmup changes nothing
    o = simulate.outcomes(rng, means, seeds=4, noise=0.01, seed_sd=0.0)
    needs, indifferent = warmup_importance(o, 0), warmup_importance(o, 1)
    assert needs is not None and indifferent is not None
    assert needs > 0.5 > indifferent, (needs, indifferent)


def test_no_importance_from_too_few_cells_or_identical_cells() -> None:
    rng = np.random.default_rng(1)
    o = simulate.outcomes(rng, np.full((1, 4, 3), simulate.CHANCE), seeds=2)
    assert warmup_importance(o, 0) is None  # every cell failed: nothing to attribute
    o.loss[0, 1:] = np.nan
    o.loss[0, 0] = [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]
    assert warmup_importance(o, 0) is None  # three cells
