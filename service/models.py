"""hps's own tables. They sit beside Optuna's in the same database, with an ``hps_`` prefix.

Optuna is the store of record for trials (params, values, states, attributes); these tables hold
only what Optuna has no place for: the submitted spec and the leases.
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
    """Which worker holds a trial, until when, under which token (stored hashed)."""

    __tablename__ = "hps_leases"

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    study_id: Mapped[int] = mapped_column(Integer, index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    worker_id: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    released: Mapped[bool] = mapped_column(default=False, index=True)
