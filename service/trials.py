"""Trial views: a stored Optuna trial as the API shows it (``TrialRead``), and trial counts.

What hps stores per trial beside Optuna's fields is ``service.trial_record``; its ``ATTR_*``
keys are re-exported here for the readers that still take user attributes directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from api_schemas import TrialCounts, TrialRead, TrialState
from service.store import trial_id_of
from service.trial_record import (
    ATTR_ATTEMPT,
    ATTR_DEVICE,
    ATTR_FAILURE,
    ATTR_HISTORY,
    ATTR_RETRIED,
    ATTR_SEEDS,
    ATTR_STEPS_PER_SECOND,
    ATTR_TORCH,
    ATTR_WALL_TIME,
    ATTR_WORKER,
    TrialRecord,
)

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_DEVICE",
    "ATTR_FAILURE",
    "ATTR_HISTORY",
    "ATTR_RETRIED",
    "ATTR_SEEDS",
    "ATTR_STEPS_PER_SECOND",
    "ATTR_TORCH",
    "ATTR_WALL_TIME",
    "ATTR_WORKER",
    "STATES",
    "count",
    "is_retried",
    "trial_read",
]

STATES: dict[OptunaState, TrialState] = {
    OptunaState.WAITING: TrialState.WAITING,
    OptunaState.RUNNING: TrialState.RUNNING,
    OptunaState.COMPLETE: TrialState.COMPLETED,
    OptunaState.PRUNED: TrialState.PRUNED,
    OptunaState.FAIL: TrialState.FAILED,
}


def trial_read(study_id: int, trial: FrozenTrial) -> TrialRead:
    record = TrialRecord.of(trial)
    return TrialRead(
        id=trial_id_of(trial),
        study_id=study_id,
        number=trial.number,
        state=STATES[trial.state],
        params=_params(trial),
        value=trial.value,
        seeds=record.seeds,
        failure=record.failure,
        attempt=record.attempt,
        history=record.history,
        worker_id=record.worker_id,
        device=record.device,
        steps_per_second=record.steps_per_second,
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
    return TrialRecord.of(trial).retried


def count(trials: Sequence[FrozenTrial]) -> TrialCounts:
    counts = TrialCounts()
    for trial in trials:
        state = STATES[trial.state]
        setattr(counts, state.value, getattr(counts, state.value) + 1)
        counts.retried += is_retried(trial)
    return counts
