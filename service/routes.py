"""HTTP routes: parse, call one domain function, return a schema. Nothing else lives here."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api_schemas import (
    ErrorBody,
    IntermediateReport,
    LeaseRequest,
    PruneDecision,
    StudyRead,
    StudySpec,
    TrialAssignment,
    TrialRead,
    TrialResult,
)
from service.deps import LeasesDep, StudiesDep

_errors: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody, "description": "unknown id"},
    422: {"model": ErrorBody, "description": "invalid request; each error names its field"},
}
_lease_errors: dict[int | str, dict[str, object]] = {
    **_errors,
    409: {"model": ErrorBody, "description": "the lease expired or belongs to someone else"},
}

studies = APIRouter(prefix="/v1/studies", tags=["studies"], responses=_errors)
trials = APIRouter(prefix="/v1", tags=["workers"], responses=_lease_errors)
health = APIRouter(prefix="/v1", tags=["health"])


@studies.post("", status_code=status.HTTP_201_CREATED)
def create_study(spec: StudySpec, domain: StudiesDep) -> StudyRead:
    """Submit a study. It is validated whole; an invalid one is rejected and nothing is stored."""
    return domain.create(spec)


@studies.get("")
def list_studies(domain: StudiesDep) -> list[StudyRead]:
    return domain.all()


@studies.get("/{study_id}")
def get_study(study_id: int, domain: StudiesDep) -> StudyRead:
    """A study with its trial counts and its best trial so far."""
    return domain.read(study_id)


@studies.get("/{study_id}/trials")
def list_trials(study_id: int, domain: StudiesDep) -> list[TrialRead]:
    return domain.trials(study_id)


@trials.post(
    "/leases",
    response_model=TrialAssignment,
    responses={204: {"description": "no work right now; ask again later"}},
)
def lease_trial(request: LeaseRequest, domain: LeasesDep) -> TrialAssignment | Response:
    """A worker asks for a trial to train."""
    assignment = domain.lease(request)
    return assignment if assignment is not None else Response(status_code=204)


@trials.post("/trials/{trial_id}/reports")
def report(trial_id: int, body: IntermediateReport, domain: LeasesDep) -> PruneDecision:
    """Record an intermediate value; renews the lease; says whether to prune the trial."""
    return PruneDecision(prune=domain.report(trial_id, body))


@trials.post("/trials/{trial_id}/complete")
def complete(trial_id: int, body: TrialResult, domain: LeasesDep) -> TrialRead:
    """Finish a trial. Sending the same result again returns the same answer."""
    return domain.complete(trial_id, body)


@health.get("/health")
def get_health() -> dict[str, str]:
    return {"status": "ok"}
