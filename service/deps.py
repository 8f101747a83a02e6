"""FastAPI dependencies, as ``Annotated`` aliases so that route signatures read plainly.

Authentication is not here: it is ``service.auth.Require``, given to each router in one place
(``service.app``), so no route can forget it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator

from service.leases import Leases
from service.notes import Notes
from service.reports import Reports
from service.studies import Studies
from service.tokens import Tokens

MAX_ID = 2**31 - 1
"""The largest id a row can have: Optuna's id columns are INTEGER (32 bits on PostgreSQL)."""


def _canonical(raw: object) -> object:
    """An id in a path is plain digits: ``%201``, ``+1`` and ``01`` are not ids (int() took all
    three for 1, and ``DELETE /v1/tokens/%201`` revoked token 1)."""
    if isinstance(raw, str) and not (raw.isascii() and raw.isdigit() and raw[:1] != "0"):
        raise ValueError("must be an id as the service wrote it: digits, no sign, no leading 0")
    return raw


Id = Annotated[
    int,
    Path(ge=1, le=MAX_ID, description="an id the service gave out"),
    BeforeValidator(_canonical),
]
"""A study, trial or token id in a path: plain digits, as the service wrote it. Bounded, so
that a number no column can hold is a 422, not an overflow in the database driver (a 500)."""


# These only read app.state, and are async for that reason: FastAPI runs a plain ``def``
# dependency in a thread, a hop per dependency per request.
async def _studies(request: Request) -> Studies:
    studies: Studies = request.app.state.studies
    return studies


async def _leases(request: Request) -> Leases:
    leases: Leases = request.app.state.leases
    return leases


async def _tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


async def _notes(request: Request) -> Notes:
    notes: Notes = request.app.state.notes
    return notes


async def _reports(request: Request) -> Reports:
    reports: Reports = request.app.state.reports
    return reports


StudiesDep = Annotated[Studies, Depends(_studies)]
ReportsDep = Annotated[Reports, Depends(_reports)]
NotesDep = Annotated[Notes, Depends(_notes)]
TokensDep = Annotated[Tokens, Depends(_tokens)]
LeasesDep = Annotated[Leases, Depends(_leases)]
