"""hps's own tables. They sit beside Optuna's in the same database, with an ``hps_`` prefix.

Optuna is the store of record for trials (params, values, states, attributes); these tables hold
only what Optuna has no place for: the submitted spec, the leases and the API tokens.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    """A submitted study. ``id`` is Optuna's study id."""

    __tablename__ = "hps_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    optuna_name: Mapped[str] = mapped_column(String(200), unique=True)
    spec_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LeaseRow(Base):
    """Which lease covers a running trial: until when, under which token (stored hashed). Who
    runs it (worker, device, attempt) is in the trial record (``service.trial_record``)."""

    __tablename__ = "hps_leases"

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    study_id: Mapped[int] = mapped_column(Integer, index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    released: Mapped[bool] = mapped_column(default=False, index=True)
    """Set in the transaction that ends the trial: an index for the reaper, never a second
    opinion on whether the trial is over (Optuna's state)."""


class TokenRow(Base):
    """An API token: its scopes and the SHA-256 of its secret. The secret itself is never stored."""

    __tablename__ = "hps_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(100), doc="comma-separated, e.g. read,submit")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked: Mapped[bool] = mapped_column(default=False)


class SessionRow(Base):
    """A browser's dashboard login. The cookie holds a random secret and this row its SHA-256,
    the token it was opened with (revoking that token ends the session) and when it expires."""

    __tablename__ = "hps_sessions"

    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class SubmitKeyRow(Base):
    """An ``Idempotency-Key`` a submit came with (stored hashed), the spec it came with and the
    study it created: a retry with the same key gets that study instead of a second one."""

    __tablename__ = "hps_idempotency_keys"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec_hash: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
