"""Leases: hand a trial to a worker, take its reports and its result, expire lost workers.

The life of a trial, as this module drives it; each step is one transaction (``Store``)::

    lease()     the oldest queued trial of the study with the fewest trials in flight, else a
                new one: parameters drawn from the spec's search space (``sampling``), the trial
                written as RUNNING with them and the lease row (hashed token, expiry)
    report()    intermediate value recorded with Optuna; renews the lease; answers prune or not
                (never inside the trial's own warmup: ``pruning``)
    complete()  per-seed results, the objective (``objective``), the state and the release of
                the lease; idempotent
    expire()    a lease not renewed in time fails its trial ("lease expired") and queues its
                parameters again, up to ``max_attempts`` runs

A batch lease (``lease_batch``) is up to ``max_trials`` single leases of one study and one
workload in one transaction; a single lease is a batch of one. A batch report
(``report_batch``) and a batch completion (``complete_batch``) are each item's single report or
completion, all in one transaction.

A report or a completion under an expired, released or foreign lease raises LeaseConflict and
changes nothing. A kill between any two writes of a step leaves none of it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState
from sqlalchemy.orm import Session

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
from api_schemas.studies import WORKLOAD_PARAM
from api_schemas.trials import (
    BatchCompleted,
    BatchCompletion,
    BatchLeaseRequest,
    BatchOutcome,
    BatchReport,
    BatchReported,
    LeaseBatch,
    ReportOutcome,
)
from service import trial_record
from service import trials as tv
from service.errors import HpsError, InvalidResult, LeaseConflict, NotFound
from service.objective import check_seeds, objective
from service.pruning import may_prune
from service.sampling import sample
from service.store import Lease, Store
from service.studies import Clock, Studies, StudyHandle, utc_now
from service.trial_record import TrialRecord

EXPIRE_ON_LEASE_EVERY = timedelta(seconds=1)
"""How often a lease first expires lost workers' leases (the reaper does it every few seconds
too): on every lease, the scan was half the service's CPU at 1,000 workers (BENCHMARKS.md,
"Scale"), and a re-queued trial a second later changes nothing."""
RETRYABLE = (FailureKind.INTERRUPTED, FailureKind.LEASE_EXPIRED)
"""Failures that say nothing about the parameters (the worker went away): run them again."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
        self._expired_at: datetime | None = None

    # --- lease -------------------------------------------------------------------------------

    def lease(self, request: LeaseRequest) -> TrialAssignment | None:
        """The next trial to train, fairly across studies, or None when there is no work."""
        started = self._lease_up_to(request, max_trials=1)
        return started[0] if started else None

    def lease_batch(self, request: BatchLeaseRequest) -> LeaseBatch | None:
        """Up to ``request.max_trials`` trials of one study and one workload, fairly across
        studies as single leases go, or None when there is no work; one transaction."""
        started = self._lease_up_to(request, max_trials=request.max_trials)
        return LeaseBatch(trials=started) if started else None

    def _lease_up_to(self, request: LeaseRequest, *, max_trials: int) -> list[TrialAssignment]:
        # Lost workers' trials go back in the queue before the next one is chosen, at most once
        # a second (two leases racing here both expiring is harmless: expire is idempotent).
        now = self._clock()
        if self._expired_at is None or now - self._expired_at >= EXPIRE_ON_LEASE_EVERY:
            self._expired_at = now
            self.expire()
        candidates = []
        for study_id in self._studies.running_ids():
            handle = self._studies.handle(study_id)
            counts = self._store.trial_counts(study_id)
            if counts.has_work(_n_trials(handle)):
                candidates.append((counts.running, study_id, handle))
        # Fair share: the study with the fewest trials in flight goes first.
        for _, _, handle in sorted(candidates, key=lambda c: (c[0], c[1])):
            started = self._start_trials(handle, request, max_trials)
            if started:
                return started
        return []

    def _start_trials(
        self, handle: StudyHandle, request: LeaseRequest, max_trials: int
    ) -> list[TrialAssignment]:
        """Start up to ``max_trials`` trials of ``handle``, each under its own lease, in one
        transaction; none if another replica took the study's last trial since it was counted.

        Trial after trial, as that many single leases would: each one is drawn with the
        earlier ones already in the study (``Store.sampling`` shows them to the sampler). All
        train the first one's workload: a later queued trial must be of it, and a new one
        drawn for another is queued again for the next lease (the draw is kept, so the
        sampler's sequence is what single leases give).
        """
        study = self._studies.optuna_study(handle)
        spec = handle.spec
        started: list[TrialAssignment] = []
        with self._store.transaction(serial=True, study_id=handle.id) as session:
            like: dict[str, object] | None = None
            while len(started) < max_trials:
                if not self._store.trial_counts(handle.id, session).has_work(_n_trials(handle)):
                    break
                trial = self._store.next_trial(session, handle.id, like=like)
                if trial is None:
                    break
                # Drawn before anything is written: a sampler that fails leaves nothing behind.
                with self._store.sampling(study, trial, session) as drawing:
                    params = sample(drawing, trial, spec)
                if like is not None and params.get(WORKLOAD_PARAM) != like[WORKLOAD_PARAM]:
                    self._store.enqueue(session, handle.id, params, {})
                    break
                if spec.controls:
                    like = {WORKLOAD_PARAM: params[WORKLOAD_PARAM]}
                started.append(self._start(session, handle, trial, params, request))
        return started

    def _start(
        self,
        session: Session,
        handle: StudyHandle,
        trial: FrozenTrial,
        params: dict[str, Scalar],
        request: LeaseRequest,
    ) -> TrialAssignment:
        """Write ``trial``, its parameters drawn, as RUNNING under a new lease, in ``session``."""
        attempt = TrialRecord.of(trial).attempt
        attrs = trial_record.started(attempt, request.worker_id, request.device)
        trial_id = self._store.start_trial(session, handle.id, trial, attrs)
        token = secrets.token_urlsafe(32)
        lease = Lease(
            trial_id=trial_id,
            study_id=handle.id,
            token_hash=_hash(token),
            expires_at=self._clock() + self._lease_for,
        )
        self._store.add_lease(session, lease)
        spec = handle.spec
        return TrialAssignment(
            trial_id=trial_id,
            study_id=handle.id,
            trial_number=trial.number,
            lease_token=token,
            lease_expires_at=lease.expires_at,
            attempt=attempt,
            params=params,
            workload=spec.workload_for(params.get(WORKLOAD_PARAM)),
            seeds=spec.seeds,
            metric=spec.objective.metric,
            time_limit_s=spec.trial_time_limit_s,
            lease_seconds=self._lease_for.total_seconds(),
        )

    # --- reports and heartbeats ------------------------------------------------------------

    def report(self, trial_id: int, report: IntermediateReport) -> bool:
        """Record an intermediate value and renew the lease; True means: prune this trial.

        The renewal, the value and the study's state are one transaction: a report is the
        request workers send most, so it costs a few statements, not a trial read.
        """
        (outcome,) = self._report([(trial_id, report)])
        if isinstance(outcome, HpsError):
            raise outcome
        return outcome

    def report_batch(self, body: BatchReport) -> BatchReported:
        """Record several reports, each as ``report`` would, in one transaction: an item that
        ``report`` would refuse (404, 409) is answered so and writes nothing."""
        items = [(item.trial_id, item) for item in body.reports]
        return BatchReported(
            results=[
                ReportOutcome(trial_id=trial_id, status=200, prune=outcome)
                if isinstance(outcome, bool)
                else ReportOutcome(
                    trial_id=trial_id, status=outcome.status_code, detail=str(outcome)
                )
                for (trial_id, _), outcome in zip(items, self._report(items), strict=True)
            ]
        )

    def _report(
        self, items: Sequence[tuple[int, IntermediateReport]]
    ) -> list[bool | LeaseConflict | NotFound]:
        """Renew each lease and record each value in one transaction; per item, whether to
        prune, or the error ``report`` raises for it (nothing of that item written).

        The renewal is conditional on the trial running (``Store.renew``), so a value is
        never recorded for a trial that has ended, and no renewal needs undoing.
        """
        renewed: dict[int, Lease] = {}
        outcomes: dict[int, bool | LeaseConflict | NotFound] = {}
        states: dict[int, str | None] = {}
        with self._store.transaction() as session:
            for trial_id, report in items:
                lease = self._renew_in(session, trial_id, report.lease_token)
                if lease is None:
                    outcomes[trial_id] = self._refusal(trial_id, report.lease_token)
                    continue
                if not self._store.record_intermediate_value(
                    session, trial_id, report.step, report.value
                ):  # ended by hand (the dashboard) since the renewal: that renewal is harmless
                    outcomes[trial_id] = LeaseConflict(f"trial {trial_id} is no longer running")
                    continue
                renewed[trial_id] = lease
                if lease.study_id not in states:
                    states[lease.study_id] = self._store.study_state(session, lease.study_id)
        for trial_id, report in items:
            if trial_id in renewed:
                study_id = renewed[trial_id].study_id
                outcomes[trial_id] = self._prune(study_id, states[study_id], trial_id, report.step)
        return [outcomes[trial_id] for trial_id, _ in items]

    def _prune(self, study_id: int, state: str | None, trial_id: int, step: int) -> bool:
        """Whether the trial that just reported at ``step`` should stop."""
        if state == StudyState.CANCELLED:
            return True  # stop now; the worker completes it as pruned with what it has
        study = self._studies.optuna_study(self._studies.handle(study_id))
        if isinstance(study.pruner, optuna.pruners.NopPruner):
            return False
        frozen = self._store.trial(trial_id)
        # Never prune inside the trial's own warmup: its loss there says nothing yet.
        if not may_prune(frozen.params, step):
            return False
        return bool(study.pruner.prune(study, frozen))  # numpy.bool from the median pruner

    def heartbeat(self, trial_id: int, token: str) -> datetime:
        """Renew the lease of a worker that is still training; returns the new expiry."""
        with self._store.transaction() as session:
            renewed = self._renew_in(session, trial_id, token)
        if renewed is None:
            raise self._refusal(trial_id, token)
        return renewed.expires_at

    def _renew_in(self, session: Session, trial_id: int, token: str) -> Lease | None:
        now = self._clock()
        return self._store.renew(session, trial_id, _hash(token), now, now + self._lease_for)

    def _refusal(self, trial_id: int, token: str) -> LeaseConflict | NotFound:
        """Why a lease on ``trial_id`` under ``token`` could not be renewed."""
        lease = self._store.lease(trial_id)
        if lease is None:
            return self._unleased(trial_id)
        if lease.token_hash != _hash(token):
            return LeaseConflict(f"trial {trial_id} is leased under another token")
        return LeaseConflict(f"the lease on trial {trial_id} is no longer valid")

    # --- completion ----------------------------------------------------------------------------

    def complete(self, trial_id: int, result: TrialResult) -> TrialRead:
        """Finish a trial with the worker's result. The same token and body give the same answer."""
        (outcome,) = self._complete([(trial_id, result)])
        if isinstance(outcome, HpsError):
            raise outcome
        return outcome

    def complete_batch(self, body: BatchCompletion) -> BatchCompleted:
        """Finish several trials, each as ``complete`` would, in one transaction: an item that
        ``complete`` would refuse (404, 409, 422) is answered so and changes nothing, and the
        others are recorded all the same."""
        items = [(item.trial_id, item) for item in body.results]
        outcomes = [
            BatchOutcome(trial_id=trial_id, status=200, trial=outcome)
            if isinstance(outcome, TrialRead)
            else BatchOutcome(trial_id=trial_id, status=outcome.status_code, detail=str(outcome))
            for (trial_id, _), outcome in zip(items, self._complete(items), strict=True)
        ]
        return BatchCompleted(results=outcomes)

    def _complete(self, items: Sequence[tuple[int, TrialResult]]) -> list[TrialRead | HpsError]:
        """Record each ``(trial_id, result)`` in one transaction; per item, the trial as it
        now stands or the error ``complete`` raises for it (nothing of that item written,
        except an expiry found on the way, which is recorded as the reaper would)."""
        leases = self._store.leases([trial_id for trial_id, _ in items])
        outcomes: dict[int, TrialRead | HpsError] = {}
        for trial_id, _ in items:
            if trial_id not in leases:
                outcomes[trial_id] = self._unleased(trial_id)
        study_ids = {lease.study_id for lease in leases.values()}
        handles = {study_id: self._studies.handle(study_id) for study_id in study_ids}
        studies = {study_id: self._studies.optuna_study(h) for study_id, h in handles.items()}
        with self._store.transaction(
            serial=True, study_id=study_ids, lease_id=list(leases)
        ) as session:
            for trial_id, result in items:
                if trial_id in outcomes:
                    continue
                study_id = leases[trial_id].study_id
                try:
                    outcomes[trial_id] = self._complete_in(
                        session, handles[study_id], studies[study_id], trial_id, result
                    )
                except (NotFound, LeaseConflict, InvalidResult) as error:
                    outcomes[trial_id] = error
        return [outcomes[trial_id] for trial_id, _ in items]

    def _complete_in(
        self,
        session: Session,
        handle: StudyHandle,
        study: optuna.Study,
        trial_id: int,
        result: TrialResult,
    ) -> TrialRead | LeaseConflict:
        """Record ``result`` on ``trial_id`` in ``session``, which holds the study's and the
        lease's rows: the trial as it now stands, or the conflict to answer once the expiry
        this found is written. Raises, with nothing written, for a result to refuse."""
        # The lease's row is held until this completion is recorded: a second completion or
        # an expiry in another replica waits, then finds the outcome.
        lease = self._lease(trial_id, session)
        if lease.token_hash != _hash(result.lease_token):
            raise LeaseConflict(f"trial {trial_id} is leased under another token")
        frozen = self._store.trial(trial_id, session)
        if lease.released or frozen.state.is_finished():
            # Either this worker's result is already recorded (answer as before), or the
            # lease expired and the trial was failed and re-queued without it.
            if _failure_kind(frozen) == FailureKind.LEASE_EXPIRED:
                raise LeaseConflict(f"the lease on trial {trial_id} expired")
            return tv.trial_read(handle.id, frozen)
        if lease.expires_at <= self._clock():
            self._expire_in(session, lease, frozen)
            return LeaseConflict(f"the lease on trial {trial_id} expired")
        return tv.trial_read(handle.id, self._finish(session, handle, study, lease, frozen, result))

    def _finish(
        self,
        session: Session,
        handle: StudyHandle,
        study: optuna.Study,
        lease: Lease,
        frozen: FrozenTrial,
        result: TrialResult,
    ) -> FrozenTrial:
        """Record ``result`` as the end of ``frozen``'s run, in ``session``; returns the trial
        as it now stands."""
        check_seeds(handle.spec, result)
        attrs = trial_record.finished(
            result.seeds,
            result.device,
            result.torch_version,
            result.wall_time_s,
            result.steps_per_second,
        )
        if result.state == "failed":
            assert result.failure is not None
            return self._fail(session, lease, frozen, result.failure, attrs)
        state = OptunaState.COMPLETE if result.state == "completed" else OptunaState.PRUNED
        value = objective(handle.spec, result) if state == OptunaState.COMPLETE else None
        if state == OptunaState.PRUNED and frozen.last_step is not None:
            # As study.tell does: a pruned trial's value is its last intermediate value.
            last = frozen.intermediate_values[frozen.last_step]
            value = last if math.isfinite(last) else None
        values = None if value is None else [value]
        study.sampler.after_trial(study, frozen, state, values)
        return self._store.finish_trial(session, frozen, state, value, attrs)

    def _fail(
        self,
        session: Session,
        lease: Lease,
        frozen: FrozenTrial,
        failure: Failure,
        attrs: dict[str, object] | None = None,
    ) -> FrozenTrial:
        """Fail ``frozen`` with ``failure`` in ``session``; queue its parameters again if it may
        retry. The caller holds the study's row: a retry changes what counts towards n_trials
        (this run stops counting, the queued one starts)."""
        record = TrialRecord.of(frozen)
        retry = failure.kind in RETRYABLE and record.attempt < self._max_attempts
        attrs = {**(attrs or {}), **trial_record.failed(failure, retried=retry)}
        done = self._store.finish_trial(session, frozen, OptunaState.FAIL, None, attrs)
        if retry:
            self._store.enqueue(
                session, lease.study_id, frozen.params, trial_record.requeued(record, failure)
            )
        return done

    # --- expiry ----------------------------------------------------------------------------------

    def expire(self) -> int:
        """Fail and re-queue every trial whose lease ran out; returns how many."""
        now = self._clock()
        expired = 0
        for stale in self._store.expired_leases(now):
            with self._store.transaction(
                serial=True, study_id=stale.study_id, lease_id=stale.trial_id
            ) as session:
                lease = self._store.lease(stale.trial_id, session)
                # Under the row's lock, look again: another replica's reaper, a completion or a
                # renewal may have come first, and then this one leaves the lease alone.
                if lease is None or lease.released or lease.expires_at > now:
                    continue
                self._expire_in(session, lease, self._store.trial(lease.trial_id, session))
            expired += 1
        return expired

    def _expire_in(self, session: Session, lease: Lease, trial: FrozenTrial) -> None:
        """Fail the trial of an expired ``lease`` and release it, in ``session``."""
        if trial.state == OptunaState.RUNNING:
            worker_id = TrialRecord.of(trial).worker_id
            message = f"lease expired: no word from worker {worker_id!r} in time"
            failure = Failure(kind=FailureKind.LEASE_EXPIRED, message=message)
            self._fail(session, lease, trial, failure)
        else:
            self._store.release(session, lease.trial_id)

    def _lease(self, trial_id: int, session: Session | None = None) -> Lease:
        """The lease on ``trial_id``; NotFound for an unknown trial, LeaseConflict for one that
        was never leased."""
        lease = self._store.lease(trial_id, session)
        if lease is None:
            raise self._unleased(trial_id)
        return lease

    def _unleased(self, trial_id: int) -> NotFound | LeaseConflict:
        """Why a trial without a lease cannot be renewed or completed."""
        try:
            self._store.trial(trial_id)
        except KeyError:
            return NotFound(f"trial {trial_id} does not exist")
        return LeaseConflict(f"trial {trial_id} is not leased")


def _n_trials(handle: StudyHandle) -> int:
    assert handle.spec.n_trials is not None  # the spec fills it in at validation
    return handle.spec.n_trials


def _failure_kind(trial: FrozenTrial) -> str | None:
    failure = TrialRecord.of(trial).failure
    return None if failure is None else failure.kind.value
