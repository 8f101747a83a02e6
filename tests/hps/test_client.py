"""The client's retries and errors, with network faults injected at the transport seam."""

from __future__ import annotations

import httpx
import pytest

from api_schemas import LeaseRequest
from hps.client import (
    SUBMIT_CELLS_PER_S,
    ApiError,
    Client,
    ServiceUnavailable,
    SubmitUncertain,
    submit_timeout_s,
)

STUDY_LIST: list[object] = []


def _client(handler: httpx.MockTransport, retries: int = 3) -> Client:
    return Client("http://hps.test", transport=handler, retries=retries, sleep=lambda _: None)


def test_connection_errors_are_retried_until_the_service_answers() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=STUDY_LIST)

    with _client(httpx.MockTransport(handler)) as client:
        assert client.studies() == []
    assert calls == ["/v1/studies"] * 3


def test_gateway_errors_are_retried() -> None:
    answers = iter([httpx.Response(503), httpx.Response(502), httpx.Response(200, json=[])])
    with _client(httpx.MockTransport(lambda _: next(answers))) as client:
        assert client.studies() == []


def test_giving_up_raises_service_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with (
        _client(httpx.MockTransport(handler), retries=2) as client,
        pytest.raises(ServiceUnavailable, match="cannot reach"),
    ):
        client.studies()


def test_a_lease_is_not_repeated_after_a_read_timeout() -> None:
    # The request may have reached the service: repeating it could lease a second trial.
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(ServiceUnavailable):
        client.lease(LeaseRequest(worker_id="w"))
    assert len(calls) == 1


def test_no_work_is_none() -> None:
    with _client(httpx.MockTransport(lambda _: httpx.Response(204))) as client:
        assert client.lease(LeaseRequest(worker_id="w")) is None


def test_error_bodies_become_api_errors() -> None:
    body = {"error": "not_found", "message": "study 3 does not exist", "errors": []}
    transport = httpx.MockTransport(lambda _: httpx.Response(404, json=body))
    with _client(transport) as client, pytest.raises(ApiError) as caught:
        client.study(3)
    assert caught.value.status == 404
    assert caught.value.body.message == "study 3 does not exist"


def test_a_non_json_error_is_still_an_api_error() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(500, text="boom"))
    with _client(transport) as client, pytest.raises(ApiError, match="boom"):
        client.study(3)


def test_a_submit_carries_one_idempotency_key_through_its_retries() -> None:
    """Issue 16: a submit that timed out had created its study, and a retry made a second.
    Now a timed-out submit is retried under the same key, which the service answers once."""
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        raise httpx.ReadTimeout("slow", request=request)

    with (
        _client(httpx.MockTransport(handler), retries=2) as client,
        pytest.raises(SubmitUncertain, match="may have been created") as caught,
    ):
        client.submit({"name": "s"})
    assert len(keys) == 3 and len(set(keys)) == 1
    assert caught.value.idempotency_key == keys[0]
    assert f"--idempotency-key {keys[0]}" in str(caught.value)


def test_a_submit_sends_the_key_it_is_given() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        return httpx.Response(503)

    with _client(httpx.MockTransport(handler), retries=1) as client, pytest.raises(ApiError):
        client.submit({"name": "s"}, idempotency_key="mine")
    assert seen == ["mine", "mine"]


def test_the_submit_timeout_grows_with_the_grid() -> None:
    grid = {
        "name": "g",
        "workload": {"name": "preln_transformer"},
        "sampler": {"type": "grid"},
        "search_space": {
            "optimizer": {"type": "fixed", "value": "adam"},
            "lr": {"type": "categorical", "choices": [10.0**-i for i in range(1, 101)]},
            "warmup_steps": {"type": "int", "low": 0, "high": 999},
        },
    }
    assert submit_timeout_s(grid) == 30 + 100_000 / SUBMIT_CELLS_PER_S
    assert submit_timeout_s({"name": "not a spec"}) == 30
