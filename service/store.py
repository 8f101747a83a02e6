"""The database: one SQLAlchemy engine for hps's tables, Optuna's RDBStorage for trials.

The service is the only process that opens the database (workers talk HTTP). On SQLite the
file runs in WAL mode with a busy timeout so that readers never block the one writer and
concurrent request threads wait instead of failing with "database is locked". On PostgreSQL
several service replicas may share the database: what must happen once across all of them is
decided by row locks (``lock_study``, leases locked with ``with_for_update``), never in memory.

hps's tables are created and upgraded by Alembic migrations (``service/migrations``) at start,
with their own version table, ``hps_alembic_version``, beside Optuna's ``alembic_version``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from alembic import command
from alembic.config import Config
from optuna.storages._rdb import models as optuna_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState as OptunaState
from sqlalchemy import Engine, create_engine, event, exists, func, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from api_schemas import StudySpec
from service.migrations import VERSION_TABLE
from service.models import StudyRow
from service.trials import ATTR_RETRIED

SQLITE_BUSY_TIMEOUT_S = 30.0
INITIAL_REVISION = "0001"
"""The tables as ``metadata.create_all`` made them before hps had migrations."""
QUEUE_PEEK = 16
"""Queued trials read at a time when claiming one (others may take the first few)."""
MIGRATION_LOCK_KEY = 0x68707331
"""A PostgreSQL advisory lock: replicas that start together migrate one after the other."""


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


def migrate(engine: Engine) -> None:
    """Bring hps's tables to the newest revision, like ``alembic upgrade head``."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        tables = inspect(connection)
        if not tables.has_table(VERSION_TABLE) and tables.has_table(StudyRow.__tablename__):
            # A database from before migrations: its tables are the initial revision's.
            command.stamp(config, INITIAL_REVISION)
        command.upgrade(config, "head")


@dataclass(frozen=True)
class TrialCounts:
    """A study's trials that count towards its budget (all but the retried ones), by state."""

    counted: int
    running: int
    waiting: int

    def has_work(self, n_trials: int) -> bool:
        """Whether a lease can start a trial: one is queued, or the budget is not used up."""
        return self.waiting > 0 or self.counted < n_trials

    def is_done(self, n_trials: int) -> bool:
        """Whether every trial the study will run is final (retried ones are always FAIL)."""
        return self.counted >= n_trials and self.running == 0 and self.waiting == 0


class Store:
    """Owns the engine, the Optuna storage and the in-process cache of Optuna ``Study`` objects.

    Study objects are cached because a seeded sampler must keep its random state between asks;
    re-creating it for every lease would replay the same samples.
    """

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        # Set WAL on the file before Optuna's own engine opens it.
        migrate(self.engine)
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

    def lock_study(self, session: Session, study_id: int) -> None:
        """Hold the study's row until ``session`` ends: replicas on PostgreSQL take turns.

        On SQLite this locks nothing (SQLite has no row locks): one service owns a SQLite file,
        and its in-process lock serialises the same sections.
        """
        session.execute(select(StudyRow.id).where(StudyRow.id == study_id).with_for_update())

    def trial_counts(self, study_id: int) -> TrialCounts:
        """Count a study's trials in SQL, over Optuna's tables (loading them all is O(trials))."""
        trial = optuna_models.TrialModel
        attr = optuna_models.TrialUserAttributeModel
        retried = exists().where(attr.trial_id == trial.trial_id, attr.key == ATTR_RETRIED)
        stmt = (
            select(trial.state, func.count())
            .where(trial.study_id == study_id, ~retried)
            .group_by(trial.state)
        )
        with self.session() as session:
            by_state: dict[OptunaState, int] = {
                OptunaState(state) if not isinstance(state, OptunaState) else state: n
                for state, n in session.execute(stmt).all()
            }
        return TrialCounts(
            counted=sum(by_state.values()),
            running=by_state.get(OptunaState.RUNNING, 0),
            waiting=by_state.get(OptunaState.WAITING, 0),
        )

    def record_intermediate_value(
        self, session: Session, trial_id: int, step: int, value: float
    ) -> bool:
        """Store a running trial's value at ``step`` in Optuna's table, inside ``session``.

        False, with nothing written, when the trial is not running. A step stored before keeps
        its first value, as ``optuna.Trial.report`` does. This writes Optuna's own row (its
        model, its encoding of inf and NaN) in the caller's transaction, so that a report is one
        transaction with the lease renewal instead of five (RDBStorage commits its own, and
        reads the trial first); Optuna's cache holds finished trials only, so it never serves a
        running trial's values stale.
        """
        trial = optuna_models.TrialModel
        state = session.scalar(select(trial.state).where(trial.trial_id == trial_id))
        if state != OptunaState.RUNNING:
            return False
        model = optuna_models.TrialIntermediateValueModel
        stored, kind = model.intermediate_value_to_stored_repr(value)
        row = {
            "trial_id": trial_id,
            "step": step,
            "intermediate_value": stored,
            "intermediate_value_type": kind,
        }
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        insert = dialect.insert(model.__table__).values(row)
        session.execute(insert.on_conflict_do_nothing(index_elements=["trial_id", "step"]))
        return True

    def ask(self, study: optuna.Study) -> optuna.Trial:
        """``study.ask()``: the oldest queued trial, claimed, else a new one.

        Optuna's own ``ask`` looks for a queued trial by loading every unfinished trial of the
        study, running ones included, through its cache: with a thousand workers in flight, or
        a grid of ten thousand queued cells, that load is most of a lease. Here the queue is
        read by one indexed query, and each candidate is claimed with Optuna's own
        compare-and-set (``set_trial_state_values(RUNNING)`` is False for a trial another
        process took), as ``Study._pop_waiting_trial_id`` does.
        """
        trial = optuna_models.TrialModel
        queued = (
            select(trial.trial_id)
            .where(trial.study_id == study._study_id, trial.state == OptunaState.WAITING)
            .order_by(trial.number)
            .limit(QUEUE_PEEK)
        )
        storage = study._storage
        claimed = None
        while claimed is None:
            with self.session() as session:
                candidates = session.scalars(queued).all()
            if not candidates:
                claimed = storage.create_new_trial(study._study_id)
            for trial_id in candidates:
                # Each refusal means the trial left the queue, so the next query returns less.
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    if storage.set_trial_state_values(trial_id, state=OptunaState.RUNNING):
                        claimed = trial_id
                        break
        if not _cache_knows(storage, claimed):
            # Queued by another replica, or before this process started: let Optuna's cache read
            # the study once (its suggest and tell look trials up there). Trials this process
            # queues or creates are known to it already, so this is rare.
            storage.get_all_trials(study._study_id, deepcopy=False)
        study._thread_local.cached_all_trials = None  # as Study.ask: samplers read afresh
        return optuna.Trial(study, claimed)

    def _count_trials(self, study_id: int) -> int:
        """Every trial of the study, retried ones too, counted in SQL (not loaded: O(trials))."""
        trial = optuna_models.TrialModel
        stmt = select(func.count()).where(trial.study_id == study_id)
        with self.session() as session:
            return int(session.scalar(stmt) or 0)

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Set several user attributes of a running trial in one transaction.

        Optuna's public API commits one attribute per transaction; a lease sets three and a
        completion five, and each commit is most of a request's cost on SQLite. This uses
        RDBStorage's own per-attribute upsert (with its is-the-trial-still-running check), just
        once for all of them. Safe beside the ``_CachedStorage`` Optuna wraps around the
        storage: it caches finished trials only, and these trials are running.
        """
        storage = self.optuna_storage
        model = optuna_models.TrialUserAttributeModel
        with _create_scoped_session(storage.scoped_session, True) as session:
            for key, value in attrs.items():
                storage._set_trial_attr_without_commit(session, model, trial_id, key, value)

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
                study.sampler = build_sampler(spec, n_existing=self._count_trials(study._study_id))
                self._studies[study_id] = study
            return study

    def close(self) -> None:
        self.optuna_storage.remove_session()
        self.optuna_storage.engine.dispose()
        self.engine.dispose()


def _cache_knows(storage: optuna.storages.BaseStorage, trial_id: int) -> bool:
    """Whether Optuna's trial cache (``_CachedStorage``, which wraps every ``RDBStorage`` a
    study is given) has ``trial_id``; a storage without that cache needs nothing."""
    known = getattr(storage, "_trial_id_to_study_id_and_number", None)
    return known is None or trial_id in known


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
