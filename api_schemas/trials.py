"""The worker protocol: lease a trial, report progress, complete it; and trial reads.

Every float a worker sends must be finite: a diverged seed is reported as ``diverged: true``
with its chance-level loss, never as NaN or Inf (those are rejected with 422). Losses, reported
and final, must also lie within ``±MAX_LOSS``: a value outside is refused with 422, not
clipped (the worker clips at the chance loss, so a value that large is a bug worth seeing).
Numbers are strict: ``"1.0"`` or ``true`` is no loss.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Protocol, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from api_schemas.search_space import Scalar
from api_schemas.workloads import Workload

MAX_LOSS = 1e9
"""The largest loss (in absolute value) a worker may report. Workers clip at the chance loss
(ln(vocab), a few nats) and call 10x that diverged, so no honest value comes near; the bound
keeps means, plots and sums of any stored values finite (1.7e308 overflowed ``fmean``)."""
MAX_ID = 2**31 - 1
"""The largest trial id: ids are the database's 32-bit INTEGER keys."""
MAX_SEED_ID = 2**31 - 1
"""Seeds, like steps, are 31-bit numbers (see ``api_schemas.studies.MAX_SEED``)."""

Loss = Annotated[StrictFloat, Field(ge=-MAX_LOSS, le=MAX_LOSS)]


NO_NUL = r"^[^\x00]*$"
"""A string without NUL characters (PostgreSQL's text cannot hold them)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LeaseRequest(_Model):
    """A worker asking for work."""

    # No NUL characters: PostgreSQL cannot store them in text, so both backends refuse them.
    worker_id: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, description="host:pid or similar"
    )
    device: str = Field(default="cpu", max_length=100, pattern=NO_NUL, description="e.g. cpu")


class TrialAssignment(_Model):
    """One trial to train: its parameters, workload, paired seeds and the lease that covers it."""

    trial_id: int
    study_id: int
    trial_number: int
    lease_token: str
    lease_expires_at: datetime
    attempt: int = Field(description="1 for the first run of these parameters")
    params: dict[str, Scalar]
    workload: Workload
    seeds: list[int]
    metric: Literal["loss", "accuracy"]
    time_limit_s: float
    lease_seconds: float | None = Field(
        default=None,
        gt=0,
        description="how long the lease lasts after each renewal; a worker sends a heartbeat "
        "every third of it while it trains. Absent from older services: derive it from "
        "lease_expires_at",
    )


class Heartbeat(_Model):
    """A worker still training this trial: renews the lease without a report.

    A worker sends one every ``lease_seconds / 3`` while it holds a trial, so a long stretch
    between reports (a slow step, a long evaluation) does not lose the lease.
    """

    lease_token: str


class LeaseRenewal(BaseModel):
    """The lease was renewed: it now lasts until ``lease_expires_at``."""

    lease_expires_at: datetime


class IntermediateReport(_Model):
    """The mean over seeds of the training loss at ``step``; renews the lease."""

    lease_token: str
    # Bounded by the database's INTEGER step column (32 bits on PostgreSQL).
    step: StrictInt = Field(ge=0, le=2**31 - 1)
    value: Loss


class PruneDecision(BaseModel):
    prune: bool


class SeedResult(_Model):
    """How one seed's run ended."""

    seed: StrictInt = Field(ge=0, le=MAX_SEED_ID)
    loss: Loss = Field(description="final held-out loss, clipped at the chance loss")
    accuracy: StrictFloat | None = Field(default=None, ge=0, le=1)
    diverged: bool = Field(description="loss became non-finite or collapsed to chance")
    steps: StrictInt = Field(ge=0, le=2**31 - 1, description="optimizer steps taken")


class FailureKind(StrEnum):
    INTERRUPTED = "interrupted"
    """The worker stopped (signal, shutdown) before the trial finished."""
    TIME_LIMIT = "time_limit"
    ERROR = "error"
    """The workload raised: a bug or a bad configuration, not a property of the optimizer."""
    LEASE_EXPIRED = "lease_expired"


class Failure(_Model):
    kind: FailureKind
    message: str = Field(max_length=4000)


class PastAttempt(BaseModel):
    """An earlier run of the same parameters that the service failed and queued again."""

    attempt: int
    kind: FailureKind
    message: str
    worker_id: str | None = None


class TrialResult(_Model):
    """A trial's outcome, sent once by the worker that holds the lease (resending is harmless)."""

    lease_token: str
    state: Literal["completed", "pruned", "failed"]
    seeds: list[SeedResult] = Field(default_factory=list, max_length=64)
    failure: Failure | None = None
    device: str = Field(default="cpu", max_length=100)
    torch_version: str = Field(default="", max_length=100)
    wall_time_s: float = Field(default=0.0, ge=0)
    steps_per_second: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.state == "failed" and self.failure is None:
            raise ValueError("failure is required when state is 'failed'")
        if self.state != "failed" and self.failure is not None:
            raise ValueError("failure is only allowed when state is 'failed'")
        if self.state == "completed" and not self.seeds:
            raise ValueError("seeds must list every seed's result when state is 'completed'")
        return self


class TrialState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"

    def is_finished(self) -> bool:
        return self in (TrialState.COMPLETED, TrialState.PRUNED, TrialState.FAILED)


class TrialRead(BaseModel):
    """A trial as stored."""

    id: int
    study_id: int
    number: int
    state: TrialState
    params: dict[str, Scalar]
    value: float | None = None
    seeds: list[SeedResult] = Field(default_factory=list)
    failure: Failure | None = None
    attempt: int = 1
    history: list[PastAttempt] = Field(
        default_factory=list, description="earlier runs of these parameters, oldest first"
    )
    worker_id: str | None = None
    device: str | None = None
    steps_per_second: float | None = None
    last_step: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


MAX_BATCH = 64
"""The most trials one batch lease or batch completion may carry."""


class BatchLeaseRequest(LeaseRequest):
    """A worker asking for up to ``max_trials`` trials at once, to train them together."""

    max_trials: StrictInt = Field(
        ge=1,
        le=MAX_BATCH,
        description="the most trials to lease; fewer come back when the study has fewer left",
    )


class LeaseBatch(BaseModel):
    """Trials leased together: one to ``max_trials`` of them, all of one study and workload.

    Each carries its own lease (token, expiry): renew, report and complete each one as if it
    had been leased alone, or complete them together with a ``BatchCompletion``.
    """

    trials: list[TrialAssignment]


class BatchResultItem(TrialResult):
    """One trial's outcome in a batch completion: the single completion's body and its id."""

    # Bounded as the path's id is: a number no column holds is a 422, not a driver overflow.
    trial_id: StrictInt = Field(ge=1, le=MAX_ID, description="the trial's id, as leased")


class BatchCompletion(_Model):
    """Several trials' outcomes sent together; each is judged as its single completion would be.

    The trial ids must be distinct: one outcome per trial.
    """

    results: list[BatchResultItem] = Field(min_length=1, max_length=MAX_BATCH)

    @field_validator("results")
    @classmethod
    def _distinct(cls, results: list[BatchResultItem]) -> list[BatchResultItem]:
        return _distinct_trials(results)


class _OfTrial(Protocol):
    trial_id: int


_Item = TypeVar("_Item", bound=_OfTrial)


def _distinct_trials(items: list[_Item]) -> list[_Item]:
    """``items`` if no trial is listed twice (one outcome per trial), else a ValueError."""
    seen: set[int] = set()
    for item in items:
        if item.trial_id in seen:
            raise ValueError(f"trial_id {item.trial_id} is listed more than once")
        seen.add(item.trial_id)
    return items


class BatchOutcome(BaseModel):
    """What the single ``POST /v1/trials/{id}/complete`` would have answered for one item."""

    trial_id: int
    status: int = Field(description="that completion's HTTP status: 200, 404, 409, 422, ...")
    trial: TrialRead | None = Field(default=None, description="the trial as stored, on 200")
    detail: str | None = Field(default=None, description="why not, otherwise")


class BatchCompleted(BaseModel):
    """Every item's outcome, in the order of the request."""

    results: list[BatchOutcome]


class BatchReportItem(IntermediateReport):
    """One trial's report in a batch: the single report's body and the trial's id."""

    trial_id: StrictInt = Field(ge=1, le=MAX_ID, description="the trial's id, as leased")


class BatchReport(_Model):
    """Intermediate values of several trials sent together (trials trained as one stack report
    at the same steps); each is judged as its single report would be. Distinct trial ids."""

    reports: list[BatchReportItem] = Field(min_length=1, max_length=MAX_BATCH)

    @field_validator("reports")
    @classmethod
    def _distinct(cls, reports: list[BatchReportItem]) -> list[BatchReportItem]:
        return _distinct_trials(reports)


class ReportOutcome(BaseModel):
    """What the single ``POST /v1/trials/{id}/reports`` would have answered for one item."""

    trial_id: int
    status: int = Field(description="that report's HTTP status: 200, 404, 409, ...")
    prune: bool | None = Field(default=None, description="whether to prune the trial, on 200")
    detail: str | None = Field(default=None, description="why not, otherwise")


class BatchReported(BaseModel):
    """Every item's outcome, in the order of the request."""

    results: list[ReportOutcome]
