"""The operator's limits: request bodies (413) and what one study may ask for (422)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from api_schemas import ErrorBody
from api_schemas.studies import MAX_GRID_CELLS, MAX_SEEDS_PER_TRIAL
from service.settings import Settings
from tests.service.conftest import Api, study_spec

LIMIT = 2048


def padded(spec: dict[str, Any], size: int) -> bytes:
    """``spec`` as JSON, padded with whitespace to exactly ``size`` bytes."""
    body = json.dumps(spec).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def assert_too_large(response: Any) -> None:
    assert response.status_code == 413, response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error == "body_too_large"
    assert f"larger than {LIMIT} bytes" in body.message


@pytest.fixture
def small(make_api: Callable[..., Api]) -> Api:
    return make_api(max_body_bytes=LIMIT)


def test_a_body_at_the_limit_is_accepted(small: Api) -> None:
    response = small.post_raw("/v1/studies", padded(study_spec(), LIMIT))
    assert response.status_code == 201, response.text


def test_a_declared_body_over_the_limit_is_413_and_nothing_is_stored(small: Api) -> None:
    response = small.post_raw("/v1/studies", padded(study_spec(), LIMIT + 1))
    assert_too_large(response)
    assert small.sql("SELECT COUNT(*) FROM hps_studies") == [(0,)]


def test_a_streamed_body_over_the_limit_is_413(small: Api) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        body = padded(study_spec(), LIMIT + 1)
        yield from (body[i : i + 256] for i in range(0, len(body), 256))

    response = small.client.post(
        "/v1/studies", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_too_large(response)
    assert small.sql("SELECT COUNT(*) FROM hps_studies") == [(0,)]


def test_every_route_with_a_body_is_limited(small: Api) -> None:
    for path in ("/v1/leases", "/v1/trials/1/reports", "/v1/tokens"):
        assert_too_large(small.post_raw(path, b"{" + b" " * LIMIT + b"}"))


async def _drive(app: Any, declared: int | None, chunks: int) -> tuple[int, int]:
    """One POST straight into the ASGI app: (status, how many body chunks it pulled)."""
    headers = [(b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/studies",
        "raw_path": b"/v1/studies",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 1024, "more_body": pulled < chunks}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status, pulled


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [100 * 1024, None], ids=["content-length", "chunked"])
async def test_a_large_body_is_refused_before_it_is_read_whole(
    small: Api, declared: int | None
) -> None:
    status, pulled = await _drive(small.client.app, declared, chunks=100)
    assert status == 413
    # Declared: not one chunk read. Streamed: stopped at the first chunk past the limit.
    assert pulled == (0 if declared else LIMIT // 1024 + 1)


# --- study limits --------------------------------------------------------------------------


def errors(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error == "invalid_request"
    return {e.field: e.message for e in body.errors}


def test_n_trials_and_seeds_over_the_operators_limits_are_rejected(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(max_trials=5, max_seeds_per_trial=2)
    response = api.client.post("/v1/studies", json=study_spec(n_trials=6, seeds_per_trial=3))
    assert errors(response) == {
        "n_trials": "n_trials is 6; this service allows at most 5",
        "seeds_per_trial": "seeds_per_trial is 3; this service allows at most 2",
    }
    assert api.sql("SELECT COUNT(*) FROM studies") == [(0,)]
    assert api.client.post("/v1/studies", json=study_spec(n_trials=5, seeds_per_trial=2)).is_success


GRID_2x3 = {
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "lr": {"type": "categorical", "choices": [0.1, 0.01, 0.001]},
}


@pytest.mark.parametrize(
    "limits", [{"max_grid_cells": 5}, {"max_trials": 5}], ids=["grid-cap", "trials-cap"]
)
def test_a_grid_over_the_limits_is_rejected_naming_the_search_space(
    make_api: Callable[..., Api], limits: dict[str, int]
) -> None:
    api = make_api(**limits)
    grid = study_spec(search_space=GRID_2x3, sampler={"type": "grid"}, n_trials=None)
    assert errors(api.client.post("/v1/studies", json=grid)) == {
        "search_space": "search_space has 6 grid cells; this service allows at most 5"
    }
    assert api.sql("SELECT COUNT(*) FROM trials") == [(0,)]


def test_a_grid_within_the_limits_is_accepted(make_api: Callable[..., Api]) -> None:
    api = make_api(max_grid_cells=6, max_trials=6)
    grid = study_spec(search_space=GRID_2x3, sampler={"type": "grid"}, n_trials=None)
    assert api.client.post("/v1/studies", json=grid).status_code == 201


@pytest.mark.parametrize(
    "setting",
    [
        {"max_trials": MAX_GRID_CELLS + 1},
        {"max_grid_cells": MAX_GRID_CELLS + 1},
        {"max_seeds_per_trial": MAX_SEEDS_PER_TRIAL + 1},
        {"max_trials": 0},
        {"max_body_bytes": 10},
    ],
    ids=["trials", "grid", "seeds", "zero", "tiny-body"],
)
def test_limits_can_only_tighten_the_contract(setting: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        Settings(**setting)  # type: ignore[arg-type]
