"""The database: one SQLAlchemy engine for hps's tables, Optuna's RDBStorage for trials.

The service is the only process that opens the database (workers talk HTTP). On SQLite the
file runs in WAL mode with a busy timeout so that readers never block the one writer and
concurrent request threads wait instead of failing with "database is locked".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from api_schemas import StudySpec
from service.models import Base

SQLITE_BUSY_TIMEOUT_S = 30.0


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _engine_kwargs(url: str) -> dict[str, Any]:
    if _is_sqlite(url):
        # Request threads share the engine; the timeout is SQLite's busy wait for the lock.
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {"pool_pre_ping": True}


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite connections get WAL, a busy timeout and foreign keys."""
    engine = create_engine(url, **_engine_kwargs(url))
    if _is_sqlite(url):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


class Store:
    """Owns the engine, the Optuna storage and the in-process cache of Optuna ``Study`` objects.

    Study objects are cached because a seeded sampler must keep its random state between asks;
    re-creating it for every lease would replay the same samples.
    """

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        # Set WAL on the file before Optuna's own engine opens it.
        Base.metadata.create_all(self.engine)
        self.optuna_storage = optuna.storages.RDBStorage(
            database_url,
            engine_kwargs=_engine_kwargs(database_url),
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._studies: dict[int, optuna.Study] = {}
        self._studies_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        with self._sessions.begin() as session:
            yield session

    def create_optuna_study(self, optuna_name: str, spec: StudySpec) -> optuna.Study:
        study = optuna.create_study(
            study_name=optuna_name,
            storage=self.optuna_storage,
            direction=spec.objective.direction,
            sampler=build_sampler(spec, n_existing=0),
            pruner=build_pruner(spec),
        )
        with self._studies_lock:
            self._studies[study._study_id] = study
        return study

    def optuna_study(self, study_id: int, optuna_name: str, spec: StudySpec) -> optuna.Study:
        """The cached Optuna study, loaded on first use (e.g. after a restart)."""
        with self._studies_lock:
            study = self._studies.get(study_id)
            if study is None:
                study = optuna.load_study(
                    study_name=optuna_name, storage=self.optuna_storage, pruner=build_pruner(spec)
                )
                # Re-seed past the trials already drawn, so a restart does not replay them.
                study.sampler = build_sampler(spec, n_existing=len(study.get_trials(False)))
                self._studies[study_id] = study
            return study

    def close(self) -> None:
        self.optuna_storage.remove_session()
        self.optuna_storage.engine.dispose()
        self.engine.dispose()


def build_sampler(spec: StudySpec, n_existing: int) -> optuna.samplers.BaseSampler:
    """The sampler for ``spec``. A grid study's trials are all enqueued, so any sampler works."""
    seed = None if spec.sampler.seed is None else spec.sampler.seed + n_existing
    if spec.sampler.type == "tpe":
        # Several workers ask before earlier trials finish: the constant liar keeps TPE from
        # proposing the same region to all of them.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    pruner = spec.pruner
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.n_startup_trials, n_warmup_steps=pruner.n_warmup_steps
        )
    if pruner.type == "percentile":
        return optuna.pruners.PercentilePruner(
            pruner.percentile,
            n_startup_trials=pruner.n_startup_trials,
            n_warmup_steps=pruner.n_warmup_steps,
        )
    return optuna.pruners.NopPruner()
