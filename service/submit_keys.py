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

from sqlalchemy.dialects import postgresql, sqlite
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


def claim(session: Session, key: str, spec: StudySpec, study_id: int, now: datetime) -> int:
    """Record that the submit with ``key`` created ``study_id``, unless another submit with the
    same key got there first; returns the study the key stands for (``study_id`` if it won).

    The insert is ``ON CONFLICT DO NOTHING``: two replicas racing on one key (both found it
    unknown) both reach here, and on either backend the second insert waits for the first's
    commit and then finds its row, instead of failing on the primary key (a 500). KeyReused if
    the winner came with another spec.
    """
    values = {
        "key_hash": _digest(key),
        "spec_hash": spec_digest(spec),
        "study_id": study_id,
        "created_at": now,
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(SubmitKeyRow).values(values).on_conflict_do_nothing())
    winner = find(session, key, spec)
    assert winner is not None  # inserted, or already there
    return winner
