"""The worker loop: lease a trial, train it, report, complete; repeat until told to stop.

A trial in hand is never silently lost: on SIGTERM or SIGINT the worker stops at the next step
and reports the trial as failed (``interrupted``), which lets the service re-run its parameters;
an exception in a workload fails that trial, not the worker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import traceback
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
from hps.client import ApiError, Client
from worker.device import describe
from worker.training import TrialInterrupted, TrialOutcome, TrialTimeLimit, train_trial

log = logging.getLogger("hps.worker")


class LeaseLost(Exception):
    """The service refused a report (409): another worker owns the trial now."""


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
    trials_done: int = 0
    trials_failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _stop_reason: str = ""

    def __repr__(self) -> str:
        return (
            f"<Worker {self.worker_id} on {self.device}: "
            f"{self.trials_done} done, {self.trials_failed} failed>"
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
        while not self._stop.is_set():
            if self.max_trials is not None and self.trials_done >= self.max_trials:
                return
            assignment = self.client.lease(request)
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
                return self.client.report(trial_id, body)
            except ApiError as error:
                if error.status == 409:
                    raise LeaseLost(error.body.message) from error
                raise

        try:
            outcome = train_trial(
                assignment, device=self.device, report=report, should_stop=self._stop.is_set
            )
        except LeaseLost as lost:
            log.warning("trial %d: lease lost (%s); dropping it", trial_id, lost)
            return
        except TrialInterrupted as interrupted:
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
        try:
            self.client.complete(assignment.trial_id, result)
        except ApiError as error:
            log.error("trial %d: the service refused the result: %s", assignment.trial_id, error)
            return False
        return True
