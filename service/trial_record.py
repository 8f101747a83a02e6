"""What hps stores per trial beside Optuna's own fields, and under which user-attribute keys.

hps keeps each trial's extras as Optuna user attributes, so the Optuna dashboard shows them too.
The keys are the ``ATTR_*`` names; ``TrialRecord`` is the typed view of them, read from a
``FrozenTrial`` with ``TrialRecord.of`` and written as a mapping with ``attrs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from api_schemas import Failure, PastAttempt, SeedResult

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


@dataclass(frozen=True)
class TrialRecord:
    """hps's facts about one trial. Absent facts are ``None`` (or empty): a trial that has not
    finished has no seeds' results yet, a queued one no worker."""

    attempt: int = 1
    worker_id: str | None = None
    device: str | None = None
    seeds: list[SeedResult] = field(default_factory=list)
    failure: Failure | None = None
    retried: bool = False
    history: list[PastAttempt] = field(default_factory=list)
    torch_version: str | None = None
    wall_time_s: float | None = None
    steps_per_second: float | None = None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        failure = attrs.get(ATTR_FAILURE)
        return cls(
            attempt=int(attrs.get(ATTR_ATTEMPT, 1)),
            worker_id=attrs.get(ATTR_WORKER),
            device=attrs.get(ATTR_DEVICE),
            seeds=[SeedResult.model_validate(s) for s in attrs.get(ATTR_SEEDS, [])],
            failure=Failure.model_validate(failure) if failure else None,
            retried=bool(attrs.get(ATTR_RETRIED)),
            history=[PastAttempt.model_validate(h) for h in attrs.get(ATTR_HISTORY, [])],
            torch_version=attrs.get(ATTR_TORCH),
            wall_time_s=attrs.get(ATTR_WALL_TIME),
            steps_per_second=attrs.get(ATTR_STEPS_PER_SECOND),
        )


def started(attempt: int, worker_id: str, device: str) -> dict[str, Any]:
    """The attributes a lease writes: who runs which attempt, on what."""
    return {ATTR_ATTEMPT: attempt, ATTR_WORKER: worker_id, ATTR_DEVICE: device}


def finished(
    seeds: list[SeedResult],
    device: str,
    torch_version: str,
    wall_time_s: float,
    steps_per_second: float,
) -> dict[str, Any]:
    """The attributes a completion writes: the seeds' results and how the run went."""
    return {
        ATTR_SEEDS: [s.model_dump(mode="json") for s in seeds],
        ATTR_DEVICE: device,
        ATTR_TORCH: torch_version,
        ATTR_WALL_TIME: wall_time_s,
        ATTR_STEPS_PER_SECOND: steps_per_second,
    }


def failed(failure: Failure, *, retried: bool) -> dict[str, Any]:
    """The attributes a failure writes; ``retried`` when its parameters are queued again."""
    attrs: dict[str, Any] = {ATTR_FAILURE: failure.model_dump(mode="json")}
    if retried:
        attrs[ATTR_RETRIED] = True
    return attrs


def requeued(record: TrialRecord, failure: Failure) -> dict[str, Any]:
    """The attributes of the queued re-run of ``record``'s failed trial: the next attempt, and
    the history of earlier runs with this one last."""
    past = PastAttempt(
        attempt=record.attempt,
        kind=failure.kind,
        message=failure.message,
        worker_id=record.worker_id,
    )
    history = [*record.history, past]
    return {
        ATTR_ATTEMPT: record.attempt + 1,
        ATTR_HISTORY: [h.model_dump(mode="json") for h in history],
    }
