"""A trial's objective from its worker's result: the mean over seeds of the study's metric."""

from __future__ import annotations

import math
import statistics

from api_schemas import StudySpec, TrialResult
from service.errors import InvalidResult


def check_seeds(spec: StudySpec, result: TrialResult) -> None:
    """Raise InvalidResult unless every seed ``result`` lists is one of the spec's, once.

    For every state: a pruned or failed run may list fewer seeds, never others (issue 16: a
    pruned completion was stored with any seed ids at all).
    """
    listed = [s.seed for s in result.seeds]
    if not set(listed) <= set(spec.seeds) or len(set(listed)) != len(listed):
        raise InvalidResult(
            f"seeds must be among {sorted(spec.seeds)}, each at most once; got {sorted(listed)}"
        )


def objective(spec: StudySpec, result: TrialResult) -> float:
    """The value Optuna optimises for a completed ``result``.

    Raises InvalidResult when the result does not answer its assignment: other seeds than the
    spec's, a seed without the objective's metric, or a mean that is not finite.
    """
    expected = sorted(spec.seeds)
    got = sorted(s.seed for s in result.seeds)
    if got != expected:
        raise InvalidResult(f"seeds must be exactly {expected}, got {got}")
    metric = spec.objective.metric
    values = [s.loss if metric == "loss" else s.accuracy for s in result.seeds]
    if any(v is None for v in values):
        raise InvalidResult(f"every seed needs {metric} for this study's objective")
    value = statistics.fmean(v for v in values if v is not None)
    if not math.isfinite(value):
        raise InvalidResult("the objective is not finite")
    return value
