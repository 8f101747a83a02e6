"""A typed Python client for the hps service, used by the CLI and the workers.

    >>> from hps.client import Client
    >>> with Client("http://127.0.0.1:8000", token="hps_...") as hps:
    ...     study = hps.submit(spec)

The token is sent as ``Authorization: Bearer``; ``hps.credentials.resolve_token`` finds the
one the CLI would use (``HPS_TOKEN``, else the token file). Neither ``repr`` shows it.

Errors::

    HpsClientError
    ├── ApiError            the service answered 4xx/5xx; ``.status`` and ``.body`` (ErrorBody)
    └── ServiceUnavailable  no answer after every retry (connection refused, timeouts, 502-504)
        └── SubmitUncertain  a submit got no answer: the study may exist (``.idempotency_key``)

Transient failures are retried with exponential backoff and jitter. Requests that are safe to
repeat (reads, reports, completions) are retried on any transport error; the others only when
the connection was never made. A submit is made safe to repeat: it carries an
``Idempotency-Key`` (a new one per ``submit`` call unless given), so a retry after a timeout
returns the study the first attempt created instead of creating a second one. Its timeout
grows with the grid it queues (``submit_timeout_s``).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

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
from api_schemas.tokens import Scope, TokenCreate, TokenCreated, TokenRead
from api_schemas.trials import (
    BatchCompleted,
    BatchCompletion,
    BatchLeaseRequest,
    BatchReport,
    BatchReported,
    LeaseBatch,
)

RETRY_STATUS = frozenset({502, 503, 504})
SUBMIT_CELLS_PER_S = 2000
"""Grid cells a service queues per second at the least (measured: 100,000 in 4 s on a loaded
two-core machine, ~25,000/s); the submit timeout allows for a slower one."""


def submit_timeout_s(spec: BaseModel | dict[str, Any], base_s: float = 30.0) -> float:
    """How long to wait for a submit: ``base_s``, plus the time to queue a grid's cells."""
    try:
        valid = spec if isinstance(spec, StudySpec) else StudySpec.model_validate(spec)
    except ValidationError:
        return base_s  # the service will say what is wrong, at once
    cells = (valid.n_trials or 0) if valid.sampler.type == "grid" else 0
    return base_s + cells / SUBMIT_CELLS_PER_S


class HpsClientError(Exception):
    pass


class ApiError(HpsClientError):
    def __init__(self, status: int, body: ErrorBody) -> None:
        super().__init__(f"{status} {body.error}: {body.message}")
        self.status = status
        self.body = body


class ServiceUnavailable(HpsClientError):
    pass


class SubmitUncertain(ServiceUnavailable):
    """No attempt of a submit was answered, but one may have arrived: the study may exist.
    Submitting again with ``idempotency_key`` returns it, or creates it if it does not."""

    def __init__(self, message: str, idempotency_key: str) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


KEEPALIVE_EXPIRY_S = 60.0
"""How long an idle connection is kept for the next request: a worker's reports and heartbeats
come seconds to a minute apart. Under the service's own keep-alive (``HPS_KEEP_ALIVE_S``,
65 s), so that the client drops a connection before the service closes it under a request."""


class Client:
    """One connection pool to one hps service."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        # The token lives only in the headers, which httpx never shows in a repr.
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout_s,
            transport=transport,
            headers=headers,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S),
        )
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep

    def __repr__(self) -> str:
        authenticated = "Authorization" in self._http.headers
        return f"<Client {self.url}{' with a token' if authenticated else ''}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- studies -------------------------------------------------------------------------------

    def submit(
        self, spec: BaseModel | dict[str, Any], *, idempotency_key: str | None = None
    ) -> StudyRead:
        """Submit a study (a StudySpec, or the same as a dict, e.g. read from YAML).

        Retried like a read, under one ``Idempotency-Key`` (``idempotency_key``, or a new one):
        however many attempts reach the service, one study is created. When none is answered,
        ServiceUnavailable says the study may exist and names the key to submit it again with.
        """
        body = spec.model_dump(mode="json", by_alias=True) if isinstance(spec, BaseModel) else spec
        key = idempotency_key or str(uuid.uuid4())
        try:
            data = self._call(
                "POST",
                "/v1/studies",
                body,
                headers={"Idempotency-Key": key},
                timeout_s=max(self._timeout_s, submit_timeout_s(body, self._timeout_s)),
            )
        except ServiceUnavailable as error:
            # Even "cannot reach" on the last attempt leaves it open: an earlier one may have
            # timed out after the service had the request.
            raise SubmitUncertain(
                f"{error}. The study may have been created: submit it again with "
                f"--idempotency-key {key} to get it (or create it) without making a second one",
                key,
            ) from error
        return StudyRead.model_validate(data)

    def study(self, study_id: int) -> StudyRead:
        return StudyRead.model_validate(self._call("GET", f"/v1/studies/{study_id}"))

    def studies(self) -> list[StudyRead]:
        return TypeAdapter(list[StudyRead]).validate_python(self._call("GET", "/v1/studies"))

    def cancel(self, study_id: int) -> StudyRead:
        """Stop a study; its trials so far are kept."""
        return StudyRead.model_validate(self._call("POST", f"/v1/studies/{study_id}/cancel"))

    def trials(self, study_id: int) -> list[TrialRead]:
        data = self._call("GET", f"/v1/studies/{study_id}/trials")
        return TypeAdapter(list[TrialRead]).validate_python(data)

    def analysis(self, study_id: int) -> Analysis:
        """The study's warmup-sensitivity analysis and verdict."""
        return Analysis.model_validate(self._call("GET", f"/v1/studies/{study_id}/analysis"))

    def report_html(self, study_id: int) -> str:
        """The study's report: a self-contained HTML page."""
        page: str = self._call("GET", f"/v1/studies/{study_id}/report")
        return page

    def health(self) -> bool:
        try:
            return self._http.get("/v1/health").status_code == 200
        except httpx.TransportError:
            return False

    # -- workers -------------------------------------------------------------------------------

    def lease(self, request: LeaseRequest) -> TrialAssignment | None:
        """A trial to train, or None when the service has no work right now."""
        data = self._call("POST", "/v1/leases", request.model_dump(mode="json"), idempotent=False)
        return None if data is None else TrialAssignment.model_validate(data)

    def lease_batch(self, request: BatchLeaseRequest) -> LeaseBatch | None:
        """Up to ``request.max_trials`` trials of one study and workload to train together,
        or None when the service has no work right now. Retried as ``lease`` is."""
        body = request.model_dump(mode="json")
        data = self._call("POST", "/v1/lease-batches", body, idempotent=False)
        return None if data is None else LeaseBatch.model_validate(data)

    def report(self, trial_id: int, report: IntermediateReport) -> bool:
        """Send an intermediate value; True means the service wants the trial pruned."""
        data = self._call("POST", f"/v1/trials/{trial_id}/reports", report.model_dump(mode="json"))
        return PruneDecision.model_validate(data).prune

    def report_batch(self, body: BatchReport) -> BatchReported:
        """Send several trials' intermediate values at once; each item's outcome is what
        ``report`` would have answered for it (its status and prune decision, or why not).
        Retried as ``report`` is: a resent step keeps its first value."""
        data = self._call("POST", "/v1/reports", body.model_dump(mode="json"))
        return BatchReported.model_validate(data)

    def heartbeat(self, trial_id: int, lease_token: str) -> datetime:
        """Renew the lease on a trial still training; returns when it now expires.

        Retried once only: the next heartbeat is a third of a lease away anyway, and a
        heartbeat thread stuck in a long backoff could not stop promptly with its trial.
        """
        body = Heartbeat(lease_token=lease_token).model_dump(mode="json")
        data = self._call("POST", f"/v1/trials/{trial_id}/heartbeat", body, retries=1)
        return LeaseRenewal.model_validate(data).lease_expires_at

    def complete(self, trial_id: int, result: TrialResult) -> TrialRead:
        data = self._call("POST", f"/v1/trials/{trial_id}/complete", result.model_dump(mode="json"))
        return TrialRead.model_validate(data)

    def complete_batch(self, body: BatchCompletion) -> BatchCompleted:
        """Send several trials' results at once; each item's outcome is what ``complete``
        would have answered for it (its status and trial, or why not). Retried as ``complete``
        is: a resent completion returns the same answer."""
        data = self._call("POST", "/v1/completions", body.model_dump(mode="json"))
        return BatchCompleted.model_validate(data)

    # -- tokens (admin) ------------------------------------------------------------------------

    def create_token(self, name: str, scopes: list[Scope]) -> TokenCreated:
        """A new token; the answer holds its secret, which the service never shows again."""
        body = TokenCreate(name=name, scopes=scopes).model_dump(mode="json")
        return TokenCreated.model_validate(self._call("POST", "/v1/tokens", body, idempotent=False))

    def tokens(self) -> list[TokenRead]:
        return TypeAdapter(list[TokenRead]).validate_python(self._call("GET", "/v1/tokens"))

    def revoke_token(self, token_id: int) -> TokenRead:
        return TokenRead.model_validate(self._call("DELETE", f"/v1/tokens/{token_id}"))

    # -- plumbing ------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool = True,
        retries: int | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        retries = self._retries if retries is None else min(retries, self._retries)
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s)
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                response = self._http.request(
                    method, path, json=body, headers=headers, timeout=timeout
                )
            except httpx.ConnectError as error:
                if last:
                    raise ServiceUnavailable(f"cannot reach {self.url}: {error}") from error
            except httpx.TransportError as error:
                if last or not idempotent:
                    raise ServiceUnavailable(f"{method} {path} failed: {error}") from error
            else:
                if response.status_code not in RETRY_STATUS or last:
                    return _decode(response)
            self._sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int) -> float:
        # Full jitter: many workers that lost the service at once do not return in lockstep.
        return random.uniform(0, min(self._max_backoff_s, self._backoff_s * 2**attempt))


def _decode(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    if response.is_success:
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return response.json() if is_json else response.text
    try:
        body = ErrorBody.model_validate(response.json())
    except ValueError:
        body = ErrorBody(error="http_error", message=response.text[:500] or response.reason_phrase)
    raise ApiError(response.status_code, body)
