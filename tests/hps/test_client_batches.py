"""``Client.lease_batch`` and ``Client.complete_batch``: retried as ``lease`` and ``complete``
are, with network faults injected at the transport seam."""

from __future__ import annotations

import json

import httpx
import pytest

from api_schemas.trials import BatchCompletion, BatchLeaseRequest, BatchResultItem
from hps.client import Client, ServiceUnavailable

REQUEST = BatchLeaseRequest(worker_id="w", max_trials=8)
BODY = BatchCompletion(results=[BatchResultItem(trial_id=3, lease_token="t", state="pruned")])
COMPLETED = {"results": [{"trial_id": 3, "status": 409, "trial": None, "detail": "expired"}]}


def _client(handler: httpx.MockTransport, retries: int = 3) -> Client:
    return Client("http://hps.test", transport=handler, retries=retries, sleep=lambda _: None)


def test_a_batch_lease_is_not_repeated_after_a_read_timeout() -> None:
    # It may have reached the service: repeating it could lease a second batch.
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(ServiceUnavailable):
        client.lease_batch(REQUEST)
    assert len(calls) == 1


def test_a_batch_lease_is_retried_while_the_service_cannot_be_reached() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    with _client(httpx.MockTransport(handler)) as client:
        assert client.lease_batch(REQUEST) is None  # no work
    assert [c.url.path for c in calls] == ["/v1/lease-batches"] * 3
    assert json.loads(calls[0].content) == {"worker_id": "w", "device": "cpu", "max_trials": 8}


def test_a_batch_completion_is_resent_after_a_read_timeout() -> None:
    # Safe: the service answers a resent completion as it answered the first.
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if len(calls) == 2:
            return httpx.Response(503)
        return httpx.Response(200, json=COMPLETED)

    with _client(httpx.MockTransport(handler)) as client:
        done = client.complete_batch(BODY)
    assert [(o.trial_id, o.status, o.detail) for o in done.results] == [(3, 409, "expired")]
    assert len(calls) == 3 and {c.url.path for c in calls} == {"/v1/completions"}
    assert json.loads(calls[-1].content) == BODY.model_dump(mode="json")
