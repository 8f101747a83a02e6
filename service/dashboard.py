"""The Optuna dashboard, served by the service itself: one port, the same storage, the same tokens.

optuna-dashboard is a WSGI (Bottle) app whose frontend calls absolute URLs (``/dashboard``,
``/api/...``, ``/static/...``), so it cannot live under a prefix. It is mounted at each of its
top-level paths instead (``DASHBOARD_PATHS``; none clashes with hps's ``/v1``, ``/docs``), every
mount behind one ``Require(read)`` that also accepts the login cookie.

A browser cannot send a bearer header, so ``/dashboard/login`` is a form that POSTs the token (a
token in a query string would land in the access log and the browser history) and answers with
an HttpOnly, SameSite=Strict cookie holding a server-side session (``Tokens.open_session``), not
the token: it expires (``SESSION_TTL``), logging out ends it, and revoking its token ends it too.
The cookie is ``Secure`` when the request came over https, or through a proxy that says so.
The POST takes a urlencoded form only, and only from the dashboard's own pages: a request whose
``Origin`` or ``Sec-Fetch-Site`` says another site sent it is refused (403), so no other site
can log a victim in under the attacker's token (login CSRF). An unauthenticated page load is
redirected to the form; an API call gets 401.

The dashboard is read-only here: its writes (delete or rename a study, tell a trial, notes) would
go straight into Optuna's tables behind the service's back, so they are refused with 405.
"""

from __future__ import annotations

import html
from typing import cast
from urllib.parse import parse_qs, urlsplit

from a2wsgi import WSGIMiddleware
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from optuna.storages import BaseStorage, RDBStorage
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api_schemas import ErrorBody
from api_schemas.tokens import Scope as TokenScope
from api_schemas.tokens import allows
from service.auth import COOKIE, SAFE_METHODS, Require, bearer
from service.errors import Unauthenticated
from service.tokens import SESSION_TTL, Tokens

DASHBOARD_PATHS = ("/dashboard", "/api", "/static", "/csv", "/artifacts", "/favicon.ico")
"""optuna-dashboard's top-level paths: its page, its JSON API, its assets and downloads."""

LOGIN_PATH = "/dashboard/login"
MAX_FORM_BYTES = 4096

login = APIRouter(include_in_schema=False)
"""The login form and its POST: public (they check the token they are given)."""


class GuardedDashboard:
    """An ASGI app: ``check`` (bearer header or login cookie), writes refused, then the dashboard.

    ``check`` is public so that tests/service/test_auth_matrix.py can find the mount's guard;
    ``None`` only for ``standalone``, which has no tokens to check.
    """

    def __init__(self, storage: BaseStorage, check: Require | None) -> None:
        from optuna_dashboard import wsgi  # a heavy import, needed only once the service is built

        self.check = check
        # a2wsgi types ASGI with its own TypedDicts; to Starlette it is a plain ASGI app.
        self._app = cast(ASGIApp, WSGIMiddleware(wsgi(storage)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            if self.check is not None:
                await self.check(request, await bearer(request))
        except Unauthenticated:
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                await RedirectResponse(LOGIN_PATH, status_code=303)(scope, receive, send)
                return
            raise  # answered by service.http_errors, like any route's
        if request.method not in SAFE_METHODS:
            body = ErrorBody(
                error="method_not_allowed",
                message="the dashboard is read-only here: trials are written by the service",
            )
            response = JSONResponse(body.model_dump(), status_code=405, headers=READ_ONLY)
            await response(scope, receive, send)
            return
        # Mount moved the matched prefix into root_path; the dashboard routes on the full path.
        scope = {**scope, "root_path": scope.get("app_root_path", ""), "headers": _encoding(scope)}
        await self._app(scope, receive, send)


READ_ONLY = {"Allow": "GET, HEAD"}


def _encoding(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The request's headers, with ``Accept-Encoding: identity`` when it sent none.

    optuna-dashboard (0.21) reads ``request.headers["Accept-Encoding"]`` in its favicon and
    static-file routes, so a request without the header (curl, a health probe) raised KeyError:
    a 500. Upstream fix to send: ``request.headers.get("Accept-Encoding", "")`` in
    ``optuna_dashboard/_app.py`` (``favicon`` and ``send_static``).
    """
    headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
    if not any(name.lower() == b"accept-encoding" for name, _ in headers):
        headers.append((b"accept-encoding", b"identity"))
    return headers


def mount(app: FastAPI, storage: BaseStorage) -> None:
    """Mount the dashboard on ``storage`` at each of ``DASHBOARD_PATHS``, behind read scope."""
    dashboard = GuardedDashboard(storage, Require(TokenScope.READ, cookie=True))
    for path in DASHBOARD_PATHS:
        app.mount(path, dashboard)


def standalone(database_url: str) -> Starlette:
    """The dashboard alone on ``database_url``, read-only and without auth (``hps dashboard
    --database-url``): for a copy of a database, or a loopback look at a stopped service's."""
    storage = RDBStorage(database_url, skip_table_creation=True)
    dashboard = GuardedDashboard(storage, check=None)
    routes: list[BaseRoute] = [Route("/", RedirectResponse("/dashboard"))]
    return Starlette(routes=routes + [Mount(path, dashboard) for path in DASHBOARD_PATHS])


_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hps dashboard: log in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;margin:.5rem 0;box-sizing:border-box}}
.error{{color:#b00020}}</style></head>
<body><h1>hps dashboard</h1>
<p>Paste a token with the <code>read</code> scope: <code>hps token create --scope read</code>,
or the admin token in the service's token file (<code>hps.token</code>).</p>
{error}
<form method="post" action="{action}">
<input type="password" name="token" id="token" placeholder="hps_..." autocomplete="off" required
 autofocus>
<input type="submit" id="login" value="Open the dashboard">
</form></body></html>
"""


def _form(error: str = "", status_code: int = 200) -> HTMLResponse:
    message = f'<p class="error">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(_FORM.format(error=message, action=LOGIN_PATH), status_code=status_code)


@login.get(LOGIN_PATH)
def login_form() -> HTMLResponse:
    """The form: one password field, POSTed to the same path."""
    return _form()


FORM_TYPE = "application/x-www-form-urlencoded"


def _cross_site(request: Request) -> str | None:
    """Why the request came from another site's page, or None when it did not.

    Browsers send ``Sec-Fetch-Site``, which a page cannot forge: ``same-origin`` (or ``none``,
    typed by the person) settles it, even behind a proxy that rewrites ``Host``. Older browsers
    send only ``Origin`` on a POST: it must name this host (``Host`` or the proxy's
    ``X-Forwarded-Host``). A client that sends neither (curl) is no browser, so it carries no
    victim's cookies.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site is {site}"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
    return (
        None
        if urlsplit(origin).netloc in hosts - {None}
        else f"Origin {origin} is not this service"
    )


def _secure(request: Request) -> bool:
    """Whether the browser reached us over https: directly, or through a proxy that says so.

    Trusting ``X-Forwarded-Proto`` here is safe in the one direction it is used: a forged
    header can only make the cookie stricter (Secure), never send it over plain http.
    """
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    return request.url.scheme == "https" or forwarded == "https"


def _refuse(request: Request) -> HTMLResponse | None:
    """The answer to a login or logout POST that is not a same-site urlencoded form."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        return _form(f"The form must be sent as {FORM_TYPE}.", status_code=415)
    reason = _cross_site(request)
    if reason is not None:
        return _form(f"Refused: the form was sent from another site ({reason}).", 403)
    return None


@login.post(LOGIN_PATH)
async def log_in(request: Request) -> Response:
    """Check the form's token; on success open a session, set its cookie, go to the dashboard."""
    refused = _refuse(request)
    if refused is not None:
        return refused
    # A urlencoded form is parsed here: one field does not justify python-multipart.
    body = await request.body()
    fields: dict[str, list[str]] = parse_qs(body[:MAX_FORM_BYTES].decode(errors="replace"))
    raw = (fields.get("token") or [""])[0].strip()
    tokens: Tokens = request.app.state.tokens
    token = await run_in_threadpool(tokens.authenticate, raw) if raw else None
    if token is None:
        return _form("That token is not valid: unknown or revoked.", status_code=401)
    if not allows(token.scopes, TokenScope.READ):
        return _form(f"Token {token.name!r} lacks the read scope.", status_code=403)
    session = await run_in_threadpool(tokens.open_session, token)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(SESSION_TTL.total_seconds()),
        httponly=True,  # out of reach of scripts
        samesite="strict",  # never sent by another site's page or form
        secure=_secure(request),
        path="/",  # the dashboard's /api and /static need it too
    )
    return response


@login.post("/dashboard/logout")
async def log_out(request: Request) -> Response:
    """End the session and forget the cookie."""
    reason = _cross_site(request)
    if reason is not None:
        return _form(f"Refused: the form was sent from another site ({reason}).", 403)
    if COOKIE in request.cookies:
        tokens: Tokens = request.app.state.tokens
        await run_in_threadpool(tokens.close_session, request.cookies[COOKIE])
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
