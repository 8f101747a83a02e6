"""The one place where errors become HTTP answers, all with an ``ErrorBody``.

Domain errors carry their status code (and headers: ``WWW-Authenticate`` on a 401); a request
that fails validation gets 422 with one entry per problem, each naming its field as a dotted path
(``search_space.beta2.high``); a body over ``HPS_MAX_BODY_BYTES`` gets 413.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from api_schemas import ErrorBody, FieldError
from api_schemas.search_space import PARAM_TYPES
from api_schemas.workloads import WORKLOAD_TAGS
from service.errors import HpsError


def field_path(loc: Sequence[int | str]) -> str:
    """``('body', 'search_space', 'lr', 'float', 'low')`` -> ``search_space.lr.low``.

    Pydantic puts the tag of a discriminated union into the location; people never wrote it,
    so it is dropped.
    """
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    if len(parts) > 2 and parts[0] == "search_space" and parts[2] in PARAM_TYPES:
        del parts[2]
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] == "workload" and parts[i] in WORKLOAD_TAGS:
            del parts[i]
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _field_errors(error: dict[str, Any]) -> list[FieldError]:
    problems = (error.get("ctx") or {}).get("problems")
    if problems:
        return [FieldError.model_validate(p) for p in problems]
    if error["type"] == "json_invalid":
        detail = (error.get("ctx") or {}).get("error", "")
        return [FieldError(field="", message=f"the request body is not valid JSON: {detail}")]
    field = field_path(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return [FieldError(field=field, message=f"{field}: {message}" if field else message)]


def _answer(status: int, body: ErrorBody, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [fe for error in exc.errors() for fe in _field_errors(dict(error))]
    message = "; ".join(e.message for e in errors) or "invalid request"
    return _answer(422, ErrorBody(error="invalid_request", message=message, errors=errors))


async def _on_domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HpsError)
    body = ErrorBody(error=exc.code, message=str(exc), errors=exc.errors)
    return _answer(exc.status_code, body, exc.headers or None)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this request's path.

    Starlette's 405 names the methods of the first route whose path matched, and a path such as
    ``/v1/studies`` has one route per method: its ``Allow`` said ``POST`` and left out ``GET``.
    So each method is tried against every route (included routers hide their routes' methods).
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = ", ".join(allowed_methods(request))
        message = f"{request.method} is not allowed here; allowed: {allow}"
        body = ErrorBody(error="method_not_allowed", message=message)
        return _answer(405, body, {**(exc.headers or {}), "Allow": allow})
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot even decode (not UTF-8, say): to a client that
        # is one more invalid request, answered like invalid JSON (422), as the routes document.
        message = f"the request body could not be read: {exc.detail}"
        body = ErrorBody(
            error="invalid_request", message=message, errors=[FieldError(field="", message=message)]
        )
        return _answer(422, body, exc.headers)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _answer(exc.status_code, ErrorBody(error=code, message=str(exc.detail)), exc.headers)


def documented(*, authenticated: bool) -> dict[int | str, dict[str, Any]]:
    """The error answers any route can give, for its OpenAPI entry: 413 and 422 everywhere
    (each an ErrorBody, not FastAPI's default shape), 401 and 403 where a token is required."""
    answers: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorBody, "description": "the body is larger than HPS_MAX_BODY_BYTES"},
        422: {"model": ErrorBody, "description": "invalid request; each error names its field"},
    }
    if authenticated:
        answers[401] = {"model": ErrorBody, "description": "no token, or an unknown or revoked one"}
        answers[403] = {"model": ErrorBody, "description": "the token lacks the scope needed"}
    return answers


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HpsError, _on_domain)
    app.add_exception_handler(HTTPException, _on_http)
