"""Reading trials out of Optuna: states, hps's trial attributes, counts and progress.

hps keeps each trial's extras (per-seed results, failure, worker, device, attempt) as Optuna
user attributes, so the Optuna dashboard shows them too. The keys are the ``ATTR_*`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from api_schemas import Failure, PastAttempt, SeedResult, TrialCounts, TrialRead, TrialState

ATTR_SEEDS = "seeds"
ATTR_FAILURE = "failure"
ATTR_ATTEMPT = "attempt"
ATTR_WORKER = "worker_id"
ATTR_DEVICE = "device"
ATTR_STEPS_PER_SECOND = "steps_per_second"
ATTR_WALL_TIME = "wall_time_s"
ATTR_TORCH = "torch_version"
ATTR_RETRIED = "retried"
"""Set on a failed trial whose parameters were queued again: it does not use up the budget."""
ATTR_HISTORY = "history"
"""On a re-queued trial: the earlier runs of its parameters and how each failed (PastAttempt)."""

STATES: dict[OptunaState, TrialState] = {
    OptunaState.WAITING: TrialState.WAITING,
    OptunaState.RUNNING: TrialState.RUNNING,
    OptunaState.COMPLETE: TrialState.COMPLETED,
    OptunaState.PRUNED: TrialState.PRUNED,
    OptunaState.FAIL: TrialState.FAILED,
}


def trial_read(study_id: int, trial: FrozenTrial) -> TrialRead:
    attrs: dict[str, Any] = trial.user_attrs
    failure = attrs.get(ATTR_FAILURE)
    return TrialRead(
        id=trial._trial_id,
        study_id=study_id,
        number=trial.number,
        state=STATES[trial.state],
        params=_params(trial),
        value=trial.value,
        seeds=[SeedResult.model_validate(s) for s in attrs.get(ATTR_SEEDS, [])],
        failure=Failure.model_validate(failure) if failure else None,
        attempt=attrs.get(ATTR_ATTEMPT, 1),
        history=[PastAttempt.model_validate(h) for h in attrs.get(ATTR_HISTORY, [])],
        worker_id=attrs.get(ATTR_WORKER),
        device=attrs.get(ATTR_DEVICE),
        steps_per_second=attrs.get(ATTR_STEPS_PER_SECOND),
        last_step=trial.last_step,
        started_at=_utc(trial.datetime_start),
        finished_at=_utc(trial.datetime_complete),
    )


def _utc(moment: datetime | None) -> datetime | None:
    # Optuna stamps trials with the local time and no zone; on the wire every time is UTC with
    # its offset (a date-time without one is not RFC 3339, and a client could not place it).
    return None if moment is None else moment.astimezone(UTC)


def _params(trial: FrozenTrial) -> dict[str, Any]:
    if trial.state == OptunaState.WAITING:
        # An enqueued trial's parameters live in Optuna's system attributes until it starts.
        return dict(trial.system_attrs.get("fixed_params", {}))
    return trial.params


def is_retried(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(ATTR_RETRIED))


def count(trials: Sequence[FrozenTrial]) -> TrialCounts:
    counts = TrialCounts()
    for trial in trials:
        state = STATES[trial.state]
        setattr(counts, state.value, getattr(counts, state.value) + 1)
        counts.retried += is_retried(trial)
    return counts
