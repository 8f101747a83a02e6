"""Schema-driven fuzzing: every route, with requests drawn from the service's own OpenAPI schema.

Schemathesis turns each operation of ``app.openapi()`` into a Hypothesis strategy, both for
requests the schema allows (positive) and for requests it forbids (negative). Each request goes
to the app in-process, on a temporary SQLite file, with a valid admin token. Whatever arrives,
the service must not answer 5xx; its answer must be one the schema documents, in the shape the
schema gives; and a request the schema forbids must be refused (4xx).

Bounded and repeatable: a fixed number of examples per operation and mode, derandomized.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api_schemas.tokens import Scope, TokenCreate
from service.app import ROUTERS, create_app
from service.settings import Settings
from tests.service.conftest import study_spec

MAX_EXAMPLES = 25
"""Per operation and mode: about 25 s for the whole schema on two cores."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _operations(*, in_schema: bool) -> list[tuple[str, str]]:
    """Every route the service mounts, read off the routers (not the schema, so none can hide)."""
    return sorted(
        (method, route.path)
        for router, _ in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.include_in_schema == in_schema
        for method in route.methods
    )


OPERATIONS = _operations(in_schema=True)
NEGATABLE = [
    (method, route.path)
    for router, check in ROUTERS
    for route in router.routes
    if isinstance(route, APIRoute) and route.include_in_schema
    # Something a request can get wrong: a parameter, a body, or the token.
    if route.dependant.path_params or route.body_field is not None or check is not None
    for method in route.methods
]
HIDDEN = _operations(in_schema=False)
"""Routes kept out of the schema (the dashboard's login form): fuzzed with plain bytes."""


class Fuzzed:
    """The app in-process with a database that has something in it, and an admin token that
    survives the fuzzer revoking it (``DELETE /v1/tokens/{id}`` is one of the operations)."""

    def __init__(self, app: FastAPI, client: TestClient) -> None:
        self.app = app
        self.client = client
        self.secret = ""
        self.ensure_admin()
        self.schema = schemathesis.openapi.from_dict(app.openapi())
        fuzzed = self

        # Schemathesis puts the token on each case itself, so that it knows which cases go
        # without one on purpose (negative tests of the security scheme) and expects a 401.
        @self.schema.auth(refresh_interval=None)
        class AdminToken:
            def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
                fuzzed.ensure_admin()
                return fuzzed.secret

            def set(
                self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext
            ) -> None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    @property
    def as_admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    def ensure_admin(self) -> None:
        if self.secret and self.app.state.tokens.authenticate(self.secret) is not None:
            return
        created = self.app.state.tokens.create(TokenCreate(name="fuzz", scopes=[Scope.ADMIN]))
        self.secret = created.token

    def send(self, case: schemathesis.Case) -> httpx.Response:
        """Send ``case`` through the in-process client, exactly as schemathesis serialized it."""
        kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=str(self.client.base_url))
        headers = dict(kwargs.get("headers") or {})
        if kwargs.get("cookies"):  # as a header: per-request cookies are deprecated in httpx
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
        request: dict[str, Any] = {"headers": headers, "params": kwargs.get("params")}
        if "json" in kwargs:
            request["json"] = kwargs["json"]
        elif kwargs.get("data") is not None:
            request["content"] = kwargs["data"]
        return self.client.request(kwargs["method"], kwargs["url"], **request)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    directory = tmp_path_factory.mktemp("fuzz")
    config = Settings(
        database_url=f"sqlite:///{directory / 'hps.db'}",
        token_file=directory / "hps.token",
        reaper_interval_s=3600.0,
        # Small limits: a valid grid of 100 000 cells would be enqueued cell by cell.
        max_trials=50,
        max_grid_cells=50,
    )
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as client:
        fuzz = Fuzzed(app, client)
        # Ids 1 and 2 exist (one study with a leased trial), so not every id is a 404.
        spec = study_spec(n_trials=3)
        created = client.post("/v1/studies", json=spec, headers=fuzz.as_admin)
        assert created.status_code == 201, created.text
        leased = client.post("/v1/leases", json={"worker_id": "fuzz"}, headers=fuzz.as_admin)
        assert leased.status_code == 200, leased.text
        yield fuzz


def test_the_schema_covers_every_route(fuzzed: Fuzzed) -> None:
    documented = sorted(
        (method.upper(), path)
        for path, item in fuzzed.app.openapi()["paths"].items()
        for method in item
    )
    assert documented == OPERATIONS


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [(*operation, GenerationMode.POSITIVE) for operation in OPERATIONS]
    + [(*operation, GenerationMode.NEGATIVE) for operation in sorted(NEGATABLE)],
)
def test_no_request_gets_a_server_error(
    fuzzed: Fuzzed, method: str, path: str, mode: GenerationMode
) -> None:
    operation = fuzzed.schema[path][method]
    checks = [*CHECKS, negative_data_rejection] if mode == GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        response = fuzzed.send(case)
        try:
            case.validate_response(response, checks=checks)
        finally:
            fuzzed.ensure_admin()

    fuzz()


FORM_FIELDS = st.dictionaries(st.sampled_from(["token", "next", "x"]), st.text(max_size=80))


@pytest.mark.parametrize(("method", "path"), HIDDEN)
def test_no_request_outside_the_schema_gets_a_server_error(
    fuzzed: Fuzzed, method: str, path: str
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES * 2,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        body=st.one_of(FORM_FIELDS.map(lambda f: urlencode(f).encode()), st.binary(max_size=200)),
        content_type=st.sampled_from(
            ["application/x-www-form-urlencoded", "multipart/form-data", "application/json", ""]
        ),
    )
    def fuzz(body: bytes, content_type: str) -> None:
        headers = {"content-type": content_type} if content_type else {}
        headers.update(fuzzed.as_admin)
        response = fuzzed.client.request(method, path, content=body, headers=headers)
        assert response.status_code < 500, response.text

    fuzz()


# --- what the fuzzer found, pinned down ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v1/trials/171256715721604312596480/reports", "/v1/studies/2147483648", "/v1/tokens/0"],
)
def test_an_id_no_column_can_hold_is_422_not_an_overflow(fuzzed: Fuzzed, path: str) -> None:
    method = "DELETE" if path.startswith("/v1/tokens") else "GET"
    body = {"lease_token": "t", "step": 1, "value": 1.0} if path.endswith("reports") else None
    if body is not None:
        method = "POST"
    response = fuzzed.client.request(method, path, json=body, headers=fuzzed.as_admin)
    assert response.status_code == 422, response.text


def test_a_step_no_column_can_hold_is_422(fuzzed: Fuzzed) -> None:
    body = {"lease_token": "t", "step": 2**31, "value": 1.0}
    response = fuzzed.client.post("/v1/trials/1/reports", json=body, headers=fuzzed.as_admin)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["step"]


def test_a_body_that_is_not_utf8_is_422(fuzzed: Fuzzed) -> None:
    headers = {**fuzzed.as_admin, "content-type": "application/json"}
    response = fuzzed.client.post("/v1/studies", content=b"\xff\x17\xfe", headers=headers)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_trial_times_carry_their_zone(fuzzed: Fuzzed) -> None:
    (trial, *_) = fuzzed.client.get("/v1/studies/1/trials", headers=fuzzed.as_admin).json()
    assert datetime.fromisoformat(trial["started_at"]).utcoffset() == timedelta(0)


def test_a_built_in_workload_matches_one_branch_of_the_schema(fuzzed: Fuzzed) -> None:
    # The schema's oneOf must tell a built-in workload from a plugin one (which needs a dot).
    plugin = fuzzed.app.openapi()["components"]["schemas"]["PluginWorkload"]
    pattern = plugin["properties"]["name"]["pattern"]
    assert re.fullmatch(pattern, "mypkg.tiny_lm")
    assert not re.fullmatch(pattern, "postln_transformer")


def test_an_unknown_study_s_report_is_a_json_404(fuzzed: Fuzzed) -> None:
    response = fuzzed.client.get("/v1/studies/999/report", headers=fuzzed.as_admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    operation = fuzzed.app.openapi()["paths"]["/v1/studies/{study_id}/report"]["get"]
    assert list(operation["responses"]["404"]["content"]) == ["application/json"]


# --- past the lease check: bodies drawn from the schema, under a real lease --------------------

WORKER_OPERATIONS = [
    ("POST", "/v1/trials/{trial_id}/reports"),
    ("POST", "/v1/trials/{trial_id}/heartbeat"),
    ("POST", "/v1/trials/{trial_id}/complete"),
]


@pytest.mark.parametrize(("method", "path"), WORKER_OPERATIONS)
def test_no_worker_body_under_a_real_lease_gets_a_server_error(
    fuzzed: Fuzzed, method: str, path: str
) -> None:
    """Issue 16: with random lease tokens every report and completion stopped at 404 or 409,
    so the values in them (1.7e308, "1.0", foreign seeds) were never reached. Here each case
    carries the real token of a live lease on a real trial."""
    spec = study_spec(n_trials=50, seeds_per_trial=2, name="fuzz-leases")
    assert fuzzed.client.post("/v1/studies", json=spec, headers=fuzzed.as_admin).is_success
    operation = fuzzed.schema[path][method]
    held: dict[str, Any] = {}

    def live_lease() -> dict[str, Any]:
        if not held:
            answer = fuzzed.client.post(
                "/v1/leases", json={"worker_id": "fuzz"}, headers=fuzzed.as_admin
            )
            assert answer.status_code == 200, answer.text
            held.update(answer.json())
        return held

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def fuzz(case: schemathesis.Case) -> None:
        lease = live_lease()
        case.path_parameters = {"trial_id": lease["trial_id"]}
        if isinstance(case.body, dict):
            case.body["lease_token"] = lease["lease_token"]
        response = fuzzed.send(case)
        try:
            case.validate_response(response, checks=CHECKS)
        finally:
            fuzzed.ensure_admin()
        if path.endswith("complete") and response.status_code == 200:
            held.clear()  # that trial is finished: the next case leases another

    fuzz()
