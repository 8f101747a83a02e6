"""Faults with real processes: a worker killed mid-trial, the service killed mid-study, a stale
worker that comes back after its trial was given away.

Every test reads the outcome twice: through the API and straight from the database; each runs on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest

from api_schemas import FailureKind, PastAttempt, TrialRead, TrialState
from hps.client import Client
from tests.e2e.conftest import TINY_WORKLOAD, Service
from tests.e2e.test_end_to_end import wait_for
from tests.postgres import query

pytestmark = [pytest.mark.e2e, pytest.mark.backends]

RETRYABLE = (FailureKind.LEASE_EXPIRED, FailureKind.INTERRUPTED)

SHORT_LEASE = {"HPS_LEASE_SECONDS": "4"}
"""Short enough that a lost worker's trial is re-queued within seconds; heartbeats (every
1.3 s) keep the live workers' leases."""


def spec(name: str, n_trials: int, steps: int) -> dict[str, Any]:
    """A random search over the tiny workload: a trial of ``steps`` steps takes a few seconds,
    long enough to be caught mid-trial."""
    config = {**TINY_WORKLOAD["config"], "steps": steps, "report_every": 10}
    return {
        "name": name,
        "workload": {**TINY_WORKLOAD, "config": config},
        "n_trials": n_trials,
        "seeds_per_trial": 1,
        "sampler": {"type": "random", "seed": 3},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
    }


def reported_trial(client: Client, study_id: int, timeout_s: float = 120) -> TrialRead:
    """Wait for a running trial with at least one report: its worker is mid-trial."""
    found: list[TrialRead] = []

    def mid_trial() -> bool:
        found[:] = [
            t
            for t in client.trials(study_id)
            if t.state == TrialState.RUNNING and t.last_step is not None
        ]
        return bool(found)

    wait_for(mid_trial, timeout_s, "a trial with a report")
    return found[0]


def trial(client: Client, study_id: int, trial_id: int) -> TrialRead:
    (found,) = [t for t in client.trials(study_id) if t.id == trial_id]
    return found


def stored_values(service: Service, study_id: int) -> list[tuple[int, int]]:
    """(trial_id, rows in Optuna's trial_values) per trial of a study: a completion is recorded
    once. Read from the database, not through the service."""
    rows = query(
        service.database_url,
        "SELECT v.trial_id, COUNT(*) FROM trial_values AS v JOIN trials AS t"
        " ON t.trial_id = v.trial_id WHERE t.study_id = :study GROUP BY v.trial_id",
        study=study_id,
    )
    return sorted((int(trial_id), int(n)) for trial_id, n in rows)


def intermediate_steps(service: Service, trial_id: int) -> list[int]:
    rows = query(
        service.database_url,
        "SELECT step FROM trial_intermediate_values WHERE trial_id = :trial ORDER BY step",
        trial=trial_id,
    )
    return [int(step) for (step,) in rows]


def assert_study_complete(client: Client, service: Service, study_id: int, n_trials: int) -> None:
    """Exactly ``n_trials`` counted trials, all completed, each recorded once; every trial that
    was failed and retried has a completed re-run with its parameters."""
    study = client.study(study_id)
    trials = client.trials(study_id)
    assert study.state == "finished"
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state) for t in trials]
    retried = [t for t in trials if t.failure is not None and t.failure.kind in RETRYABLE]
    counted = [t for t in trials if t not in retried]
    assert len(counted) == n_trials
    assert all(t.state == TrialState.COMPLETED for t in counted)
    assert study.counts.completed == n_trials
    assert study.counts.retried == len(retried)
    for lost in retried:
        (rerun,) = [t for t in counted if lost.id != t.id and t.params == lost.params]
        assert rerun.history[-1].worker_id == lost.worker_id
    # No trial is duplicated: the sampler drew distinct points, and each was completed once.
    assert len({tuple(sorted(t.params.items())) for t in counted}) == n_trials
    assert stored_values(service, study_id) == sorted((t.id, 1) for t in counted)


@pytest.mark.parametrize("service", [SHORT_LEASE], indirect=True)
def test_a_worker_killed_mid_trial_has_its_trial_re_run(service: Service) -> None:
    n_trials = 3
    with service.client() as client:
        study = client.submit(spec("kill-worker", n_trials, steps=300))
        doomed = service.start_worker()
        caught = reported_trial(client, study.id)
        doomed.kill()  # SIGKILL: no chance to report the trial as interrupted
        doomed.wait()
        rescuer = service.start_worker()
        wait_for(lambda: client.study(study.id).state == "finished", 240, "the study to finish")
        lost = trial(client, study.id, caught.id)
        trials = client.trials(study.id)
        assert_study_complete(client, service, study.id, n_trials)
        counts = client.study(study.id).counts

    assert lost.state == TrialState.FAILED
    assert lost.failure is not None and lost.failure.kind == FailureKind.LEASE_EXPIRED
    assert lost.worker_id is not None and lost.worker_id.endswith(f":{doomed.pid}")
    (rerun,) = [t for t in trials if t.history]
    assert rerun.params == lost.params
    assert (rerun.state, rerun.attempt) == (TrialState.COMPLETED, 2)
    assert rerun.worker_id is not None and rerun.worker_id.endswith(f":{rescuer.pid}")
    assert rerun.history == [
        PastAttempt(
            attempt=1,
            kind=FailureKind.LEASE_EXPIRED,
            message=lost.failure.message,
            worker_id=lost.worker_id,
        )
    ]
    assert (counts.failed, counts.retried) == (1, 1)
    # Every trial but the lost one ran to its end without losing a lease to the short expiry.
    assert all(t.last_step == 300 for t in trials if t.state == TrialState.COMPLETED)


@pytest.mark.parametrize("service", [{"HPS_LEASE_SECONDS": "60"}], indirect=True)
def test_the_service_killed_mid_study_resumes_every_study(service: Service) -> None:
    n_trials = 6
    with service.client() as client:
        study = client.submit(spec("kill-service", n_trials, steps=300))
        other = client.submit({**spec("bystander", 2, steps=30), "sampler": {"type": "tpe"}})
        workers = [service.start_worker(), service.start_worker()]
        in_flight = reported_trial(client, study.id)

        service.process.kill()  # SIGKILL: no shutdown, whatever was in flight is cut off
        service.process.wait()
        time.sleep(3)  # an outage the workers must ride out
        with service.log.open("ab") as out:
            service.process = subprocess.Popen(
                service.process.args,
                env=service.env,
                stdout=out,
                stderr=out,
                cwd=service.database.parent,
            )
        wait_for(client.health, 60, "the service to come back")

        for study_id in (study.id, other.id):
            wait_for(lambda i=study_id: client.study(i).state == "finished", 240, "the studies")
        assert_study_complete(client, service, study.id, n_trials)
        honoured = trial(client, study.id, in_flight.id)
        assert client.study(other.id).counts.completed == 2
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, "a worker did not ride out the outage"

    # The lease held across the restart was honoured: the same worker finished the same trial.
    assert honoured.state == TrialState.COMPLETED
    assert (honoured.worker_id, honoured.attempt) == (in_flight.worker_id, 1)
    assert in_flight.last_step is not None
    assert intermediate_steps(service, in_flight.id)[-1] == 300


@pytest.mark.parametrize("service", [SHORT_LEASE], indirect=True)
def test_a_stale_workers_late_report_gets_409(service: Service) -> None:
    with service.client() as client:
        study = client.submit(spec("stale", 1, steps=600))
        stale = service.start_worker()
        caught = reported_trial(client, study.id)
        stale.send_signal(signal.SIGSTOP)  # frozen: no reports, no heartbeats
        try:
            wait_for(
                lambda: trial(client, study.id, caught.id).state == TrialState.FAILED,
                60,
                "the frozen worker's lease to expire",
            )
            steps_when_failed = intermediate_steps(service, caught.id)
            rescuer = service.start_worker()
            rerun = reported_trial(client, study.id)
            assert rerun.id != caught.id
        finally:
            stale.send_signal(signal.SIGCONT)
        wait_for(
            lambda: (
                f"trial {caught.id}: lease lost" in service.log.with_name("worker0.log").read_text()
            ),
            60,
            "the stale worker to be refused",
        )
        wait_for(lambda: client.study(study.id).state == "finished", 240, "the study to finish")
        lost = trial(client, study.id, caught.id)
        done = trial(client, study.id, rerun.id)
        assert stale.poll() is None, "the stale worker should move on, not exit"
        assert_study_complete(client, service, study.id, 1)

    stale.send_signal(signal.SIGTERM)
    assert stale.wait(timeout=30) == 0
    # Its late words were refused (409) and changed nothing; the result is the rescuer's.
    refused = [
        line
        for line in service.log.read_text().splitlines()
        if f"/v1/trials/{caught.id}/" in line and '" 409' in line
    ]
    assert refused
    assert intermediate_steps(service, caught.id) == steps_when_failed
    assert lost.failure is not None and lost.failure.kind == FailureKind.LEASE_EXPIRED
    assert done.state == TrialState.COMPLETED and done.params == lost.params
    assert done.worker_id is not None and done.worker_id.endswith(f":{rescuer.pid}")
