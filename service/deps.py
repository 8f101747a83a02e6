"""FastAPI dependencies, as ``Annotated`` aliases so that route signatures read plainly.

Authentication, when it comes, is one more dependency here, added to the routers in one place.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.leases import Leases
from service.studies import Studies


def _studies(request: Request) -> Studies:
    studies: Studies = request.app.state.studies
    return studies


def _leases(request: Request) -> Leases:
    leases: Leases = request.app.state.leases
    return leases


StudiesDep = Annotated[Studies, Depends(_studies)]
LeasesDep = Annotated[Leases, Depends(_leases)]
