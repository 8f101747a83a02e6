"""The SQL of the protocol's steps, built once: ``service.store`` runs these, nothing else does.

Building a SQLAlchemy statement costs several times more than running it. A small UPDATE took
0.25 ms to build and run, and 0.035 ms to run prebuilt with bound parameters. SQLite's own
execute was a tenth of a lease's time, and statement building and cache keys most of the rest
(``python bench/call_costs.py``, cProfile; BENCHMARKS.md, "Scale"). A lease, a report, a
heartbeat and a completion each run several statements on every request. So those statements
are built here, once at import, with a ``bindparam`` for each value that varies. A bound
parameter is never named after a column of the table it writes, because SQLAlchemy reserves
those names for the SET and VALUES clauses.

Optuna's tables are reached through its models' ``__table__``s (the storage seam, principle 9:
only this module and ``service.store`` name them); inserts that must not fail on a row already
there are per dialect (``UPSERT_ATTRS``, ``INSERT_STEP``).
"""

from __future__ import annotations

from typing import Any, cast

from optuna.storages._rdb import models as optuna_models
from optuna.trial import TrialState as OptunaState
from sqlalchemy import BindParameter, Table, bindparam, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from api_schemas import StudyState
from service.models import LeaseRow, StudyRow
from service.trial_record import ATTR_RETRIED

TRIALS = optuna_models.TrialModel.__table__
PARAMS = optuna_models.TrialParamModel.__table__
VALUES = optuna_models.TrialValueModel.__table__
USER_ATTRS = optuna_models.TrialUserAttributeModel.__table__
SYSTEM_ATTRS = optuna_models.TrialSystemAttributeModel.__table__
STEPS = optuna_models.TrialIntermediateValueModel.__table__
OPTUNA_STUDIES = optuna_models.StudyModel.__table__
LEASES = cast(Table, LeaseRow.__table__)
STUDIES = cast(Table, StudyRow.__table__)

_ids: BindParameter[list[int]] = bindparam("ids", expanding=True)

# --- locks (``Store.transaction``), each kind in id order ------------------------------------
LOCK_STUDIES = (
    select(STUDIES.c.id).where(STUDIES.c.id.in_(_ids)).order_by(STUDIES.c.id).with_for_update()
)
LOCK_OPTUNA_STUDIES = (
    select(OPTUNA_STUDIES.c.study_id)
    .where(OPTUNA_STUDIES.c.study_id.in_(_ids))
    .order_by(OPTUNA_STUDIES.c.study_id)
    .with_for_update()
)
LOCK_LEASES = (
    select(LEASES.c.trial_id)
    .where(LEASES.c.trial_id.in_(_ids))
    .order_by(LEASES.c.trial_id)
    .with_for_update()
)

# --- studies -----------------------------------------------------------------------------------
RUNNING_STUDIES = (
    select(STUDIES.c.id).where(STUDIES.c.state == StudyState.RUNNING.value).order_by(STUDIES.c.id)
)
STUDY_STATE = select(STUDIES.c.state).where(STUDIES.c.id == bindparam("sid"))
COUNT_BY_STATE = (
    select(TRIALS.c.state, func.count())
    .where(
        TRIALS.c.study_id == bindparam("sid"),
        ~exists().where(
            USER_ATTRS.c.trial_id == TRIALS.c.trial_id, USER_ATTRS.c.key == ATTR_RETRIED
        ),
    )
    .group_by(TRIALS.c.state)
)
"""A study's trials by state, the retried ones left out (they do not use up the budget)."""
COUNT_TRIALS = select(func.count()).where(TRIALS.c.study_id == bindparam("sid"))

# --- one trial -----------------------------------------------------------------------------------
_tid: BindParameter[int] = bindparam("tid")
TRIAL_ROW = select(
    TRIALS.c.trial_id,
    TRIALS.c.number,
    TRIALS.c.state,
    TRIALS.c.datetime_start,
    TRIALS.c.datetime_complete,
).where(TRIALS.c.trial_id == _tid)
TRIAL_STATE = select(TRIALS.c.state).where(TRIALS.c.trial_id == _tid)
TRIAL_PARAMS = (
    select(PARAMS.c.param_name, PARAMS.c.param_value, PARAMS.c.distribution_json)
    .where(PARAMS.c.trial_id == _tid)
    .order_by(PARAMS.c.param_id)
)
TRIAL_VALUES = select(VALUES.c.objective, VALUES.c.value, VALUES.c.value_type).where(
    VALUES.c.trial_id == _tid
)
TRIAL_USER_ATTRS = select(USER_ATTRS.c.key, USER_ATTRS.c.value_json).where(
    USER_ATTRS.c.trial_id == _tid
)
TRIAL_SYSTEM_ATTRS = select(SYSTEM_ATTRS.c.key, SYSTEM_ATTRS.c.value_json).where(
    SYSTEM_ATTRS.c.trial_id == _tid
)
TRIAL_STEPS = select(
    STEPS.c.step, STEPS.c.intermediate_value, STEPS.c.intermediate_value_type
).where(STEPS.c.trial_id == _tid)
FIRST_WAITING = (
    select(TRIALS.c.trial_id)
    .where(TRIALS.c.study_id == bindparam("sid"), TRIALS.c.state == OptunaState.WAITING)
    .order_by(TRIALS.c.number)
    .limit(1)
)

# --- a trial's writes ----------------------------------------------------------------------------
INSERT_TRIAL = (
    insert(TRIALS)
    .values(
        number=bindparam("num"),
        study_id=bindparam("sid"),
        state=OptunaState.RUNNING,
        datetime_start=bindparam("start"),
    )
    .returning(TRIALS.c.trial_id)
)
CLAIM_TRIAL = (
    update(TRIALS)
    .where(TRIALS.c.trial_id == _tid, TRIALS.c.state == OptunaState.WAITING)
    .values(state=OptunaState.RUNNING, datetime_start=bindparam("start"))
)
"""A queued trial starts: WAITING to RUNNING, or no row when another lease took it."""
END_TRIAL = (
    update(TRIALS)
    .where(TRIALS.c.trial_id == _tid, TRIALS.c.state == OptunaState.RUNNING)
    .values(state=bindparam("final"), datetime_complete=bindparam("end"))
)
"""A running trial ends: no row when it has ended already."""
INSERT_PARAMS = insert(PARAMS)
INSERT_VALUE = insert(VALUES)


def _upsert(dialect: Any, table: Any) -> Any:
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=["trial_id", "key"], set_={"value_json": stmt.excluded.value_json}
    )


UPSERT_ATTRS = {
    name: {"user": _upsert(dialect, USER_ATTRS), "system": _upsert(dialect, SYSTEM_ATTRS)}
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
"""Set a trial's attributes, by dialect, then by kind (``user``, ``system``): executed with a
list of rows, a row already there takes the new value."""
INSERT_STEP = {
    name: dialect.insert(STEPS).on_conflict_do_nothing(index_elements=["trial_id", "step"])
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
"""A trial's value at a step; a step stored before keeps its first value (as Optuna's report)."""

# --- leases ---------------------------------------------------------------------------------------
_LEASE_COLUMNS = (
    LEASES.c.trial_id,
    LEASES.c.study_id,
    LEASES.c.token_hash,
    LEASES.c.expires_at,
    LEASES.c.released,
)
LEASE = select(*_LEASE_COLUMNS).where(LEASES.c.trial_id == _tid)
LEASES_OF = select(*_LEASE_COLUMNS).where(LEASES.c.trial_id.in_(_ids))
EXPIRED_LEASES = select(*_LEASE_COLUMNS).where(
    LEASES.c.released.is_(False), LEASES.c.expires_at <= bindparam("now")
)
INSERT_LEASE = insert(LEASES)
RENEW = (
    update(LEASES)
    .where(
        LEASES.c.trial_id == _tid,
        LEASES.c.token_hash == bindparam("hash"),
        LEASES.c.released.is_(False),
        LEASES.c.expires_at > bindparam("now"),
        exists().where(TRIALS.c.trial_id == _tid, TRIALS.c.state == OptunaState.RUNNING),
    )
    .values(expires_at=bindparam("until"))
    .returning(*_LEASE_COLUMNS)
)
"""Push a live lease's expiry on, in one conditional UPDATE: no row when it is not live, or
when its trial has ended (the dashboard can end a trial without the service)."""
RELEASE = update(LEASES).where(LEASES.c.trial_id == _tid).values(released=True)
