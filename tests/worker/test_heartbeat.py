"""The worker against a real service: heartbeats keep a lease that reports alone would lose, and
a service outage is ridden out. The service runs in a thread; only the network fails on cue.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from api_schemas import FailureKind, LeaseRequest, TrialAssignment, TrialState
from api_schemas.tokens import Scope
from hps.client import Client, ServiceUnavailable
from tests.live_server import LiveService, live_service
from worker import loop
from worker.heartbeat import Heartbeats, heartbeat_interval
from worker.loop import Worker

CPU = torch.device("cpu")
LEASE_S = 2.5
STEPS = 8000
"""A run long enough to outlast several leases on a fast idle machine (2,000 steps of the tiny
model took 3.5 s there: less than two leases, and the heartbeat test then tested nothing)."""


def spec(steps: int, report_every: int, n_trials: int = 1) -> dict[str, Any]:
    config = {
        "seq_len": 8,
        "vocab": 8,
        "n_layers": 1,
        "d_model": 16,
        "n_heads": 2,
        "dim_feedforward": 32,
        "batch_size": 16,
        "steps": steps,
        "report_every": report_every,
    }
    return {
        "name": "heartbeats",
        "workload": {"name": "postln_transformer", "config": config},
        "n_trials": n_trials,
        "seeds_per_trial": 1,
        "sampler": {"type": "random", "seed": 0},
        "search_space": {
            "optimizer": {"type": "fixed", "value": "adam"},
            "lr": {"type": "float", "low": 1e-3, "high": 3e-3},
        },
    }


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # As `hps worker --threads 1` does: on a small shared machine torch's own thread pool
    # spins against the service's threads and a tiny trial takes ten times as long.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LiveService]:
    # A short lease, checked ten times a second: a trial silent for 2.5 s is lost. (Shorter
    # leases make the test flaky on a loaded 2-core machine, where a thread can stall a second.)
    with live_service(tmp_path, lease_seconds=LEASE_S, reaper_interval_s=0.1, max_attempts=1) as s:
        yield s


def run_worker(service: LiveService, **client_options: Any) -> Worker:
    """One worker in burst mode: it runs until the service has no work, then returns."""
    token = service.mint(Scope.WORKER, name="worker")
    with service.client(token, **client_options) as client:
        worker = Worker(client, CPU, burst=True, poll_s=0.1, worker_id="w:1")
        worker.run()
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-")]
    return worker


def test_the_interval_is_a_third_of_the_lease(service: LiveService) -> None:
    with service.client() as admin:
        admin.submit(spec(steps=10, report_every=10))
    with service.client(service.mint(Scope.WORKER)) as client:
        assignment = client.lease(LeaseRequest(worker_id="w:1"))
    assert assignment is not None
    assert heartbeat_interval(assignment) == pytest.approx(LEASE_S / 3)
    # From a service that does not say the lease length, it is read off the expiry.
    older = TrialAssignment.model_validate({**assignment.model_dump(), "lease_seconds": None})
    now = assignment.lease_expires_at - timedelta(seconds=30)
    assert heartbeat_interval(older, now=now) == pytest.approx(10.0)


def test_a_trial_slower_than_its_lease_keeps_it_by_heartbeats(service: LiveService) -> None:
    # One report, at the very end: between lease and report only heartbeats renew the lease.
    with service.client() as admin:
        study = admin.submit(spec(steps=STEPS, report_every=STEPS))
    worker = run_worker(service)
    with service.client() as admin:
        (trial,) = admin.trials(study.id)

    assert (trial.state, trial.attempt, trial.failure) == (TrialState.COMPLETED, 1, None)
    assert (worker.trials_done, worker.trials_lost) == (1, 0)
    assert trial.last_step == STEPS
    # What makes this a test of heartbeats: the trial was silent for several lease lengths.
    assert trial.started_at is not None and trial.finished_at is not None
    assert trial.finished_at - trial.started_at > timedelta(seconds=2 * LEASE_S)


def test_a_trial_that_reports_often_sends_almost_no_heartbeats(
    service: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each accepted report renews the lease, so a beat is due only after an interval without one.
    made: list[Heartbeats] = []

    class Recorded(Heartbeats):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(loop, "Heartbeats", Recorded)
    with service.client() as admin:
        study = admin.submit(spec(steps=STEPS, report_every=20))
    run_worker(service)
    with service.client() as admin:
        (trial,) = admin.trials(study.id)

    assert trial.state == TrialState.COMPLETED
    assert trial.started_at is not None and trial.finished_at is not None
    silent_beats = (trial.finished_at - trial.started_at).total_seconds() / made[0].interval_s
    assert silent_beats > 4  # long enough that a worker beating blindly would send several
    # A loaded machine may stall one report past an interval; blind beats would be all of them.
    assert made[0].sent < 0.25 * silent_beats


def test_without_heartbeats_the_same_trial_loses_its_lease(
    service: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the test above: heartbeats too rare to matter, and the trial is lost.
    monkeypatch.setattr(loop, "Heartbeats", functools.partial(Heartbeats, interval_s=3600.0))
    with service.client() as admin:
        study = admin.submit(spec(steps=STEPS, report_every=STEPS))
    worker = run_worker(service)
    with service.client() as admin:
        (trial,) = admin.trials(study.id)

    assert trial.state == TrialState.FAILED
    assert trial.failure is not None and trial.failure.kind == FailureKind.LEASE_EXPIRED
    assert (worker.trials_done, worker.trials_lost) == (0, 1)


class Outages(httpx.BaseTransport):
    """The real network, except that after a request to a path ending in ``after`` succeeds,
    every request fails to connect for ``seconds`` (a service that went away and came back)."""

    def __init__(self, *schedule: tuple[str, float]) -> None:
        self._real = httpx.HTTPTransport()
        self._schedule = list(schedule)
        self._down_until = 0.0
        self.refused: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if time.monotonic() < self._down_until:
            self.refused[path.rsplit("/", 1)[-1]] += 1
            raise httpx.ConnectError("connection refused (outage)", request=request)
        response = self._real.handle_request(request)
        if self._schedule and path.endswith(self._schedule[0][0]):
            _, seconds = self._schedule.pop(0)
            self._down_until = time.monotonic() + seconds
        return response

    def close(self) -> None:
        self._real.close()


def test_the_worker_rides_out_outages_mid_trial_and_between_trials(tmp_path: Path) -> None:
    # Down for 2 s after the first report (mid-trial), and again after the first completion
    # (when the worker asks for its next trial). The client's own retries are used up at once
    # (no sleep), so what carries the worker through is its loop. The lease outlasts both.
    outages = Outages(("/reports", 2.0), ("/complete", 1.5))
    with live_service(tmp_path, lease_seconds=30.0) as service:
        with service.client() as admin:
            study = admin.submit(spec(steps=300, report_every=10, n_trials=2))
        worker = run_worker(service, transport=outages, retries=1, sleep=lambda _: None)
        with service.client() as admin:
            trials = admin.trials(study.id)

    # The second lease asks for a batch: the first trial's stack had room for more.
    between_trials = outages.refused["leases"] + outages.refused["lease-batches"]
    assert outages.refused["reports"] > 0 and between_trials > 0, outages.refused
    assert [(t.state, t.attempt) for t in trials] == [(TrialState.COMPLETED, 1)] * 2
    assert (worker.trials_done, worker.trials_failed, worker.trials_lost) == (2, 0, 0)


def test_a_worker_that_never_reached_the_service_gives_up() -> None:
    # A wrong URL is not an outage: the worker says so instead of waiting forever.
    with Client("http://127.0.0.1:9", retries=1, sleep=lambda _: None) as client:
        worker = Worker(client, CPU, burst=True)
        with pytest.raises(ServiceUnavailable):
            worker.run()
