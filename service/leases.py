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
from datetime import UTC, datetime, timedelta
from typing import cast

import optuna
from optuna.trial import TrialState as OptunaState
from sqlalchemy import select

from api_schemas import (
    Failure,
    FailureKind,
    IntermediateReport,
    LeaseRequest,
    Scalar,
    TrialAssignment,
    TrialRead,
    TrialResult,
)
from api_schemas.search_space import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    Param,
    is_active,
    sampling_order,
)
from service import trials as tv
from service.errors import InvalidResult, LeaseConflict, NotFound
from service.models import LeaseRow
from service.store import Store
from service.studies import Clock, Studies, StudyHandle, utc_now

RETRYABLE = (FailureKind.INTERRUPTED, FailureKind.LEASE_EXPIRED)
"""Failures that say nothing about the parameters (the worker went away): run them again."""


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
        # Lease, complete and expire each read trial counts and then write: one at a time in
        # this process, so a study never hands out more than n_trials and a trial never ends
        # twice. (Several replicas on PostgreSQL will need row locks instead.)
        self._lock = threading.Lock()

    def lease(self, request: LeaseRequest) -> TrialAssignment | None:
        """The next trial to train, fairly across studies, or None when there is no work."""
        with self._lock:
            self._expire_locked()
            candidates = []
            for study_id in self._studies.running_ids():
                handle = self._studies.handle(study_id)
                trials = self._studies.optuna_study(handle).get_trials(deepcopy=False)
                running = sum(t.state == OptunaState.RUNNING for t in trials)
                waiting = any(t.state == OptunaState.WAITING for t in trials)
                assert handle.spec.n_trials is not None
                if waiting or tv.budget_used(trials) < handle.spec.n_trials:
                    candidates.append((running, study_id, handle))
            if not candidates:
                return None
            # Fair share: the study with the fewest trials in flight goes first.
            _, _, handle = min(candidates, key=lambda c: (c[0], c[1]))
            return self._start_trial(handle, request)

    def _start_trial(self, handle: StudyHandle, request: LeaseRequest) -> TrialAssignment:
        study = self._studies.optuna_study(handle)
        trial = study.ask()
        try:
            params = _suggest(trial, handle.spec.search_space)
        except Exception as error:
            # Never leave a RUNNING trial without a lease: nothing would ever reap it.
            failure = Failure(kind=FailureKind.ERROR, message=f"sampling failed: {error}")
            trial.set_user_attr(tv.ATTR_FAILURE, failure.model_dump(mode="json"))
            study.tell(trial, state=OptunaState.FAIL)
            raise
        attempt = int(trial.user_attrs.get(tv.ATTR_ATTEMPT, 1))
        trial.set_user_attr(tv.ATTR_ATTEMPT, attempt)
        trial.set_user_attr(tv.ATTR_WORKER, request.worker_id)
        trial.set_user_attr(tv.ATTR_DEVICE, request.device)
        token = secrets.token_urlsafe(32)
        expires_at = self._clock() + self._lease_for
        with self._store.session() as session:
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
            workload=spec.workload,
            seeds=spec.seeds,
            metric=spec.objective.metric,
            time_limit_s=spec.trial_time_limit_s,
        )

    def report(self, trial_id: int, report: IntermediateReport) -> bool:
        """Record an intermediate value and renew the lease; True means: prune this trial."""
        lease = self._live_lease(trial_id, report.lease_token)
        handle = self._studies.handle(lease.study_id)
        study = self._studies.optuna_study(handle)
        trial = optuna.trial.Trial(study, trial_id)
        try:
            trial.report(report.value, report.step)
        except RuntimeError as finished:  # the trial ended meanwhile (expired or completed)
            raise LeaseConflict(f"trial {trial_id} is no longer running") from finished
        with self._store.session() as session:
            row = session.get(LeaseRow, trial_id)
            assert row is not None
            row.expires_at = self._clock() + self._lease_for
            row.last_step = report.step
        # Never prune inside the trial's own warmup: its loss there says nothing yet.
        warmup = int(trial.params.get("warmup_steps", 0))
        return report.step >= warmup and trial.should_prune()

    def complete(self, trial_id: int, result: TrialResult) -> TrialRead:
        """Finish a trial with the worker's result. The same token and body give the same answer."""
        with self._lock:
            lease = self._lease(trial_id)
            if lease.token_hash != _hash(result.lease_token):
                raise LeaseConflict(f"trial {trial_id} is leased under another token")
            handle = self._studies.handle(lease.study_id)
            study = self._studies.optuna_study(handle)
            if lease.released:
                # Either this worker's result is already recorded (answer as before), or the
                # lease expired and the trial was failed and re-queued without it.
                frozen = study._storage.get_trial(trial_id)
                if _failure_kind(frozen) == FailureKind.LEASE_EXPIRED:
                    raise LeaseConflict(f"the lease on trial {trial_id} expired")
                return tv.trial_read(handle.id, frozen)
            if _aware(lease.expires_at) <= self._clock():
                self._expire_locked()
                raise LeaseConflict(f"the lease on trial {trial_id} expired")
            self._finish(handle, study, lease, result)
            self._studies.finish_if_done(handle)
            return tv.trial_read(handle.id, study._storage.get_trial(trial_id))

    def _finish(
        self, handle: StudyHandle, study: optuna.Study, lease: LeaseRow, result: TrialResult
    ) -> None:
        trial_id = lease.trial_id
        value = self._objective(handle, result) if result.state == "completed" else None
        storage = study._storage
        storage.set_trial_user_attr(
            trial_id, tv.ATTR_SEEDS, [s.model_dump(mode="json") for s in result.seeds]
        )
        storage.set_trial_user_attr(trial_id, tv.ATTR_DEVICE, result.device)
        storage.set_trial_user_attr(trial_id, tv.ATTR_TORCH, result.torch_version)
        storage.set_trial_user_attr(trial_id, tv.ATTR_WALL_TIME, result.wall_time_s)
        storage.set_trial_user_attr(trial_id, tv.ATTR_STEPS_PER_SECOND, result.steps_per_second)
        if result.state == "completed":
            _tell(study, trial_id, values=value)
        elif result.state == "pruned":
            _tell(study, trial_id, state=OptunaState.PRUNED)
        else:
            assert result.failure is not None
            self._fail(handle, study, lease, result.failure)
        with self._store.session() as session:
            row = session.get(LeaseRow, trial_id)
            assert row is not None
            row.released = True

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

    def _fail(
        self, handle: StudyHandle, study: optuna.Study, lease: LeaseRow, failure: Failure
    ) -> None:
        storage = study._storage
        failure_attr = failure.model_dump(mode="json")
        storage.set_trial_user_attr(lease.trial_id, tv.ATTR_FAILURE, failure_attr)
        retry = failure.kind in RETRYABLE and lease.attempt < self._max_attempts
        if retry:
            storage.set_trial_user_attr(lease.trial_id, tv.ATTR_RETRIED, True)
        _tell(study, lease.trial_id, state=OptunaState.FAIL)
        if retry:
            params = storage.get_trial(lease.trial_id).params
            study.enqueue_trial(params, user_attrs={tv.ATTR_ATTEMPT: lease.attempt + 1})

    def expire(self) -> int:
        """Fail and re-queue every trial whose lease ran out; returns how many."""
        with self._lock:
            return self._expire_locked()

    def _expire_locked(self) -> int:
        now = self._clock()
        with self._store.session() as session:
            stmt = select(LeaseRow).where(LeaseRow.released.is_(False), LeaseRow.expires_at <= now)
            stale = list(session.scalars(stmt).all())
        for lease in stale:
            handle = self._studies.handle(lease.study_id)
            study = self._studies.optuna_study(handle)
            if study._storage.get_trial(lease.trial_id).state == OptunaState.RUNNING:
                message = f"lease expired: no word from worker {lease.worker_id!r} in time"
                self._fail(
                    handle, study, lease, Failure(kind=FailureKind.LEASE_EXPIRED, message=message)
                )
            with self._store.session() as session:
                row = session.get(LeaseRow, lease.trial_id)
                assert row is not None
                row.released = True
            self._studies.finish_if_done(handle)
        return len(stale)

    def _lease(self, trial_id: int) -> LeaseRow:
        with self._store.session() as session:
            lease = session.get(LeaseRow, trial_id)
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


def _tell(
    study: optuna.Study,
    trial_id: int,
    values: float | None = None,
    state: OptunaState | None = None,
) -> None:
    # Study.tell takes a trial *number* (or a Trial), not the storage-wide trial id.
    number = study._storage.get_trial(trial_id).number
    study.tell(number, values, state=state)


def _failure_kind(trial: optuna.trial.FrozenTrial) -> str | None:
    failure = trial.user_attrs.get(tv.ATTR_FAILURE)
    return None if failure is None else failure.get("kind")


def _suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Scalar]:
    """Draw every active parameter, parents before the parameters conditional on them."""
    params: dict[str, Scalar] = {}
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
