"""Domain errors. Raised by the domain layer, turned into HTTP answers in ``service.http_errors``.

HpsError
├── NotFound         404  an unknown study or trial id
├── LeaseConflict    409  a report or completion under an expired, released or foreign lease
└── InvalidResult    422  a result that contradicts its assignment (wrong seeds, ...)
"""

from __future__ import annotations


class HpsError(Exception):
    status_code = 500
    code = "internal_error"


class NotFound(HpsError):
    status_code = 404
    code = "not_found"


class LeaseConflict(HpsError):
    status_code = 409
    code = "lease_conflict"


class InvalidResult(HpsError):
    status_code = 422
    code = "invalid_result"
