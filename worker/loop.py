"""The worker loop: lease trials, train them, report, complete; repeat until told to stop.

A worker whose last trials trained stacked leases as many trials at once as its device's stack
holds (``lease_batch``: one study, one workload) and trains them as one stack; each trial keeps
its own reports, prune decision, heartbeats and lease, and a trial whose lease is lost leaves
the stack while the others train on. Otherwise (the first lease, stacking off, a model that
cannot stack) it leases one trial at a time.

A trial in hand is never silently lost: on SIGTERM or SIGINT the worker stops at the next step
and reports the trial as failed (``interrupted``), which lets the service re-run its parameters;
an exception in a workload fails that trial, not the worker. While a trial trains, a background
thread sends heartbeats (``worker.heartbeat``) so that long stretches between reports keep the
lease. A service outage is ridden out: the client retries each request with backoff and jitter,
and past that the loop keeps asking (backoff again), trains on without the reports it could not
deliver, and holds a finished trial's result until the service takes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import torch

from api_schemas import (
    Failure,
    FailureKind,
    IntermediateReport,
    LeaseRequest,
    TrialAssignment,
    TrialResult,
)
from api_schemas.trials import (
    BatchCompletion,
    BatchLeaseRequest,
    BatchReport,
    BatchReportItem,
    BatchResultItem,
)
from hps.client import RETRY_STATUS, ApiError, Client, HpsClientError, ServiceUnavailable
from worker.device import describe
from worker.heartbeat import Heartbeats
from worker.stacked import Stacking
from worker.training import (
    ReportMany,
    Trained,
    TrialInterrupted,
    TrialOutcome,
    TrialRun,
    TrialTimeLimit,
    train_trials,
)

log = logging.getLogger("hps.worker")


class LeaseLost(Exception):
    """The service refused a report (409): another worker owns the trial now."""


def _is_outage(error: HpsClientError) -> bool:
    """No answer at all, or a proxy's "the service is not there" (502-504) after every retry."""
    return isinstance(error, ServiceUnavailable) or (
        isinstance(error, ApiError) and error.status in RETRY_STATUS
    )


@dataclass
class _Backoff:
    """Exponential backoff with full jitter for the loop's own waits through an outage.

    The client has already retried each request; this spaces out the loop's next tries so that
    many workers that lost the service together do not come back in lockstep.
    """

    base_s: float = 1.0
    cap_s: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(self.base_s / 2, min(self.cap_s, self.base_s * 2**self.failures))


@dataclass
class Worker:
    """Leases and trains trials from one service on one device.

    ``max_trials`` stops after that many trials; ``burst`` stops as soon as the service has no
    work (the mode for tests and CI jobs); otherwise the worker polls every ``poll_s`` seconds.
    """

    client: Client
    device: torch.device
    max_trials: int | None = None
    burst: bool = False
    poll_s: float = 2.0
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    stacking: Stacking = field(default_factory=Stacking.from_environment)
    """Whether seeds may train stacked, how many per stack on the CPU, and how many trials a
    batch lease may ask for."""
    trials_done: int = 0
    trials_failed: int = 0
    trials_lost: int = 0
    """Trials dropped because the service gave their lease away (409)."""
    _fits: int = 1
    """Trials the next lease asks for: what the last batch's stack held, 1 when it could not
    stack (or before the first, whose workload and seeds are unknown)."""
    _reached: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _stop_reason: str = ""

    def __repr__(self) -> str:
        return (
            f"<Worker {self.worker_id} on {self.device}: "
            f"{self.trials_done} done, {self.trials_failed} failed, {self.trials_lost} lost>"
        )

    def stop(self, reason: str) -> None:
        """Ask the loop to stop; a trial in hand is reported as interrupted."""
        self._stop_reason = reason
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            self.stop(f"worker received {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Work until stopped, out of trials (``max_trials``) or out of work (``burst``)."""
        request = LeaseRequest(worker_id=self.worker_id, device=describe(self.device))
        outage = _Backoff()
        while not self._stop.is_set():
            if self.max_trials is not None and self.trials_done >= self.max_trials:
                return
            try:
                batch = self._lease(request)
            except HpsClientError as error:
                # Never answered: a wrong URL, not an outage to ride out.
                if not (self._reached and _is_outage(error)):
                    raise
                delay = outage.next_delay()
                log.warning("service unavailable (%s); asking again in %.1f s", error, delay)
                self._stop.wait(delay)
                continue
            self._reached, outage.failures = True, 0
            if not batch:
                if self.burst:
                    log.info("no work left; stopping (burst mode)")
                    return
                self._stop.wait(self.poll_s)
                continue
            self.run_batch(batch)

    def _wanted(self) -> int:
        """Trials to ask for: what the device stacks, capped by ``max_trials`` still to run."""
        wanted = min(self._fits, self.stacking.max_trials) if self.stacking.enabled else 1
        if self.max_trials is not None:
            wanted = min(wanted, self.max_trials - self.trials_done)
        return max(1, wanted)

    def _lease(self, request: LeaseRequest) -> list[TrialAssignment]:
        wanted = self._wanted()
        if wanted == 1:
            assignment = self.client.lease(request)
            return [] if assignment is None else [assignment]
        batch = self.client.lease_batch(
            BatchLeaseRequest(**request.model_dump(), max_trials=wanted)
        )
        return [] if batch is None else batch.trials

    def run_batch(self, assignments: list[TrialAssignment]) -> None:
        """Train ``assignments`` (one study, one workload) together; report and complete each."""
        for assignment in assignments:
            log.info(
                "trial %d (study %d, attempt %d): %s",
                assignment.trial_id,
                assignment.study_id,
                assignment.attempt,
                assignment.params,
            )
        if len(assignments) > 1:
            log.info("%d trials leased together, to train as one stack", len(assignments))
        with contextlib.ExitStack() as held:
            # Each trial's heartbeats run until its result is delivered.
            beats = [held.enter_context(Heartbeats(self.client, a)) for a in assignments]
            runs = [
                TrialRun(a, self._reporter(a, b), should_stop=b.lost.is_set)
                for a, b in zip(assignments, beats, strict=True)
            ]
            renewals = {a.trial_id: b for a, b in zip(assignments, beats, strict=True)}
            trained = self._train(runs, self._batch_reporter(renewals))
            if trained.capacity is not None:
                seeds = max(len(a.seeds) for a in assignments)
                self._fits = max(1, trained.capacity // seeds)
            else:
                self._fits = 1
            results = [
                (a, result)
                for a, b, end in zip(assignments, beats, trained.ends, strict=True)
                if (result := self._result(a, b, end)) is not None
            ]
            if results:
                self._deliver(results)

    def _reporter(
        self, assignment: TrialAssignment, beats: Heartbeats
    ) -> Callable[[int, float], bool]:
        trial_id, token = assignment.trial_id, assignment.lease_token

        def report(step: int, value: float) -> bool:
            body = IntermediateReport(lease_token=token, step=step, value=value)
            try:
                prune = self.client.report(trial_id, body)
                # ``beats`` hears of each renewal, so that no heartbeat repeats one.
                beats.renewed()
                return prune
            except HpsClientError as error:
                if isinstance(error, ApiError) and error.status == 409:
                    raise LeaseLost(error.body.message) from error
                if not _is_outage(error):
                    raise
                # Train on: the lease outlives a short outage, and a long one ends in a 409.
                log.warning("trial %d: report at step %d not delivered: %s", trial_id, step, error)
                return False

        return report

    def _batch_reporter(self, beats: dict[int, Heartbeats]) -> ReportMany:
        """Reports of trials trained together, one ``POST /v1/reports`` per step; each item's
        answer is taken as its single report's would be (``_reporter``)."""

        def report_many(
            step: int, items: Sequence[tuple[TrialRun, float]]
        ) -> list[bool | Exception]:
            reports = [
                BatchReportItem(
                    trial_id=run.assignment.trial_id,
                    lease_token=run.assignment.lease_token,
                    step=step,
                    value=value,
                )
                for run, value in items
            ]
            try:
                answer = self.client.report_batch(BatchReport(reports=reports))
            except HpsClientError as error:
                if not _is_outage(error):
                    return [error] * len(items)
                log.warning("reports at step %d not delivered: %s", step, error)
                return [False] * len(items)  # train on, as a single report does
            outcomes: list[bool | Exception] = []
            for outcome in answer.results:
                if outcome.status == 200:
                    beats[outcome.trial_id].renewed()
                    outcomes.append(bool(outcome.prune))
                elif outcome.status == 409:
                    outcomes.append(LeaseLost(outcome.detail or "the lease was lost"))
                else:
                    why = f"report refused ({outcome.status}): {outcome.detail}"
                    outcomes.append(HpsClientError(why))
            return outcomes

        return report_many

    def _train(self, runs: list[TrialRun], report_many: ReportMany) -> Trained:
        try:
            return train_trials(
                runs,
                device=self.device,
                should_stop=self._stop.is_set,
                stacking=self.stacking,
                report_many=report_many,
            )
        except Exception as error:  # a workload that cannot even be built fails its trials
            return Trained([error] * len(runs), None)

    def _result(
        self, assignment: TrialAssignment, beats: Heartbeats, end: TrialOutcome | Exception
    ) -> TrialResult | None:
        """What to send for a trial's end; None for a trial whose lease was lost (dropped)."""
        trial_id = assignment.trial_id
        if isinstance(end, TrialOutcome):
            return TrialResult(
                lease_token=assignment.lease_token,
                state=end.state,
                seeds=end.seeds,
                device=describe(self.device),
                torch_version=torch.__version__,
                wall_time_s=end.wall_time_s,
                steps_per_second=end.steps_per_second,
            )
        if isinstance(end, LeaseLost):
            self._drop(trial_id, str(end))
            return None
        if isinstance(end, TrialInterrupted):
            if beats.lost.is_set():
                self._drop(trial_id, "a heartbeat was refused")
                return None
            reason = self._stop_reason or "worker stopped"
            return self._failure(assignment, FailureKind.INTERRUPTED, f"{reason}: {end}")
        if isinstance(end, TrialTimeLimit):
            return self._failure(assignment, FailureKind.TIME_LIMIT, str(end))
        # A workload bug fails its trial, not the worker.
        log.error("trial %d raised", trial_id, exc_info=end)
        message = "".join(traceback.format_exception_only(end)).strip()
        return self._failure(assignment, FailureKind.ERROR, message)

    def _drop(self, trial_id: int, why: str) -> None:
        log.warning("trial %d: lease lost (%s); dropping it", trial_id, why)
        self.trials_lost += 1

    def _failure(self, assignment: TrialAssignment, kind: FailureKind, message: str) -> TrialResult:
        log.warning("trial %d failed (%s): %s", assignment.trial_id, kind.value, message)
        return TrialResult(
            lease_token=assignment.lease_token,
            state="failed",
            failure=Failure(kind=kind, message=message[:4000]),
            device=describe(self.device),
            torch_version=torch.__version__,
        )

    def _delivered(self, assignment: TrialAssignment, result: TrialResult) -> None:
        if result.state != "failed":
            self.trials_done += 1
            log.info("trial %d %s", assignment.trial_id, result.state)
            return
        self.trials_failed += 1
        if result.failure is None or result.failure.kind != FailureKind.INTERRUPTED:
            self.trials_done += 1

    def _deliver(self, results: list[tuple[TrialAssignment, TrialResult]]) -> None:
        """Deliver results, together when there are several; through an outage, keep trying
        until the worker is told to stop. A result the service refuses (a 409: the lease was
        given away) is logged and counted, and the others still count.

        Completing is idempotent, so a result that did arrive before the answer was lost is
        simply answered again.
        """
        outage = _Backoff()
        names = ", ".join(str(a.trial_id) for a, _ in results)
        while True:
            try:
                answers = self._complete(results)
            except HpsClientError as error:
                if not _is_outage(error):
                    status = error.status if isinstance(error, ApiError) else None
                    answers = [(status, str(error))] * len(results)
                    break
                if self._stop.is_set():
                    log.error("trial %s: result not delivered: %s", names, error)
                    return
                delay = outage.next_delay()
                log.warning(
                    "trial %s: result not delivered (%s); again in %.1fs", names, error, delay
                )
                self._stop.wait(delay)
                continue
            break
        for (assignment, result), (status, detail) in zip(results, answers, strict=True):
            if status == 200:
                self._delivered(assignment, result)
                continue
            log.error("trial %d: the service refused the result: %s", assignment.trial_id, detail)
            if status == 409:
                self.trials_lost += 1

    def _complete(
        self, results: list[tuple[TrialAssignment, TrialResult]]
    ) -> list[tuple[int | None, str]]:
        """Each result's status and why not, from one completion call."""
        if len(results) == 1:
            ((assignment, result),) = results
            self.client.complete(assignment.trial_id, result)
            return [(200, "")]
        body = BatchCompletion(
            results=[
                BatchResultItem(**result.model_dump(), trial_id=a.trial_id) for a, result in results
            ]
        )
        outcomes = {o.trial_id: o for o in self.client.complete_batch(body).results}
        answers: list[tuple[int | None, str]] = []
        for assignment, _ in results:
            outcome = outcomes.get(assignment.trial_id)
            if outcome is None:
                answers.append((None, "the batch completion's answer left it out"))
            else:
                answers.append((outcome.status, f"{outcome.status}: {outcome.detail}"))
        return answers
