"""The worker loop: lease a trial, train it, report, complete; repeat until told to stop.

A trial in hand is never silently lost: on SIGTERM or SIGINT the worker stops at the next step
and reports the trial as failed (``interrupted``), which lets the service re-run its parameters;
an exception in a workload fails that trial, not the worker. While a trial trains, a background
thread sends heartbeats (``worker.heartbeat``) so that long stretches between reports keep the
lease. A service outage is ridden out: the client retries each request with backoff and jitter,
and past that the loop keeps asking (backoff again), trains on without the reports it could not
deliver, and holds a finished trial's result until the service takes it.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import traceback
from collections.abc import Callable
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
from hps.client import RETRY_STATUS, ApiError, Client, HpsClientError, ServiceUnavailable
from worker.device import describe
from worker.heartbeat import Heartbeats
from worker.stacked import Stacking
from worker.training import TrialInterrupted, TrialOutcome, TrialTimeLimit, train_trial

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
    """Whether a trial's seeds may train stacked, and how many per stack on the CPU."""
    trials_done: int = 0
    trials_failed: int = 0
    trials_lost: int = 0
    """Trials dropped because the service gave their lease away (409)."""
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
                assignment = self.client.lease(request)
            except HpsClientError as error:
                # Never answered: a wrong URL, not an outage to ride out.
                if not (self._reached and _is_outage(error)):
                    raise
                delay = outage.next_delay()
                log.warning("service unavailable (%s); asking again in %.1f s", error, delay)
                self._stop.wait(delay)
                continue
            self._reached, outage.failures = True, 0
            if assignment is None:
                if self.burst:
                    log.info("no work left; stopping (burst mode)")
                    return
                self._stop.wait(self.poll_s)
                continue
            self.run_trial(assignment)

    def run_trial(self, assignment: TrialAssignment) -> None:
        trial_id, token = assignment.trial_id, assignment.lease_token
        log.info(
            "trial %d (study %d, attempt %d): %s",
            trial_id,
            assignment.study_id,
            assignment.attempt,
            assignment.params,
        )

        def report(step: int, value: float) -> bool:
            body = IntermediateReport(lease_token=token, step=step, value=value)
            try:
                prune = self.client.report(trial_id, body)
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

        # ``report`` tells ``beats`` of each renewal, so that no heartbeat repeats one.
        with Heartbeats(self.client, assignment) as beats:
            self._train(assignment, report, beats)

    def _train(
        self,
        assignment: TrialAssignment,
        report: Callable[[int, float], bool],
        beats: Heartbeats,
    ) -> None:
        trial_id = assignment.trial_id

        def should_stop() -> bool:
            return self._stop.is_set() or beats.lost.is_set()

        try:
            outcome = train_trial(
                assignment,
                device=self.device,
                report=report,
                should_stop=should_stop,
                stacking=self.stacking,
            )
        except LeaseLost as lost:
            self._drop(trial_id, str(lost))
            return
        except TrialInterrupted as interrupted:
            if beats.lost.is_set():
                self._drop(trial_id, "a heartbeat was refused")
                return
            reason = self._stop_reason or "worker stopped"
            self._fail(assignment, FailureKind.INTERRUPTED, f"{reason}: {interrupted}")
            return
        except TrialTimeLimit as late:
            self._fail(assignment, FailureKind.TIME_LIMIT, str(late))
            return
        except Exception as error:  # a workload bug fails its trial, not the worker
            log.exception("trial %d raised", trial_id)
            message = "".join(traceback.format_exception_only(error)).strip()
            self._fail(assignment, FailureKind.ERROR, message)
            return
        self._complete(assignment, outcome)

    def _drop(self, trial_id: int, why: str) -> None:
        log.warning("trial %d: lease lost (%s); dropping it", trial_id, why)
        self.trials_lost += 1

    def _complete(self, assignment: TrialAssignment, outcome: TrialOutcome) -> None:
        result = TrialResult(
            lease_token=assignment.lease_token,
            state=outcome.state,
            seeds=outcome.seeds,
            device=describe(self.device),
            torch_version=torch.__version__,
            wall_time_s=outcome.wall_time_s,
            steps_per_second=outcome.steps_per_second,
        )
        if self._send(assignment, result):
            self.trials_done += 1
            log.info("trial %d %s", assignment.trial_id, outcome.state)

    def _fail(self, assignment: TrialAssignment, kind: FailureKind, message: str) -> None:
        log.warning("trial %d failed (%s): %s", assignment.trial_id, kind.value, message)
        result = TrialResult(
            lease_token=assignment.lease_token,
            state="failed",
            failure=Failure(kind=kind, message=message[:4000]),
            device=describe(self.device),
            torch_version=torch.__version__,
        )
        if self._send(assignment, result):
            self.trials_failed += 1
            if kind != FailureKind.INTERRUPTED:
                self.trials_done += 1

    def _send(self, assignment: TrialAssignment, result: TrialResult) -> bool:
        """Deliver a result; through an outage, keep trying until the worker is told to stop.

        Completing is idempotent, so a result that did arrive before the answer was lost is
        simply answered again.
        """
        outage = _Backoff()
        while True:
            trial_id = assignment.trial_id
            try:
                self.client.complete(trial_id, result)
            except HpsClientError as error:
                if not _is_outage(error):
                    log.error("trial %d: the service refused the result: %s", trial_id, error)
                    if isinstance(error, ApiError) and error.status == 409:
                        self.trials_lost += 1
                    return False
                if self._stop.is_set():
                    log.error("trial %d: result not delivered: %s", trial_id, error)
                    return False
                delay = outage.next_delay()
                log.warning(
                    "trial %d: result not delivered (%s); again in %.1fs", trial_id, error, delay
                )
                self._stop.wait(delay)
                continue
            return True
