"""Reading trials out of Optuna: states, hps's trial attributes, counts and progress.

hps keeps each trial's extras (per-seed results, failure, worker, device, attempt) as Optuna
user attributes, so the Optuna dashboard shows them too. The keys are the ``ATTR_*`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from api_schemas import Failure, SeedResult, TrialCounts, TrialRead, TrialState

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
        worker_id=attrs.get(ATTR_WORKER),
        device=attrs.get(ATTR_DEVICE),
        steps_per_second=attrs.get(ATTR_STEPS_PER_SECOND),
        last_step=trial.last_step,
        started_at=trial.datetime_start,
        finished_at=trial.datetime_complete,
    )


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


def budget_used(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count towards ``n_trials``: all but the failed ones that were retried."""
    return sum(not is_retried(t) for t in trials)


def is_done(trials: Sequence[FrozenTrial], n_trials: int) -> bool:
    """Whether every trial the study will run has reached a final state."""
    counted = [t for t in trials if not is_retried(t)]
    return len(counted) >= n_trials and all(t.state.is_finished() for t in counted)
