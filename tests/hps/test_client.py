"""The client's retries and errors, with network faults injected at the transport seam."""

from __future__ import annotations

import httpx
import pytest

from api_schemas import LeaseRequest
from hps.client import ApiError, Client, ServiceUnavailable

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
