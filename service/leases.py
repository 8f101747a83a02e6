"""Leases: hand a trial to a worker, take its reports and its result, expire lost workers.

The life of a trial, as this module drives it::

    lease()     Optuna ask (a re-queued WAITING trial first), params sampled from the spec's
                search space, a lease recorded with a hashed token and an expiry
    report()    intermediate value recorded with Optuna; renews the lease; answers prune or not
    complete()  per-seed results stored as trial attributes, then Optuna tell; idempotent
    expire()    a lease not renewed in time fails its trial ("lease expired") and queues its
                parameters again, up to ``max_attempts`` runs

A report or a completion under an expired, released or foreign lease raises LeaseConflict and
changes nothing.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import statistics
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn, cast

import optuna
from optuna.trial import TrialState as OptunaState
from sqlalchemy import select, update
from sqlalchemy.orm import Session, object_session

from api_schemas import (
    Failure,
    FailureKind,
    IntermediateReport,
    LeaseRequest,
    Scalar,
    StudyState,
    TrialAssignment,
    TrialRead,
    TrialResult,
)
from api_schemas.search_space import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    is_active,
    sampling_order,
)
from api_schemas.studies import WORKLOAD_PARAM, StudySpec
from service import trials as tv
from service.errors import InvalidResult, LeaseConflict, NotFound
from service.models import LeaseRow, StudyRow
from service.store import Store
from service.studies import Clock, Studies, StudyHandle, utc_now

RETRYABLE = (FailureKind.INTERRUPTED, FailureKind.LEASE_EXPIRED)
"""Failures that say nothing about the parameters (the worker went away): run them again."""


@dataclass(frozen=True)
class Renewal:
    """A lease pushed out: its study, and its new expiry."""

    study_id: int
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Leases:
    """The trial half of the domain layer."""

    def __init__(
        self,
        store: Store,
        studies: Studies,
        *,
        lease_seconds: float,
        max_attempts: int,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._studies = studies
        self._lease_for = timedelta(seconds=lease_seconds)
        self._max_attempts = max_attempts
        self._clock = clock
        # Lease, complete and expire each read and then write: one at a time in this process,
        # so a study never hands out more than n_trials and a trial never ends twice. Replicas
        # on PostgreSQL also take turns through row locks: the study's row around a lease or a
        # re-queue, the lease's row around a completion or an expiry (see Store.lock_study).
        # (The row locks alone would do on PostgreSQL, but a lease holds two pooled connections
        # while it waits: with many requests waiting on one study's row, the pool runs dry.)
        self._lock = threading.Lock()

    def lease(self, request: LeaseRequest) -> TrialAssignment | None:
        """The next trial to train, fairly across studies, or None when there is no work."""
        with self._lock:
            self._expire_locked()
            candidates = []
            for study_id in self._studies.running_ids():
                handle = self._studies.handle(study_id)
                counts = self._store.trial_counts(study_id)
                if counts.has_work(_n_trials(handle)):
                    candidates.append((counts.running, study_id, handle))
            # Fair share: the study with the fewest trials in flight goes first.
            for _, _, handle in sorted(candidates, key=lambda c: (c[0], c[1])):
                assignment = self._start_trial(handle, request)
                if assignment is not None:
                    return assignment
            return None

    def _start_trial(self, handle: StudyHandle, request: LeaseRequest) -> TrialAssignment | None:
        """Ask Optuna for a trial of ``handle`` and lease it, or None if another replica took the
        study's last trial since it was counted."""
        with self._store.session() as session:
            # The study's row is held from the budget check until the lease is committed.
            self._store.lock_study(session, handle.id)
            if not self._store.trial_counts(handle.id).has_work(_n_trials(handle)):
                return None
            return self._ask(session, handle, request)

    def _ask(self, session: Session, handle: StudyHandle, request: LeaseRequest) -> TrialAssignment:
        study = self._studies.optuna_study(handle)
        trial = self._store.ask(study)
        try:
            params = _suggest(trial, handle.spec)
        except Exception as error:
            # Never leave a RUNNING trial without a lease: nothing would ever reap it.
            failure = Failure(kind=FailureKind.ERROR, message=f"sampling failed: {error}")
            trial.set_user_attr(tv.ATTR_FAILURE, failure.model_dump(mode="json"))
            study.tell(trial, state=OptunaState.FAIL)
            raise
        attempt = int(trial.user_attrs.get(tv.ATTR_ATTEMPT, 1))
        attrs = {tv.ATTR_ATTEMPT: attempt, tv.ATTR_WORKER: request.worker_id}
        self._store.set_trial_user_attrs(trial._trial_id, {**attrs, tv.ATTR_DEVICE: request.device})
        token = secrets.token_urlsafe(32)
        expires_at = self._clock() + self._lease_for
        session.add(
            LeaseRow(
                trial_id=trial._trial_id,
                study_id=handle.id,
                token_hash=_hash(token),
                worker_id=request.worker_id,
                device=request.device,
                attempt=attempt,
                expires_at=expires_at,
            )
        )
        spec = handle.spec
        return TrialAssignment(
            trial_id=trial._trial_id,
            study_id=handle.id,
            trial_number=trial.number,
            lease_token=token,
            lease_expires_at=expires_at,
            attempt=attempt,
            params=params,
            workload=spec.workload_for(params.get(WORKLOAD_PARAM)),
            seeds=spec.seeds,
            metric=spec.objective.metric,
            time_limit_s=spec.trial_time_limit_s,
            lease_seconds=self._lease_for.total_seconds(),
        )

    def report(self, trial_id: int, report: IntermediateReport) -> bool:
        """Record an intermediate value and renew the lease; True means: prune this trial.

        The renewal, the value and the study's state are one transaction: a report is the
        request workers send most, so it costs a few statements, not a trial read.
        """
        with self._store.session() as session:
            renewed = self._renew_in(session, trial_id, report.lease_token, report.step)
            if renewed is None:
                self._refuse(trial_id, report.lease_token)  # nothing was written
            study_id = renewed.study_id
            if not self._store.record_intermediate_value(
                session, trial_id, report.step, report.value
            ):  # it ended meanwhile: the renewal is rolled back with this
                raise LeaseConflict(f"trial {trial_id} is no longer running")
            state = session.scalar(select(StudyRow.state).where(StudyRow.id == study_id))
        if state == StudyState.CANCELLED:
            return True  # stop now; the worker completes it as pruned with what it has
        handle = self._studies.handle(study_id)
        study = self._studies.optuna_study(handle)
        if isinstance(study.pruner, optuna.pruners.NopPruner):
            return False
        frozen = study._storage.get_trial(trial_id)
        # Never prune inside the trial's own warmup: its loss there says nothing yet.
        if report.step < int(frozen.params.get("warmup_steps", 0)):
            return False
        return study.pruner.prune(study, frozen)

    def heartbeat(self, trial_id: int, token: str) -> datetime:
        """Renew the lease of a worker that is still training; returns the new expiry."""
        with self._store.session() as session:
            renewed = self._renew_in(session, trial_id, token)
        if renewed is None:
            self._refuse(trial_id, token)
        return renewed.expires_at

    def _renew_in(
        self, session: Session, trial_id: int, token: str, last_step: int | None = None
    ) -> Renewal | None:
        """Push the lease's expiry out by a lease length if it is still live under ``token``;
        None when it is not live.

        One conditional UPDATE, so a renewal and the reaper cannot both win: a lease the
        reaper has seen expired is never renewed, and a renewed one is never reaped.
        """
        now = self._clock()
        values: dict[str, object] = {"expires_at": now + self._lease_for}
        if last_step is not None:
            values["last_step"] = last_step
        stmt = (
            update(LeaseRow)
            .where(
                LeaseRow.trial_id == trial_id,
                LeaseRow.token_hash == _hash(token),
                LeaseRow.released.is_(False),
                LeaseRow.expires_at > now,
            )
            .values(values)
            .returning(LeaseRow.study_id, LeaseRow.expires_at)
        )
        row = session.execute(stmt).one_or_none()
        if row is None:
            return None
        return Renewal(study_id=int(row.study_id), expires_at=_aware(row.expires_at))

    def _refuse(self, trial_id: int, token: str) -> NoReturn:
        """Raise why a lease on ``trial_id`` under ``token`` could not be renewed."""
        self._live_lease(trial_id, token)  # raises NotFound or LeaseConflict with the reason
        raise LeaseConflict(f"the lease on trial {trial_id} is no longer valid")

    def complete(self, trial_id: int, result: TrialResult) -> TrialRead:
        """Finish a trial with the worker's result. The same token and body give the same answer."""
        with self._lock, self._store.session() as session:
            # The lease's row is held until this completion is recorded: a second completion or
            # an expiry in another replica waits, then finds the outcome.
            lease = self._lease(trial_id, session)
            if lease.token_hash != _hash(result.lease_token):
                raise LeaseConflict(f"trial {trial_id} is leased under another token")
            handle = self._studies.handle(lease.study_id)
            study = self._studies.optuna_study(handle)
            frozen = study._storage.get_trial(trial_id)
            # A finished trial under a live lease: the service died between ending the trial
            # and releasing its lease (two transactions). Its result is recorded all the same.
            if lease.released or frozen.state.is_finished():
                # Either this worker's result is already recorded (answer as before), or the
                # lease expired and the trial was failed and re-queued without it.
                if _failure_kind(frozen) == FailureKind.LEASE_EXPIRED:
                    raise LeaseConflict(f"the lease on trial {trial_id} expired")
                return tv.trial_read(handle.id, frozen)
            expired = _aware(lease.expires_at) <= self._clock()
            if expired:
                self._expire_one(lease)
            else:
                self._finish(handle, study, lease, result, frozen.number)
        self._studies.finish_if_done(handle)
        if expired:
            raise LeaseConflict(f"the lease on trial {trial_id} expired")
        return tv.trial_read(handle.id, study._storage.get_trial(trial_id))

    def _finish(
        self,
        handle: StudyHandle,
        study: optuna.Study,
        lease: LeaseRow,
        result: TrialResult,
        number: int,
    ) -> None:
        trial_id = lease.trial_id
        value = self._objective(handle, result) if result.state == "completed" else None
        attrs = {
            tv.ATTR_SEEDS: [s.model_dump(mode="json") for s in result.seeds],
            tv.ATTR_DEVICE: result.device,
            tv.ATTR_TORCH: result.torch_version,
            tv.ATTR_WALL_TIME: result.wall_time_s,
            tv.ATTR_STEPS_PER_SECOND: result.steps_per_second,
        }
        self._store.set_trial_user_attrs(trial_id, attrs)
        if result.state == "completed":
            study.tell(number, value)
        elif result.state == "pruned":
            study.tell(number, state=OptunaState.PRUNED)
        else:
            assert result.failure is not None
            self._fail(study, lease, number, result.failure)
        lease.released = True  # committed with the caller's session, which holds the row

    def _objective(self, handle: StudyHandle, result: TrialResult) -> float:
        expected = sorted(handle.spec.seeds)
        got = sorted(s.seed for s in result.seeds)
        if got != expected:
            raise InvalidResult(f"seeds must be exactly {expected}, got {got}")
        metric = handle.spec.objective.metric
        values = [s.loss if metric == "loss" else s.accuracy for s in result.seeds]
        if any(v is None for v in values):
            raise InvalidResult(f"every seed needs {metric} for this study's objective")
        value = statistics.fmean(v for v in values if v is not None)
        if not math.isfinite(value):
            raise InvalidResult("the objective is not finite")
        return value

    def _fail(self, study: optuna.Study, lease: LeaseRow, number: int, failure: Failure) -> None:
        """Fail trial ``number`` with ``failure``; queue its parameters again if it may retry."""
        storage = study._storage
        failure_attr = failure.model_dump(mode="json")
        storage.set_trial_user_attr(lease.trial_id, tv.ATTR_FAILURE, failure_attr)
        retry = failure.kind in RETRYABLE and lease.attempt < self._max_attempts
        if retry:
            # A retry changes what counts towards n_trials (this run stops counting, the queued
            # one starts): a lease counting the budget in between would start a trial too many.
            # So the study's row is held, as a lease holds it, until the re-queue is committed
            # with the session that holds the lease's row.
            session = object_session(lease)
            assert session is not None, "the caller holds the lease's row in a session"
            self._store.lock_study(session, lease.study_id)
            storage.set_trial_user_attr(lease.trial_id, tv.ATTR_RETRIED, True)
        study.tell(number, state=OptunaState.FAIL)
        if retry:
            failed = storage.get_trial(lease.trial_id)
            past = {
                "attempt": lease.attempt,
                "kind": failure.kind.value,
                "message": failure.message,
                "worker_id": lease.worker_id,
            }
            history = [*failed.user_attrs.get(tv.ATTR_HISTORY, []), past]
            study.enqueue_trial(
                failed.params,
                user_attrs={tv.ATTR_ATTEMPT: lease.attempt + 1, tv.ATTR_HISTORY: history},
            )

    def expire(self) -> int:
        """Fail and re-queue every trial whose lease ran out; returns how many."""
        with self._lock:
            return self._expire_locked()

    def _expire_locked(self) -> int:
        now = self._clock()
        stmt = select(LeaseRow.trial_id).where(
            LeaseRow.released.is_(False), LeaseRow.expires_at <= now
        )
        with self._store.session() as session:
            stale = list(session.scalars(stmt).all())
        expired = 0
        for trial_id in stale:
            with self._store.session() as session:
                lease = session.get(LeaseRow, trial_id, with_for_update=True)
                # Under the row's lock, look again: another replica's reaper, a completion or a
                # renewal may have come first, and then this one leaves the lease alone.
                if lease is None or lease.released or _aware(lease.expires_at) > now:
                    continue
                self._expire_one(lease)
            expired += 1
            self._studies.finish_if_done(self._studies.handle(lease.study_id))
        return expired

    def _expire_one(self, lease: LeaseRow) -> None:
        """Fail the trial of an expired ``lease`` (row locked by the caller) and release it."""
        handle = self._studies.handle(lease.study_id)
        study = self._studies.optuna_study(handle)
        trial = study._storage.get_trial(lease.trial_id)
        if trial.state == OptunaState.RUNNING:
            message = f"lease expired: no word from worker {lease.worker_id!r} in time"
            failure = Failure(kind=FailureKind.LEASE_EXPIRED, message=message)
            self._fail(study, lease, trial.number, failure)
        lease.released = True

    def _lease(self, trial_id: int, session: Session | None = None) -> LeaseRow:
        """The lease on ``trial_id``; with ``session``, read with its row locked until that
        session ends."""
        if session is not None:
            lease = session.get(LeaseRow, trial_id, with_for_update=True)
        else:
            with self._store.session() as own:
                lease = own.get(LeaseRow, trial_id)
        if lease is None:
            try:
                self._store.optuna_storage.get_trial(trial_id)
            except KeyError:
                raise NotFound(f"trial {trial_id} does not exist") from None
            raise LeaseConflict(f"trial {trial_id} is not leased")
        return lease

    def _live_lease(self, trial_id: int, token: str) -> LeaseRow:
        lease = self._lease(trial_id)
        if lease.token_hash != _hash(token):
            raise LeaseConflict(f"trial {trial_id} is leased under another token")
        if lease.released or _aware(lease.expires_at) <= self._clock():
            raise LeaseConflict(f"the lease on trial {trial_id} is no longer valid")
        return lease


def _n_trials(handle: StudyHandle) -> int:
    assert handle.spec.n_trials is not None  # the spec fills it in at validation
    return handle.spec.n_trials


def _failure_kind(trial: optuna.trial.FrozenTrial) -> str | None:
    failure = trial.user_attrs.get(tv.ATTR_FAILURE)
    return None if failure is None else failure.get("kind")


def _suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Scalar]:
    """Draw every active parameter, parents before the parameters conditional on them.

    A study with controls first draws which workload to train (a grid's cell fixes it).
    """
    params: dict[str, Scalar] = {}
    if spec.controls:
        params[WORKLOAD_PARAM] = trial.suggest_categorical(WORKLOAD_PARAM, list(spec.workloads))
    space = spec.search_space
    for name in sampling_order(space):
        param = space[name]
        if not is_active(param, params):
            continue
        if isinstance(param, FloatParam):
            params[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
        elif isinstance(param, IntParam):
            params[name] = trial.suggest_int(
                name, param.low, param.high, step=param.step, log=param.log
            )
        elif isinstance(param, CategoricalParam | FixedParam):
            choices = param.choices if isinstance(param, CategoricalParam) else [param.value]
            # Choices are never None (Scalar excludes it), so neither is the suggestion.
            params[name] = cast(Scalar, trial.suggest_categorical(name, choices))
    return params
