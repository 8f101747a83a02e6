"""A typed Python client for the hps service, used by the CLI and the workers.

    >>> from hps.client import Client
    >>> with Client("http://127.0.0.1:8000") as hps:
    ...     study = hps.submit(spec)

Errors::

    HpsClientError
    ├── ApiError            the service answered 4xx/5xx; ``.status`` and ``.body`` (ErrorBody)
    └── ServiceUnavailable  no answer after every retry (connection refused, timeouts, 502-504)

Transient failures are retried with exponential backoff and jitter. Requests that are safe to
repeat (reads, reports, completions) are retried on any transport error; the others only when
the connection was never made, so a study is never submitted twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Self

import httpx
from pydantic import BaseModel, TypeAdapter

from api_schemas import (
    ErrorBody,
    IntermediateReport,
    LeaseRequest,
    PruneDecision,
    StudyRead,
    TrialAssignment,
    TrialRead,
    TrialResult,
)

RETRY_STATUS = frozenset({502, 503, 504})


class HpsClientError(Exception):
    pass


class ApiError(HpsClientError):
    def __init__(self, status: int, body: ErrorBody) -> None:
        super().__init__(f"{status} {body.error}: {body.message}")
        self.status = status
        self.body = body


class ServiceUnavailable(HpsClientError):
    pass


class Client:
    """One connection pool to one hps service."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- studies -------------------------------------------------------------------------------

    def submit(self, spec: BaseModel | dict[str, Any]) -> StudyRead:
        """Submit a study (a StudySpec, or the same as a dict, e.g. read from YAML)."""
        body = spec.model_dump(mode="json", by_alias=True) if isinstance(spec, BaseModel) else spec
        return StudyRead.model_validate(self._call("POST", "/v1/studies", body, idempotent=False))

    def study(self, study_id: int) -> StudyRead:
        return StudyRead.model_validate(self._call("GET", f"/v1/studies/{study_id}"))

    def studies(self) -> list[StudyRead]:
        return TypeAdapter(list[StudyRead]).validate_python(self._call("GET", "/v1/studies"))

    def trials(self, study_id: int) -> list[TrialRead]:
        data = self._call("GET", f"/v1/studies/{study_id}/trials")
        return TypeAdapter(list[TrialRead]).validate_python(data)

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

    def report(self, trial_id: int, report: IntermediateReport) -> bool:
        """Send an intermediate value; True means the service wants the trial pruned."""
        data = self._call("POST", f"/v1/trials/{trial_id}/reports", report.model_dump(mode="json"))
        return PruneDecision.model_validate(data).prune

    def complete(self, trial_id: int, result: TrialResult) -> TrialRead:
        data = self._call("POST", f"/v1/trials/{trial_id}/complete", result.model_dump(mode="json"))
        return TrialRead.model_validate(data)

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, *, idempotent: bool = True) -> Any:
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._http.request(method, path, json=body)
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
        return response.json()
    try:
        body = ErrorBody.model_validate(response.json())
    except ValueError:
        body = ErrorBody(error="http_error", message=response.text[:500] or response.reason_phrase)
    raise ApiError(response.status_code, body)
