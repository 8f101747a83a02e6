"""The database: one SQLAlchemy engine for hps's tables, Optuna's RDBStorage for trials.

The service is the only process that opens the database (workers talk HTTP). On SQLite the
file runs in WAL mode with a busy timeout so that readers never block the one writer and
concurrent request threads wait instead of failing with "database is locked". On PostgreSQL
several service replicas may share the database: what must happen once across all of them is
decided by row locks taken in ``Store.transaction``, never in memory.

This module, with the statements it runs (``service.sql``, built once), is the seam to
Optuna's storage and to SQL: nothing else in hps touches either, and nothing else uses Optuna's
private names. ``tests/service/test_storage_contract.py`` holds
it to its contract on both backends, so that an Optuna upgrade fails there first.

hps's tables are created and upgraded by Alembic migrations (``service/migrations``) at start,
with their own version table, ``hps_alembic_version``, beside Optuna's ``alembic_version``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections.abc import Collection, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import optuna
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages._rdb import models as optuna_models
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState
from sqlalchemy import (
    CursorResult,
    Engine,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import Session, sessionmaker

from api_schemas import StudySpec
from service import sql
from service.errors import RefusedValue, StorageUnavailable
from service.migrations import VERSION_TABLE
from service.models import StudyRow
from service.trial_record import ATTR_FAILURE, ATTR_RETRIED, ATTR_SEEDS

SQLITE_BUSY_TIMEOUT_S = 30.0
QUEUED_SCAN = 2048
"""How many of a study's oldest queued trials a batch looks through for ones like its first: a
grid with controls queues its workloads in turn, so 64 alike lie within 64 x 17 of them."""
_STARTED = "hps_started_trials"
"""The ``Session.info`` key of the trials a transaction started (``Store.start_trial``)."""
INITIAL_REVISION = "0001"
"""The tables as ``metadata.create_all`` made them before hps had migrations."""
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


@dataclass(frozen=True)
class Lease:
    """A lease as stored: which trial of which study, under which token hash, until when."""

    trial_id: int
    study_id: int
    token_hash: str
    expires_at: datetime
    released: bool = False


def trial_id_of(trial: FrozenTrial) -> int:
    """The storage id of ``trial`` (Optuna keeps it in a private field)."""
    return int(trial._trial_id)


ANALYSIS_ATTRS = (ATTR_SEEDS, ATTR_FAILURE, ATTR_RETRIED)
"""The user attributes the analysis reads: the seeds' results, the failure, the retried mark."""
CURVES_PER_QUERY = 500
"""Trial ids per query of ``Store.curves`` (SQLite's older builds allow 999 parameters)."""


@dataclass(frozen=True)
class TrialTable:
    """A study's trials as the analysis reads them, in number order: entry i of each list is
    the i-th trial. Only what an outcome needs (``service.analysis.cells``): no values, no
    distributions, no learning curves (``Store.curves`` reads those of the trials shown)."""

    trial_ids: list[int]
    numbers: list[int]
    states: list[OptunaState]
    params: list[dict[str, Any]]
    """A queued (WAITING) trial's are the fixed parameters it was queued with."""
    attrs: list[dict[str, Any]]
    """Those of the trial's user attributes that are in ``ANALYSIS_ATTRS``."""

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> TrialTable:
        """The table of trials already read (e.g. from ``Store.trials``, or built in tests)."""
        return cls(
            trial_ids=[trial_id_of(t) for t in trials],
            numbers=[t.number for t in trials],
            states=[t.state for t in trials],
            params=[
                dict(t.system_attrs.get("fixed_params", {}))
                if t.state == OptunaState.WAITING
                else t.params
                for t in trials
            ],
            attrs=[
                {k: t.user_attrs[k] for k in ANALYSIS_ATTRS if k in t.user_attrs} for t in trials
            ],
        )


def _ids(ids: int | Collection[int] | None) -> list[int]:
    """The ids of rows to lock, sorted: one id, several, or none."""
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else sorted(set(ids))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _lease(row: Any) -> Lease:
    """A lease from a row of ``sql.LEASE``'s columns."""
    return Lease(
        trial_id=row.trial_id,
        study_id=row.study_id,
        token_hash=row.token_hash,
        expires_at=_aware(row.expires_at),
        released=row.released,
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _upsert_attrs(session: Session, kind: str, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` (``kind``: user or system attributes) on the trial, JSON-encoded as
    Optuna encodes them, in one statement."""
    if attrs:
        rows = [
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
        ]
        session.execute(sql.UPSERT_ATTRS[_dialect(session)][kind], rows)


def _frozen_trial(session: Session, trial_id: int) -> FrozenTrial:
    """The trial as stored now, read in ``session`` by six prebuilt queries (Optuna's ORM
    builds an object per row and loads each relation apart: most of a completion's time);
    KeyError if there is none."""
    key = {"tid": trial_id}
    row = session.execute(sql.TRIAL_ROW, key).one_or_none()
    if row is None:
        raise KeyError(f"no trial with id {trial_id}")
    params: dict[str, Any] = {}
    distributions: dict[str, BaseDistribution] = {}
    for name, internal, encoded in session.execute(sql.TRIAL_PARAMS, key):
        distributions[name] = distribution = json_to_distribution(encoded)
        params[name] = distribution.to_external_repr(internal)
    decode_value = optuna_models.TrialValueModel.stored_repr_to_value
    objectives = {
        objective: decode_value(stored, kind)
        for objective, stored, kind in session.execute(sql.TRIAL_VALUES, key)
    }
    decode_step = optuna_models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    parts = {
        "params": params,
        "distributions": distributions,
        "values": objectives,
        "user": {k: json.loads(v) for k, v in session.execute(sql.TRIAL_USER_ATTRS, key)},
        "system": {k: json.loads(v) for k, v in session.execute(sql.TRIAL_SYSTEM_ATTRS, key)},
        "steps": {
            step: decode_step(stored, kind)
            for step, stored, kind in session.execute(sql.TRIAL_STEPS, key)
        },
    }
    return _frozen(row, parts)


def _frozen(row: Any, parts: Mapping[str, Any]) -> FrozenTrial:
    """A FrozenTrial from its ``trials`` row and its parts, read from Optuna's other tables:
    params, distributions, values (by objective), user and system attributes, steps."""
    objectives = parts["values"]
    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=[objectives[i] for i in sorted(objectives)] if objectives else None,
        datetime_start=row.datetime_start,
        datetime_complete=row.datetime_complete,
        params=parts["params"],
        distributions=parts["distributions"],
        user_attrs=parts["user"],
        system_attrs=parts["system"],
        intermediate_values=parts["steps"],
        trial_id=row.trial_id,
    )


def _tables() -> tuple[Any, ...]:
    """Optuna's trial tables: trials, params, values, user and system attributes, curves."""
    m = optuna_models
    return tuple(
        model.__table__
        for model in (
            m.TrialModel,
            m.TrialParamModel,
            m.TrialValueModel,
            m.TrialUserAttributeModel,
            m.TrialSystemAttributeModel,
            m.TrialIntermediateValueModel,
        )
    )


def _of_study(study_id: int, table: Any, *columns: Any) -> Any:
    """``columns`` of ``table``'s rows that belong to the study's trials (one join)."""
    t = optuna_models.TrialModel.__table__
    return (
        select(*columns).join(t, table.c.trial_id == t.c.trial_id).where(t.c.study_id == study_id)
    )


def _distributions(session: Session, study_id: int) -> dict[str, BaseDistribution]:
    """Each parameter's distribution in the study, read from its first stored row only.

    Optuna stores the distribution on every parameter row, and a categorical's lists all its
    choices (1,250 lrs: 28 KB a row, 2.8 GB for 100,000 trials). One row per name decodes them
    all: a parameter's distribution is fixed in a study (Optuna refuses a categorical whose
    choices change, hps's spec fixes every one, ``Store._check_distributions`` holds it), a
    categorical's stored value is an index into those same choices, and a float's or an int's
    decodes alike whatever its bounds. The query reads no JSON but the first rows'.
    """
    t, p = optuna_models.TrialModel.__table__, optuna_models.TrialParamModel.__table__
    first = (
        select(func.min(p.c.param_id))
        .join(t, p.c.trial_id == t.c.trial_id)
        .where(t.c.study_id == study_id)
        .group_by(p.c.param_name)
    )
    rows = session.execute(
        select(p.c.param_name, p.c.distribution_json).where(p.c.param_id.in_(first))
    ).all()
    return {name: json_to_distribution(encoded) for name, encoded in rows}


def _driver_rows(session: Session, stmt: Any) -> list[tuple[Any, ...]]:
    """``stmt``'s rows as the database driver gives them: plain tuples, without SQLAlchemy's
    row objects and type processing (at 100,000 trials those took longer than the query).
    Only for columns the driver returns as Python values already: integers, floats, text
    (an Enum column comes back as its text)."""
    result = cast(CursorResult[Any], session.execute(stmt))
    try:
        return list(result.cursor.fetchall()) if result.cursor is not None else []
    finally:
        result.close()


def _json_values(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The JSON texts in the last column of ``rows``, decoded in one call (a call per row
    costs more than the decoding of a short text)."""
    return cast(list[Any], json.loads("[" + ",".join(row[-1] for row in rows) + "]"))


def _decoded_steps(rows: Sequence[Any]) -> Iterator[tuple[int, int, float]]:
    """(trial id, step, value) of intermediate-value rows, in Optuna's decoding of inf/NaN."""
    decode = optuna_models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    for trial_id, step, stored, kind in rows:
        yield trial_id, step, decode(stored, kind)


class Store:
    """The one seam to the database: hps's tables and Optuna's, every read and every write.

    ``transaction`` is the only way in: one SQLAlchemy session, committed on success, rolled
    back on any exception, with locks taken in one fixed order (see there) and database errors
    translated into the domain's. The protocol's steps (lease, report, complete, expire) are
    each one transaction: they write Optuna's rows with Optuna's own row-writing code, in the
    same session as hps's rows, so that a kill between any two statements leaves either the
    whole step or none of it.

    It also keeps the in-process cache of Optuna ``Study`` objects: a seeded sampler must keep
    its random state between asks; re-creating it for every lease would replay the same samples.
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
        self._distributions: dict[int, dict[str, BaseDistribution]] = {}
        self._studies_lock = threading.Lock()
        # Lease, complete and expire each read and then write: one at a time in this process,
        # so a study never hands out more than n_trials and a trial never ends twice. Replicas
        # on PostgreSQL also take turns through row locks (see ``transaction``). (The row locks
        # alone would do on PostgreSQL, but with many requests waiting on one study's row, the
        # connection pool runs dry.)
        self._serial = threading.RLock()

    # --- the transaction -------------------------------------------------------------------

    @contextmanager
    def transaction(
        self,
        *,
        serial: bool = False,
        study_id: int | Collection[int] | None = None,
        lease_id: int | Collection[int] | None = None,
    ) -> Iterator[Session]:
        """One transaction: commits on success, rolls back on any exception.

        Locks, always in this order: the process's lock (``serial``: for steps that read and
        then write), then the study's rows (hps's, then Optuna's), then the lease's row; each
        held until the transaction ends. A batch names several studies or leases: each kind is
        locked in id order, so two batches (or a batch and a single step) never wait on each
        other in a cycle. On SQLite the row locks are no-ops (one service owns a SQLite file,
        and the process lock serialises the same sections).

        A value the database refuses (e.g. a NUL character on PostgreSQL) raises RefusedValue;
        a database that cannot be reached or is locked too long raises StorageUnavailable.
        """
        with self._serial if serial else contextlib.nullcontext():
            try:
                with self._sessions.begin() as session:
                    studies, leases = _ids(study_id), _ids(lease_id)
                    if studies:
                        session.execute(sql.LOCK_STUDIES, {"ids": studies})
                        session.execute(sql.LOCK_OPTUNA_STUDIES, {"ids": studies})
                    if leases:
                        session.execute(sql.LOCK_LEASES, {"ids": leases})
                    yield session
            except sqlalchemy.exc.DataError as error:
                raise RefusedValue(f"the database refused a value: {error.orig}") from error
            except sqlalchemy.exc.OperationalError as error:
                raise StorageUnavailable(f"the database is unavailable: {error.orig}") from error

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """A plain transaction over hps's tables (no process lock, no row lock)."""
        return self.transaction()

    # --- counts and reads --------------------------------------------------------------------

    def trial_counts(self, study_id: int, session: Session | None = None) -> TrialCounts:
        """Count a study's trials in SQL, over Optuna's tables (loading them all is O(trials))."""
        with contextlib.ExitStack() as stack:
            if session is None:
                session = stack.enter_context(self.transaction())
            by_state: dict[OptunaState, int] = {
                OptunaState(state) if not isinstance(state, OptunaState) else state: n
                for state, n in session.execute(sql.COUNT_BY_STATE, {"sid": study_id}).all()
            }
        return TrialCounts(
            counted=sum(by_state.values()),
            running=by_state.get(OptunaState.RUNNING, 0),
            waiting=by_state.get(OptunaState.WAITING, 0),
        )

    def running_study_ids(self) -> list[int]:
        """The studies whose stored state is RUNNING, in id order."""
        with self.transaction() as session:
            return list(session.scalars(sql.RUNNING_STUDIES).all())

    def study_state(self, session: Session, study_id: int) -> str | None:
        """The study's stored state (``StudyState``'s value), or None for an unknown study."""
        return session.scalar(sql.STUDY_STATE, {"sid": study_id})

    def trial(self, trial_id: int, session: Session | None = None) -> FrozenTrial:
        """The trial as stored now (in ``session`` when given); KeyError if there is none."""
        if session is None:
            return self.optuna_storage.get_trial(trial_id)
        return _frozen_trial(session, trial_id)

    def trials(self, study_id: int) -> list[FrozenTrial]:
        """Every trial of the study, in number order, as Optuna's ``get_trials`` gives them.

        Six set-based queries (trials, then their parameters, values, attributes and
        intermediate values, each for the whole study) instead of Optuna's ORM, which builds
        an object per row: for 10,000 trials the ORM took most of the analysis. Each
        parameter's distribution is read once (``_distributions``), not once a row.
        """
        t, p, v, u, a, m = _tables()
        with self._snapshot() as session:
            distributions = _distributions(session, study_id)
            rows = session.execute(
                select(
                    t.c.trial_id,
                    t.c.number,
                    t.c.state,
                    t.c.datetime_start,
                    t.c.datetime_complete,
                )
                .where(t.c.study_id == study_id)
                .order_by(t.c.number)
            ).all()
            params = session.execute(
                _of_study(study_id, p, p.c.trial_id, p.c.param_name, p.c.param_value).order_by(
                    p.c.param_id
                )
            ).all()
            values = session.execute(
                _of_study(study_id, v, v.c.trial_id, v.c.objective, v.c.value, v.c.value_type)
            ).all()
            user = session.execute(
                _of_study(study_id, u, u.c.trial_id, u.c.key, u.c.value_json)
            ).all()
            system = session.execute(
                _of_study(study_id, a, a.c.trial_id, a.c.key, a.c.value_json)
            ).all()
            steps = session.execute(
                _of_study(
                    study_id,
                    m,
                    m.c.trial_id,
                    m.c.step,
                    m.c.intermediate_value,
                    m.c.intermediate_value_type,
                )
            ).all()
        by_id: dict[int, dict[str, Any]] = {
            r.trial_id: {
                "params": {},
                "distributions": {},
                "values": {},
                "user": {},
                "system": {},
                "steps": {},
            }
            for r in rows
        }
        # A trial started after the first query (SQLite reads outside a transaction, statement
        # by statement) is left for the next read.
        for trial_id, name, internal in params:
            if trial_id in by_id:
                distribution = distributions[name]
                by_id[trial_id]["params"][name] = distribution.to_external_repr(internal)
                by_id[trial_id]["distributions"][name] = distribution
        decode_value = optuna_models.TrialValueModel.stored_repr_to_value
        for trial_id, objective, stored, kind in values:
            if trial_id in by_id:
                by_id[trial_id]["values"][objective] = decode_value(stored, kind)
        for trial_id, key, encoded in user:
            if trial_id in by_id:
                by_id[trial_id]["user"][key] = json.loads(encoded)
        for trial_id, key, encoded in system:
            if trial_id in by_id:
                by_id[trial_id]["system"][key] = json.loads(encoded)
        for trial_id, step, value in _decoded_steps(steps):
            if trial_id in by_id:
                by_id[trial_id]["steps"][step] = value
        return [_frozen(r, by_id[r.trial_id]) for r in rows]

    def trial_table(self, study_id: int) -> TrialTable:
        """The study's trials as the analysis reads them (see ``TrialTable``): four set-based
        queries for what an outcome needs, and nothing per trial that it does not (values,
        distributions, curves, the other attributes: at 10,000 trials those were most of the
        rows and of the time of ``trials``)."""
        t, p, _, u, a, _ = _tables()
        with self._snapshot() as session:
            distributions = _distributions(session, study_id)
            rows = _driver_rows(
                session,
                select(t.c.trial_id, t.c.number, t.c.state)
                .where(t.c.study_id == study_id)
                .order_by(t.c.number),
            )
            params = _driver_rows(
                session, _of_study(study_id, p, p.c.trial_id, p.c.param_name, p.c.param_value)
            )
            user = _driver_rows(
                session,
                _of_study(study_id, u, u.c.trial_id, u.c.key, u.c.value_json).where(
                    u.c.key.in_(ANALYSIS_ATTRS)
                ),
            )
            queued = _driver_rows(
                session,
                _of_study(study_id, a, a.c.trial_id, a.c.value_json).where(
                    a.c.key == "fixed_params", t.c.state == OptunaState.WAITING
                ),
            )
        index = {trial_id: i for i, (trial_id, _, _) in enumerate(rows)}
        table = TrialTable(
            trial_ids=[trial_id for trial_id, _, _ in rows],
            numbers=[number for _, number, _ in rows],
            states=[OptunaState[name] for _, _, name in rows],  # Optuna's Enum column: names
            params=[{} for _ in rows],
            attrs=[{} for _ in rows],
        )
        # A trial started after the first query is left for the next read (as in ``trials``).
        for trial_id, name, internal in params:
            i = index.get(trial_id)
            if i is not None:
                table.params[i][name] = distributions[name].to_external_repr(internal)
        for (trial_id, key, _), value in zip(user, _json_values(user), strict=True):
            i = index.get(trial_id)
            if i is not None:
                table.attrs[i][key] = value
        for (trial_id, _), value in zip(queued, _json_values(queued), strict=True):
            i = index.get(trial_id)
            if i is not None and table.states[i] == OptunaState.WAITING:
                table.params[i] = value
        return table

    def curves(self, trial_ids: Collection[int]) -> dict[int, dict[int, float]]:
        """The learning curves (intermediate value by step) of ``trial_ids``, by trial id; a
        trial without any is absent. For the few trials an analysis shows: a query per
        ``CURVES_PER_QUERY`` of them."""
        m = optuna_models.TrialIntermediateValueModel.__table__
        ids = sorted(set(trial_ids))
        out: dict[int, dict[int, float]] = {}
        with self.transaction() as session:
            for first in range(0, len(ids), CURVES_PER_QUERY):
                steps = session.execute(
                    select(
                        m.c.trial_id, m.c.step, m.c.intermediate_value, m.c.intermediate_value_type
                    ).where(m.c.trial_id.in_(ids[first : first + CURVES_PER_QUERY]))
                ).all()
                for trial_id, step, value in _decoded_steps(steps):
                    out.setdefault(trial_id, {})[step] = value
        return out

    @contextmanager
    def _snapshot(self) -> Iterator[Session]:
        """A transaction whose queries all read one snapshot of the database."""
        with self.transaction() as session:
            if session.get_bind().dialect.name == "postgresql":
                # READ COMMITTED takes a snapshot per statement.
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    def lease(self, trial_id: int, session: Session | None = None) -> Lease | None:
        """The lease on ``trial_id``, or None if it was never leased."""
        with contextlib.ExitStack() as stack:
            if session is None:
                session = stack.enter_context(self.transaction())
            row = session.execute(sql.LEASE, {"tid": trial_id}).one_or_none()
            return None if row is None else _lease(row)

    def leases(self, trial_ids: Collection[int]) -> dict[int, Lease]:
        """The leases on those of ``trial_ids`` that were ever leased, by trial id (one query)."""
        with self.transaction() as session:
            rows = session.execute(sql.LEASES_OF, {"ids": list(trial_ids)}).all()
        return {row.trial_id: _lease(row) for row in rows}

    def expired_leases(self, now: datetime) -> list[Lease]:
        """Leases not released whose time ran out by ``now``."""
        with self.transaction() as session:
            rows = session.execute(sql.EXPIRED_LEASES, {"now": now}).all()
        return [_lease(row) for row in rows]

    # --- the lease ----------------------------------------------------------------------------

    def next_trial(
        self, session: Session, study_id: int, *, like: Mapping[str, Any] | None = None
    ) -> FrozenTrial | None:
        """The trial a lease of ``study_id`` starts, as it will be stored, before any write:
        the oldest queued trial (its fixed parameters and attributes included), else a new one
        with the next number. ``start_trial`` writes it. Call it under the study's lock.

        With ``like``, the oldest queued trial whose fixed parameters include those items (a
        batch's later trials train the first one's workload); None when trials are queued but
        none is like that (a new trial would overrun the budget that the queued ones fill).
        """
        if like is None:
            queued = session.scalar(sql.FIRST_WAITING, {"sid": study_id})
        else:
            candidates = self._queued_fixed_params(session, study_id)
            queued = next(
                (
                    trial_id
                    for trial_id, fixed in candidates
                    if all(fixed.get(k) == v for k, v in like.items())
                ),
                None,
            )
            if queued is None and candidates:
                return None
        now = datetime.now()  # Optuna's stamps are local and naive
        if queued is not None:
            frozen = self.trial(queued, session)
            frozen.state = OptunaState.RUNNING
            frozen.datetime_start = now
            return frozen
        number = session.scalar(sql.COUNT_TRIALS, {"sid": study_id})
        return FrozenTrial(
            number=int(number or 0),
            state=OptunaState.RUNNING,
            value=None,
            datetime_start=now,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=-1,  # not stored yet
        )

    def start_trial(
        self, session: Session, study_id: int, trial: FrozenTrial, user_attrs: Mapping[str, Any]
    ) -> int:
        """Write ``trial`` (from ``next_trial``, its parameters sampled) as RUNNING with
        ``user_attrs`` added, in ``session``; returns its id.

        A new trial is inserted with the number ``next_trial`` counted (the study's lock holds
        it), a queued one is claimed (WAITING to RUNNING); then its parameters and attributes,
        one statement each, in Optuna's encodings (``tests/service/test_storage_contract.py``
        reads them back through Optuna). Optuna's own writers spend a query per row checking
        what the study's lock already guarantees.

        The trial is also noted on ``session`` until it commits: a later draw in the same
        transaction (a batch lease) must see it as the sampler would once it is stored
        (``sampling``), and the sampler reads through Optuna's own connection, which cannot.
        """
        trial_id = trial_id_of(trial)
        if trial_id < 0:
            trial_id = session.execute(
                sql.INSERT_TRIAL,
                {"num": trial.number, "sid": study_id, "start": trial.datetime_start},
            ).scalar_one()
        else:
            claimed = session.execute(
                sql.CLAIM_TRIAL, {"tid": trial_id, "start": trial.datetime_start}
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise StorageUnavailable(f"queued trial {trial_id} was taken meanwhile")
        self._check_distributions(study_id, trial.distributions)
        if trial.params:
            session.execute(
                sql.INSERT_PARAMS,
                [
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": trial.distributions[name].to_internal_repr(value),
                        "distribution_json": distribution_to_json(trial.distributions[name]),
                    }
                    for name, value in trial.params.items()
                ],
            )
        _upsert_attrs(session, "user", trial_id, {**trial.user_attrs, **user_attrs})
        _upsert_attrs(session, "system", trial_id, trial.system_attrs)
        stored = copy.deepcopy(trial)
        stored._trial_id = int(trial_id)
        stored.user_attrs = {**trial.user_attrs, **user_attrs}
        session.info.setdefault(_STARTED, []).append(stored)
        return int(trial_id)

    @staticmethod
    def _queued_fixed_params(session: Session, study_id: int) -> list[tuple[int, dict[str, Any]]]:
        """The oldest ``QUEUED_SCAN`` queued trials of the study with their fixed parameters,
        in number order (one query)."""
        trial = optuna_models.TrialModel
        attr = optuna_models.TrialSystemAttributeModel
        rows = session.execute(
            select(trial.trial_id, attr.value_json)
            .outerjoin(attr, (attr.trial_id == trial.trial_id) & (attr.key == "fixed_params"))
            .where(trial.study_id == study_id, trial.state == OptunaState.WAITING)
            .order_by(trial.number)
            .limit(QUEUED_SCAN)
        ).all()
        return [(int(i), json.loads(encoded) if encoded else {}) for i, encoded in rows]

    def _check_distributions(
        self, study_id: int, distributions: Mapping[str, BaseDistribution]
    ) -> None:
        """A parameter keeps its distribution across a study, as Optuna requires (hps's spec
        fixes it; this holds the seam to it, against the first one this process wrote)."""
        with self._studies_lock:
            known = self._distributions.setdefault(study_id, {})
            for name, distribution in distributions.items():
                first = known.setdefault(name, distribution)
                check_distribution_compatibility(first, distribution)

    def add_lease(self, session: Session, lease: Lease) -> None:
        session.execute(
            sql.INSERT_LEASE,
            {
                "trial_id": lease.trial_id,
                "study_id": lease.study_id,
                "token_hash": lease.token_hash,
                "expires_at": lease.expires_at,
                "released": False,
            },
        )

    # --- reports --------------------------------------------------------------------------------

    def renew(
        self, session: Session, trial_id: int, token_hash: str, now: datetime, until: datetime
    ) -> Lease | None:
        """Push the lease's expiry to ``until`` if it is live under ``token_hash`` at ``now``
        and its trial is running; None when it is not.

        One conditional UPDATE, so a renewal and the reaper cannot both win: a lease the
        reaper has seen expired is never renewed, and a renewed one is never reaped.
        """
        params = {"tid": trial_id, "hash": token_hash, "now": now, "until": until}
        row = session.execute(sql.RENEW, params).one_or_none()
        return None if row is None else _lease(row)

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
        if session.scalar(sql.TRIAL_STATE, {"tid": trial_id}) != OptunaState.RUNNING:
            return False
        model = optuna_models.TrialIntermediateValueModel
        stored, kind = model.intermediate_value_to_stored_repr(value)
        row = {
            "trial_id": trial_id,
            "step": step,
            "intermediate_value": stored,
            "intermediate_value_type": kind,
        }
        session.execute(sql.INSERT_STEP[_dialect(session)], row)
        return True

    # --- the end of a trial -------------------------------------------------------------------

    def finish_trial(
        self,
        session: Session,
        trial: FrozenTrial,
        state: OptunaState,
        value: float | None,
        user_attrs: Mapping[str, Any],
    ) -> FrozenTrial:
        """End the running ``trial`` (as read in ``session``): its state and end time, its
        attributes, its value, and the release of its lease, in that one transaction (as
        ``study.tell`` would in several). Returns the trial as it now stands.

        Raises Optuna's UpdateFinishedTrialError, with nothing written, if it has ended.
        """
        assert state.is_finished()
        trial_id = trial_id_of(trial)
        now = datetime.now()  # Optuna's stamps are local and naive
        ended = session.execute(sql.END_TRIAL, {"tid": trial_id, "final": state, "end": now})
        if ended.rowcount != 1:  # type: ignore[attr-defined]
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"trial {trial_id} has ended already; it cannot be ended again"
            )
        _upsert_attrs(session, "user", trial_id, user_attrs)
        if value is not None:
            stored, kind = optuna_models.TrialValueModel.value_to_stored_repr(value)
            session.execute(
                sql.INSERT_VALUE,
                {"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind},
            )
        self.release(session, trial_id)
        done = copy.deepcopy(trial)
        done.state = state
        done.value = value
        done.datetime_complete = now
        done.user_attrs = {**trial.user_attrs, **user_attrs}
        return done

    def release(self, session: Session, trial_id: int) -> None:
        """Release the lease on a trial that has ended already."""
        session.execute(sql.RELEASE, {"tid": trial_id})

    def enqueue(
        self,
        session: Session,
        study_id: int,
        params: Mapping[str, Any],
        user_attrs: Mapping[str, Any],
    ) -> int:
        """Queue a trial with fixed ``params`` in ``session``, as ``study.enqueue_trial`` does."""
        template = optuna.trial.create_trial(
            state=OptunaState.WAITING,
            system_attrs={"fixed_params": dict(params)},
            user_attrs=dict(user_attrs),
        )
        model = self.optuna_storage._get_prepared_new_trial(study_id, template, session)
        return int(model.trial_id)

    def enqueue_many(self, study_id: int, cells: Sequence[Mapping[str, Any]]) -> None:
        """Queue one trial per cell of a new study, numbered in order, in one transaction.

        The rows Optuna's ``enqueue_trial`` writes (a WAITING trial whose ``fixed_params``
        system attribute holds the cell), in three statements with the driver's executemany:
        Optuna's one transaction per trial took 31 s for a 6,000-cell grid. Only for a study
        that nothing leases from yet (not in ``hps_studies``): the numbers are not locked. A
        lease claims these trials by one indexed query (``next_trial``) and draws nothing for
        fixed parameters, so Optuna's trial cache need not know them.
        """
        trial = optuna_models.TrialModel
        attr = optuna_models.TrialSystemAttributeModel
        with self.transaction() as session:
            connection = session.connection()
            mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
            waiting = OptunaState.WAITING.name  # Optuna's Enum column stores the name
            connection.exec_driver_sql(
                f"INSERT INTO {trial.__tablename__} (study_id, number, state) "
                f"VALUES ({mark}, {mark}, {mark})",
                [(study_id, n, waiting) for n in range(len(cells))],
            )
            numbered = connection.exec_driver_sql(
                f"SELECT number, trial_id FROM {trial.__tablename__} WHERE study_id = {mark}",
                (study_id,),
            )
            ids: dict[int, int] = dict(numbered.cursor.fetchall() if numbered.cursor else [])
            encode = json.JSONEncoder().encode  # one encoder: json.dumps builds one per call
            connection.exec_driver_sql(
                f"INSERT INTO {attr.__tablename__} (trial_id, key, value_json) "
                f"VALUES ({mark}, {mark}, {mark})",
                [(ids[n], "fixed_params", encode(dict(cell))) for n, cell in enumerate(cells)],
            )

    # --- Optuna studies ---------------------------------------------------------------------

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

    def delete_optuna_study(self, study_id: int) -> None:
        """Delete a study from Optuna's tables, with its trials (a submit that lost the race for
        its Idempotency-Key to another replica's: ``service.studies``)."""
        self.optuna_storage.delete_study(study_id)
        with self._studies_lock:
            self._studies.pop(study_id, None)

    @staticmethod
    def study_id_of(study: optuna.Study) -> int:
        """The storage id of ``study`` (Optuna keeps it in a private field)."""
        return int(study._study_id)

    def optuna_study(self, study_id: int, optuna_name: str, spec: StudySpec) -> optuna.Study:
        """The cached Optuna study, loaded on first use (e.g. after a restart)."""
        with self._studies_lock:
            study = self._studies.get(study_id)
            if study is None:
                study = optuna.load_study(
                    study_name=optuna_name, storage=self.optuna_storage, pruner=build_pruner(spec)
                )
                # Re-seed past the trials already drawn, so a restart does not replay them.
                study.sampler = build_sampler(spec, n_existing=self._count_trials(study_id))
                self._studies[study_id] = study
            return study

    @staticmethod
    @contextmanager
    def sampling(
        study: optuna.Study, trial: FrozenTrial, session: Session | None = None
    ) -> Iterator[optuna.Study]:
        """``study``, ready for its sampler to draw ``trial``'s parameters before ``trial`` is
        stored: its per-ask trial cache dropped (as ``Study.ask`` does, so samplers read the
        trials afresh), and what the sampler writes to ``trial`` through the storage (TPE with
        the constant liar shares its relative sample as system attributes) kept in
        ``trial.system_attrs``, for ``start_trial`` to write with the rest.

        The trials ``session`` started and has not committed yet (a batch lease's earlier
        ones) are shown to the sampler as stored: so k trials drawn in one transaction are
        what k leases one after the other would draw (TPE's constant liar counts them)."""
        study._thread_local.cached_all_trials = None
        storage = study._storage
        pending = [] if session is None else session.info.get(_STARTED, [])
        study._storage = cast(optuna.storages.BaseStorage, _Capture(storage, trial, pending))
        try:
            yield study
        finally:
            study._storage = storage

    def _count_trials(self, study_id: int) -> int:
        """Every trial of the study, retried ones too, counted in SQL (not loaded: O(trials))."""
        with self.transaction() as session:
            return int(session.scalar(sql.COUNT_TRIALS, {"sid": study_id}) or 0)

    def close(self) -> None:
        self.optuna_storage.remove_session()
        self.optuna_storage.engine.dispose()
        self.engine.dispose()


class _Capture:
    """A storage that passes everything to ``backend`` but the system attributes a sampler sets
    on ``trial``, which it keeps in ``trial.system_attrs``, and that adds the ``pending``
    trials (started in this transaction, not committed) to what it reads (see
    ``Store.sampling``)."""

    def __init__(
        self,
        backend: optuna.storages.BaseStorage,
        trial: FrozenTrial,
        pending: Sequence[FrozenTrial] = (),
    ) -> None:
        self._backend = backend
        self._trial = trial
        self._pending = pending

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[OptunaState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self._backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if not self._pending:
            return trials
        # A claimed queued trial is still WAITING to the backend: the pending copy replaces it.
        pending = {trial_id_of(t): t for t in self._pending}
        merged = [t for t in trials if trial_id_of(t) not in pending]
        merged += [
            copy.deepcopy(t) if deepcopy else t
            for t in pending.values()
            if states is None or t.state in states
        ]
        return sorted(merged, key=lambda t: t.number)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if trial_id == trial_id_of(self._trial):
            self._trial.system_attrs[key] = value
        else:
            self._backend.set_trial_system_attr(trial_id, key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


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
