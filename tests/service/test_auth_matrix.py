"""Every route, every method: 401 without a token or with a bogus one, 403 with a token of the
wrong scope, through with the right one.

The routes are found by walking ``app.routes``, not listed here: a route added later is checked
as soon as it exists, and one that answers without a check (or a mount this test does not know
how to check, like a dashboard) fails the test until it is guarded or made public below.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI

from api_schemas import ErrorBody
from api_schemas.tokens import Scope, allows
from service.auth import Require
from tests.service.conftest import Api, bearer

PUBLIC = frozenset(
    {"/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    | {"/dashboard/login", "/dashboard/logout"}
)
"""Routes anyone may call: liveness for load balancers, the API's own documentation, and the
dashboard's login form (it checks the token it is given)."""

WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class Guarded:
    method: str
    path: str
    needed: Scope

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.needed})"


def routes(app: FastAPI) -> list[Any]:
    """The app's routes, each with the dependencies it was included with.

    Recent FastAPI keeps included routers whole in ``app.routes`` and resolves them lazily;
    ``iter_route_contexts`` flattens them. Older FastAPI has flat routes already.
    """
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(app.routes) if flatten is None else list(flatten(app.routes))


def walk(app: FastAPI) -> tuple[list[Guarded], list[str]]:
    """Every (method, path) of ``app`` with the scope it needs; and the routes with no check."""
    guarded: list[Guarded] = []
    unguarded: list[str] = []
    for route in routes(app):
        path = getattr(route, "path", repr(route))
        if path in PUBLIC:
            continue
        dependencies = getattr(route, "dependencies", None) or []
        checks = [d.dependency for d in dependencies if isinstance(d.dependency, Require)]
        # A mount (the dashboard) is guarded by its ASGI app, which exposes its check.
        mounted = getattr(getattr(route, "app", None), "check", None)
        checks += [mounted] if isinstance(mounted, Require) else []
        if not checks:
            kind = type(getattr(route, "original_route", route)).__name__
            unguarded.append(f"{kind} {path}")
            continue
        (check,) = checks
        # A mount takes every method: try a read and a write.
        methods = getattr(route, "methods", None) or ["GET", "POST"]
        guarded += [Guarded(m, path, check.needed(m)) for m in sorted(methods)]
    return guarded, unguarded


def url(path: str) -> str:
    """The path with every parameter set to an id that does not exist."""
    return re.sub(r"\{[^}]+\}", "999999", path)


@pytest.fixture
def anonymous(make_api: Callable[..., Api]) -> Api:
    """A service whose test client sends no token unless asked to."""
    api = make_api()
    del api.client.headers["Authorization"]
    return api


def test_every_route_is_guarded_or_public(anonymous: Api) -> None:
    guarded, unguarded = walk(anonymous.client.app)  # type: ignore[arg-type]
    assert unguarded == [], "routes without an auth check: add them to a router in service.app"
    # The walk did find the routes: the ones known today are all there, with their scopes.
    assert {
        ("GET", "/v1/studies", Scope.READ),
        ("POST", "/v1/studies", Scope.SUBMIT),
        ("GET", "/v1/studies/{study_id}/trials", Scope.READ),
        ("POST", "/v1/leases", Scope.WORKER),
        ("POST", "/v1/lease-batches", Scope.WORKER),
        ("POST", "/v1/completions", Scope.WORKER),
        ("POST", "/v1/trials/{trial_id}/reports", Scope.WORKER),
        ("POST", "/v1/trials/{trial_id}/complete", Scope.WORKER),
        ("POST", "/v1/tokens", Scope.ADMIN),
        ("GET", "/v1/tokens", Scope.ADMIN),
        ("DELETE", "/v1/tokens/{token_id}", Scope.ADMIN),
        ("GET", "/dashboard", Scope.READ),
        ("POST", "/api", Scope.READ),
    } <= {(g.method, g.path, g.needed) for g in guarded}


def test_every_route_refuses_a_missing_bogus_or_wrong_token(make_api: Callable[..., Api]) -> None:
    api = make_api()
    guarded, _ = walk(api.client.app)  # type: ignore[arg-type]
    # For each scope: a token with exactly it, and one with every scope that does not grant it.
    right = {scope: api.mint(scope, name=f"only-{scope}") for scope in Scope}
    wrong = {
        scope: api.mint(*[s for s in Scope if not allows([s], scope)], name=f"not-{scope}")
        for scope in Scope
    }
    del api.client.headers["Authorization"]

    failures: list[str] = []

    def expect(route: Guarded, token: str | None, ok: Callable[[int], bool], what: str) -> None:
        headers = {} if token is None else bearer(token)
        body: dict[str, Any] | None = {} if route.method in WITH_BODY else None
        response = api.client.request(route.method, url(route.path), json=body, headers=headers)
        if not ok(response.status_code):
            failures.append(f"{route} {what}: {response.status_code} {response.text[:200]}")
            return
        if response.status_code in (401, 403):
            error = ErrorBody.model_validate(response.json())
            expected = "unauthenticated" if response.status_code == 401 else "forbidden"
            if error.error != expected:
                failures.append(f"{route} {what}: error code {error.error!r}")
        if response.status_code == 401 and response.headers.get("www-authenticate") != "Bearer":
            failures.append(f"{route} {what}: 401 without 'WWW-Authenticate: Bearer'")

    for route in guarded:
        expect(route, None, lambda status: status == 401, "without a token")
        expect(route, "hps_not-a-real-token", lambda status: status == 401, "with a bogus token")
        expect(route, wrong[route.needed], lambda status: status == 403, "with a wrong scope")
        expect(route, right[route.needed], lambda s: s not in (401, 403), "with its scope")
    assert failures == []


def test_public_routes_answer_without_a_token(anonymous: Api) -> None:
    for path in ("/v1/health", "/openapi.json", "/docs", "/redoc"):
        assert anonymous.client.get(path).status_code == 200, path


def test_openapi_declares_the_bearer_scheme_on_guarded_routes_only(anonymous: Api) -> None:
    schema = anonymous.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/studies"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/v1/health"]["get"]


def test_the_walk_reports_a_route_or_mount_added_without_a_check(anonymous: Api) -> None:
    app: FastAPI = anonymous.client.app  # type: ignore[assignment]

    @app.get("/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    async def dashboard(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never called")

    app.mount("/dashboard", dashboard)
    _, unguarded = walk(app)
    assert unguarded == ["APIRoute /v1/forgotten", "Mount /dashboard"]
