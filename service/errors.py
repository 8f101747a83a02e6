"""Domain errors. Raised by the domain layer, turned into HTTP answers in ``service.http_errors``.

HpsError
├── NotFound           404  an unknown study, trial or token id
├── LeaseConflict      409  a report or completion under an expired, released or foreign lease
├── InvalidResult      422  a result that contradicts its assignment (wrong seeds, ...)
├── LimitExceeded      422  a valid spec over this service's limits (HPS_MAX_TRIALS, ...)
├── RefusedValue       422  a value the database cannot store (a NUL character on PostgreSQL)
├── StorageUnavailable 503  the database cannot be reached, or stayed locked too long
└── AuthError
    ├── Unauthenticated  401  no bearer token, or an unknown or revoked one
    └── Forbidden        403  a valid token without the scope the route needs
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from api_schemas import FieldError


class HpsError(Exception):
    status_code = 500
    code = "internal_error"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class NotFound(HpsError):
    status_code = 404
    code = "not_found"


class LeaseConflict(HpsError):
    status_code = 409
    code = "lease_conflict"


class InvalidResult(HpsError):
    status_code = 422
    code = "invalid_result"


class LimitExceeded(HpsError):
    # The same code as a schema violation: to a client both are "fix the request", and the
    # errors name the fields either way.
    status_code = 422
    code = "invalid_request"


class RefusedValue(HpsError):
    status_code = 422
    code = "invalid_request"


class StorageUnavailable(HpsError):
    status_code = 503
    code = "storage_unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class AuthError(HpsError):
    pass


class Unauthenticated(AuthError):
    status_code = 401
    code = "unauthenticated"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(AuthError):
    status_code = 403
    code = "forbidden"
