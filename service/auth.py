"""Who may call what: the ``Require`` dependency that every router but health is mounted with.

``create_app`` gives each router one ``Require`` (see ``service.app.ROUTERS``), so that a route is
covered by being on a router, not by remembering a decorator; tests/service/test_auth_matrix.py
walks every route and fails on any that answers without a token.

    401  no bearer token, an unknown one or a revoked one (with ``WWW-Authenticate: Bearer``)
    403  a live token whose scopes do not grant the one the route needs

A browser cannot send the header: ``Require(..., cookie=True)`` (the dashboard's mounts, see
``service.dashboard``) also accepts the session in the HttpOnly ``COOKIE`` its login form sets
(a server-side session, ``Tokens.open_session``: the cookie never holds a token).

With ``HPS_AUTH=false`` (allowed on a loopback address only, see ``Settings``) every check passes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api_schemas.tokens import Scope, TokenRead, allows, granted
from service.errors import Forbidden, Unauthenticated
from service.settings import Settings
from service.tokens import Tokens

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COOKIE = "hps_session"
"""The cookie holding a browser's dashboard session, set by the login form."""

_bearer = HTTPBearer(
    auto_error=False,  # a missing token is answered by Require, with the ErrorBody shape
    description="A token from `hps token create`, or the admin token in the service's token file",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
bearer = _bearer
"""The ``Authorization: Bearer`` parser, for ASGI apps that call ``Require`` themselves."""


class Require:
    """A router dependency: the request's token must grant ``scope``, or ``writes`` when given
    and the method changes something (anything but GET, HEAD, OPTIONS). With ``cookie`` the
    token may come from the login ``COOKIE`` instead of the header."""

    def __init__(self, scope: Scope, *, writes: Scope | None = None, cookie: bool = False) -> None:
        self.scope = scope
        self.writes = writes
        self.cookie = cookie

    def __repr__(self) -> str:
        writes = "" if self.writes is None else f", writes={self.writes.value}"
        return f"Require({self.scope.value}{writes})"

    def needed(self, method: str) -> Scope:
        """The scope a request with ``method`` needs."""
        if self.writes is not None and method.upper() not in SAFE_METHODS:
            return self.writes
        return self.scope

    async def __call__(self, request: Request, credentials: BearerDep) -> TokenRead | None:
        settings: Settings = request.app.state.settings
        if not settings.auth:
            return None
        raw = credentials.credentials if credentials is not None else None
        tokens: Tokens = request.app.state.tokens
        if raw is None and self.cookie and COOKIE in request.cookies:
            session = await run_in_threadpool(tokens.session_token, request.cookies[COOKIE])
            if session is None:
                raise Unauthenticated("the dashboard session ended: log in again")
            return self._allow(request, session)
        if raw is None:
            raise Unauthenticated(
                "this route needs a token: send 'Authorization: Bearer hps_...' "
                "(the CLI reads --token, HPS_TOKEN or the token file)"
            )
        # A token checked moments ago is answered here, on the event loop; only a lookup in
        # the database goes to a thread.
        token = tokens.cached(raw) or await run_in_threadpool(tokens.authenticate, raw)
        if token is None:
            raise Unauthenticated("the token is not valid: unknown or revoked")
        return self._allow(request, token)

    def _allow(self, request: Request, token: TokenRead) -> TokenRead:
        needed = self.needed(request.method)
        if not allows(token.scopes, needed):
            has = ", ".join(sorted(granted(token.scopes)))
            raise Forbidden(f"token {token.name!r} grants {has}; this route needs {needed}")
        request.state.token = token
        return token
