"""HTTP routes: parse, call one domain function, return a schema. Nothing else lives here.

Each route is ``async`` and runs its domain call in a worker thread itself (``in_thread``): the
domain blocks on the database, and one thread hop is what that needs. A plain ``def`` route
takes two, since FastAPI then validates the returned model in a second one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status
from starlette.concurrency import run_in_threadpool as in_thread

from api_schemas import (
    ErrorBody,
    Heartbeat,
    IntermediateReport,
    LeaseRenewal,
    LeaseRequest,
    PruneDecision,
    StudyRead,
    StudySpec,
    TrialAssignment,
    TrialRead,
    TrialResult,
)
from api_schemas.analysis import Analysis
from api_schemas.tokens import TokenCreate, TokenCreated, TokenRead
from api_schemas.trials import (
    BatchCompleted,
    BatchCompletion,
    BatchLeaseRequest,
    BatchReport,
    BatchReported,
    LeaseBatch,
)
from service.deps import Id, LeasesDep, NotesDep, StudiesDep, TokensDep

_errors: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no token, or an unknown or revoked one"},
    403: {"model": ErrorBody, "description": "the token lacks the scope this route needs"},
    404: {"model": ErrorBody, "description": "unknown id"},
    413: {"model": ErrorBody, "description": "the body is larger than HPS_MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "invalid request; each error names its field"},
}
_lease_errors: dict[int | str, dict[str, object]] = {
    **_errors,
    409: {"model": ErrorBody, "description": "the lease expired or belongs to someone else"},
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="any unique string (a UUID); a retry with the same key creates nothing new",
    ),
]

studies = APIRouter(prefix="/v1/studies", tags=["studies"], responses=_errors)
trials = APIRouter(prefix="/v1", tags=["workers"], responses=_lease_errors)
tokens = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=_errors)
health = APIRouter(prefix="/v1", tags=["health"])


@studies.post("", status_code=status.HTTP_201_CREATED)
async def create_study(
    spec: StudySpec, domain: StudiesDep, idempotency_key: IdempotencyKey = None
) -> StudyRead:
    """Submit a study. It is validated whole; an invalid one is rejected and nothing is stored.

    With an ``Idempotency-Key``, sending the same request again returns the study the first one
    created (201 both times); the same key with another spec is a 422.
    """
    return await in_thread(domain.create, spec, idempotency_key=idempotency_key)


@studies.get("")
async def list_studies(domain: StudiesDep) -> list[StudyRead]:
    return await in_thread(domain.all)


@studies.get("/{study_id}")
async def get_study(study_id: Id, domain: StudiesDep) -> StudyRead:
    """A study with its trial counts and its best trial so far."""
    return await in_thread(domain.read, study_id)


@studies.get("/{study_id}/trials")
async def list_trials(study_id: Id, domain: StudiesDep) -> list[TrialRead]:
    return await in_thread(domain.trials, study_id)


@studies.post("/{study_id}/cancel")
async def cancel_study(study_id: Id, domain: StudiesDep) -> StudyRead:
    """Stop a study: nothing more is leased; running trials are pruned at their next report.

    Cancelling a study that already ended changes nothing and returns it as it is.
    """
    return await in_thread(domain.cancel, study_id)


@studies.post("/{study_id}/note")
async def write_note(study_id: Id, domain: NotesDep) -> Analysis:
    """Write the study's answer (verdict, statement, per-arm table) into its optuna-dashboard
    note now, from the trials there are; returns the analysis it wrote. A finished study's
    note is written by the service itself."""
    return await in_thread(domain.write, study_id)


@trials.post(
    "/leases",
    response_model=TrialAssignment,
    responses={204: {"description": "no work right now; ask again later"}},
)
async def lease_trial(request: LeaseRequest, domain: LeasesDep) -> TrialAssignment | Response:
    """A worker asks for a trial to train."""
    assignment = await in_thread(domain.lease, request)
    return assignment if assignment is not None else Response(status_code=204)


@trials.post(
    "/lease-batches",
    response_model=LeaseBatch,
    responses={204: {"description": "no work right now; ask again later"}},
)
async def lease_batch(request: BatchLeaseRequest, domain: LeasesDep) -> LeaseBatch | Response:
    """A worker asks for up to ``max_trials`` trials to train together: all of one study and
    one workload, each under its own lease, drawn as that many single leases would draw them.
    Fewer come back when the study has fewer left."""
    batch = await in_thread(domain.lease_batch, request)
    return batch if batch is not None else Response(status_code=204)


@trials.post("/trials/{trial_id}/reports")
async def report(trial_id: Id, body: IntermediateReport, domain: LeasesDep) -> PruneDecision:
    """Record an intermediate value; renews the lease; says whether to prune the trial."""
    return PruneDecision(prune=await in_thread(domain.report, trial_id, body))


@trials.post("/reports")
async def report_batch(body: BatchReport, domain: LeasesDep) -> BatchReported:
    """Record several trials' intermediate values at once (trials trained together report at
    the same steps). Each item is answered, in order, with the status and prune decision that
    its own ``POST /v1/trials/{id}/reports`` would give (a stale lease is that item's 409);
    the valid ones are recorded together, whatever the others."""
    return await in_thread(domain.report_batch, body)


@trials.post("/trials/{trial_id}/heartbeat")
async def heartbeat(trial_id: Id, body: Heartbeat, domain: LeasesDep) -> LeaseRenewal:
    """Renew the lease while training between reports (send one every lease_seconds / 3)."""
    expires_at = await in_thread(domain.heartbeat, trial_id, body.lease_token)
    return LeaseRenewal(lease_expires_at=expires_at)


@trials.post("/trials/{trial_id}/complete")
async def complete(trial_id: Id, body: TrialResult, domain: LeasesDep) -> TrialRead:
    """Finish a trial. Sending the same result again returns the same answer."""
    return await in_thread(domain.complete, trial_id, body)


@trials.post("/completions")
async def complete_batch(body: BatchCompletion, domain: LeasesDep) -> BatchCompleted:
    """Finish several trials at once. Each item is answered, in order, with the status and
    trial that its own ``POST /v1/trials/{id}/complete`` would give (a stale lease is that
    item's 409); the valid ones are recorded together, whatever the others."""
    return await in_thread(domain.complete_batch, body)


@tokens.post("", status_code=status.HTTP_201_CREATED)
async def create_token(request: TokenCreate, domain: TokensDep) -> TokenCreated:
    """Create a token. Its secret is in this answer only: the service keeps just a hash."""
    return await in_thread(domain.create, request)


@tokens.get("")
async def list_tokens(domain: TokensDep) -> list[TokenRead]:
    """Every token, revoked ones included; never a secret."""
    return await in_thread(domain.all)


@tokens.delete("/{token_id}")
async def revoke_token(token_id: Id, domain: TokensDep) -> TokenRead:
    """Revoke a token: from now on it is refused (401). Revoking it again changes nothing."""
    return await in_thread(domain.revoke, token_id)


@health.get("/health")
async def get_health() -> dict[str, str]:
    return {"status": "ok"}
