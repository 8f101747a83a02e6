"""Idempotent submits: an ``Idempotency-Key`` header makes a retried ``POST /v1/studies`` return
the study the first attempt created, instead of a second one.

A client that timed out cannot know whether its submit arrived (a 6,000-cell grid once took
longer than the CLI waited). With a key it simply sends the same request again. The key is
stored hashed, with a hash of the spec it came with: the same key with another spec is refused
(422), as the IETF draft on the header asks (draft-ietf-httpapi-idempotency-key-header).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy.orm import Session

from api_schemas import StudySpec
from service.errors import HpsError
from service.models import SubmitKeyRow

MAX_KEY_LENGTH = 200


class KeyReused(HpsError):
    status_code = 422
    code = "idempotency_key_reused"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def spec_digest(spec: StudySpec) -> str:
    return _digest(spec.model_dump_json(by_alias=True))


def find(session: Session, key: str, spec: StudySpec) -> int | None:
    """The study a submit with ``key`` created, or None; KeyReused if it came with another spec."""
    row = session.get(SubmitKeyRow, _digest(key))
    if row is None:
        return None
    if row.spec_hash != spec_digest(spec):
        raise KeyReused(
            "this Idempotency-Key was sent before with another spec: use a new key for a new "
            f"study (the first one is study {row.study_id})"
        )
    return row.study_id


def remember(session: Session, key: str, spec: StudySpec, study_id: int, now: datetime) -> None:
    """Record that the submit with ``key`` created ``study_id`` (in the caller's transaction)."""
    session.add(
        SubmitKeyRow(
            key_hash=_digest(key), spec_hash=spec_digest(spec), study_id=study_id, created_at=now
        )
    )
