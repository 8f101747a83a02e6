"""Bearer tokens and their scopes: who may call which routes.

A token grants one or more scopes, and some scopes imply others:

    admin   everything, and managing tokens (``/v1/tokens``)
    submit  submit studies; implies read
    read    read studies, trials and analyses
    worker  lease, report and complete trials (and nothing else: a GPU box far away needs no
            more)

Tokens travel as ``Authorization: Bearer hps_...``. The service stores only a hash of each
secret and shows the secret once, when the token is created.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_TOKEN_FILE = "hps.token"
"""Where a local service writes its admin token and the CLI looks for one (``HPS_TOKEN_FILE``):
beside the embedded default database ``./hps.db``, so that each working directory has its own."""

TOKEN_PREFIX = "hps_"
"""Every secret starts with this, so that secret scanners and people can recognise one."""


class Scope(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    WORKER = "worker"
    ADMIN = "admin"


_IMPLIES: dict[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.SUBMIT: frozenset({Scope.SUBMIT, Scope.READ}),
    Scope.WORKER: frozenset({Scope.WORKER}),
    Scope.ADMIN: frozenset(Scope),
}


def granted(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """Every scope that ``scopes`` grant, implied ones included."""
    return frozenset().union(*(_IMPLIES[s] for s in scopes))


def allows(scopes: Iterable[Scope], needed: Scope) -> bool:
    """Whether a token with ``scopes`` may call a route that needs ``needed``."""
    return needed in granted(scopes)


class TokenCreate(BaseModel):
    """A token to create (admin only)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]*$",
        description="what the token is for, e.g. ci or gpu-box-3",
    )
    scopes: list[Scope] = Field(min_length=1, description="read, submit, worker and/or admin")

    @field_validator("scopes")
    @classmethod
    def _unique_in_order(cls, scopes: list[Scope]) -> list[Scope]:
        return sorted(set(scopes), key=list(Scope).index)


class TokenRead(BaseModel):
    """A token as the service shows it: never its secret."""

    id: int
    name: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None = Field(
        default=None, description="when it last authenticated a request (to within a minute)"
    )
    revoked: bool = False


class TokenCreated(TokenRead):
    """A token just created, with its secret: shown this once and never again."""

    token: str = Field(description="the bearer secret, hps_...; store it now")
