"""The worker against a real service: once it knows its trials stack, it leases several at once
and trains them as one stack, reports and completes each, never runs past ``max_trials``, and a
trial whose lease is lost is dropped while the others finish. The service runs in a thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from api_schemas import FailureKind, IntermediateReport, LeaseRequest, TrialResult, TrialState
from api_schemas.tokens import Scope
from api_schemas.trials import BatchLeaseRequest, BatchReport, BatchReported, SeedResult
from hps.client import Client
from tests.live_server import LiveService, live_service
from worker import loop
from worker.heartbeat import Heartbeats
from worker.loop import Worker
from worker.stacked import Stacking

CPU = torch.device("cpu")
SIX_MODELS = Stacking(cpu_max_models=6)
"""With two seeds a trial, a stack of six holds three trials."""


def spec(
    n_trials: int, *, seeds: int = 2, steps: int = 40, report_every: int = 10
) -> dict[str, Any]:
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
        "name": "batches",
        "workload": {"name": "postln_transformer", "config": config},
        "n_trials": n_trials,
        "seeds_per_trial": seeds,
        "sampler": {"type": "random", "seed": 0},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
            "lr": {"type": "float", "low": 1e-3, "high": 3e-3},
        },
    }


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_worker(service: LiveService, **options: Any) -> Worker:
    with service.client(service.mint(Scope.WORKER)) as client:
        worker = Worker(client, CPU, burst=True, poll_s=0.1, worker_id="w:1", **options)
        worker.run()
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-")]
    return worker


def test_a_worker_leases_what_its_stack_holds_and_trains_it_as_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, int]] = []  # (route, reports in the request)
    single, batch = Client.report, Client.report_batch

    def report(self: Client, trial_id: int, body: IntermediateReport) -> bool:
        sent.append(("single", 1))
        return single(self, trial_id, body)

    def report_batch(self: Client, body: BatchReport) -> BatchReported:
        sent.append(("batch", len(body.reports)))
        return batch(self, body)

    monkeypatch.setattr(Client, "report", report)
    monkeypatch.setattr(Client, "report_batch", report_batch)
    with live_service(tmp_path) as service:
        with service.client() as admin:
            study = admin.submit(spec(n_trials=7))
        with caplog.at_level(logging.INFO, logger="hps.worker"):
            worker = run_worker(service, stacking=SIX_MODELS)
        with service.client() as admin:
            trials = admin.trials(study.id)

    # The first lease is one trial (its seeds and workload are unknown until then); then as
    # many as a stack of six models holds.
    assert caplog.text.count("3 trials leased together") == 2
    assert caplog.text.count("trials' 6 seeds stacked (1 stack of <= 6)") == 2
    assert (worker.trials_done, worker.trials_failed, worker.trials_lost) == (7, 0, 0)
    assert [t.state for t in trials] == [TrialState.COMPLETED] * 7
    # The lone first trial reports alone at its 4 report steps; each stack of 3 sends its
    # three trials' values in one request per step.
    assert sent == [("single", 1)] * 4 + [("batch", 3)] * 8
    # Each trial reported, to its last step, and got its own seeds' results.
    for t in trials:
        assert t.last_step == 40
        assert [(s.seed, s.steps) for s in t.seeds] == [(0, 40), (1, 40)]


def test_a_batch_never_runs_past_max_trials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with live_service(tmp_path) as service:
        with service.client() as admin:
            study = admin.submit(spec(n_trials=7))
        with caplog.at_level(logging.INFO, logger="hps.worker"):
            worker = run_worker(service, stacking=SIX_MODELS, max_trials=3)
        with service.client() as admin:
            trials = admin.trials(study.id)

    assert "2 trials leased together" in caplog.text
    assert worker.trials_done == 3
    assert sorted(t.state for t in trials) == [TrialState.COMPLETED] * 3


def test_stacking_off_leases_one_trial_at_a_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with live_service(tmp_path) as service:
        with service.client() as admin:
            admin.submit(spec(n_trials=3))
        with caplog.at_level(logging.INFO, logger="hps.worker"):
            worker = run_worker(service, stacking=Stacking(enabled=False))
    assert worker.trials_done == 3
    assert "leased together" not in caplog.text
    assert caplog.text.count("sequential: stacking is off") == 3


def test_a_trial_that_loses_its_lease_is_dropped_and_the_others_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One report, at the end: between them only heartbeats renew a lease. The second trial of
    # the batch sends none, so the service gives its lease away; its report is refused (409)
    # and the worker drops it, while the trials stacked beside it complete.
    made: list[Heartbeats] = []

    class SilentSecond(Heartbeats):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if len(made) == 2:
                kwargs["interval_s"] = 3600.0
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(loop, "Heartbeats", SilentSecond)
    with live_service(tmp_path, lease_seconds=2.5, reaper_interval_s=0.1, max_attempts=1) as s:
        with s.client() as admin:
            study = admin.submit(spec(n_trials=4, seeds=1, steps=2000, report_every=2000))
        worker = run_worker(s, stacking=Stacking(cpu_max_models=3))
        with s.client() as admin:
            trials = {t.id: t for t in admin.trials(study.id)}

    silent = trials[made[2].trial_id]
    assert silent.state == TrialState.FAILED
    assert silent.failure is not None and silent.failure.kind == FailureKind.LEASE_EXPIRED
    others = [t for t in trials.values() if t.id != silent.id]
    assert [t.state for t in others] == [TrialState.COMPLETED] * 3
    assert (worker.trials_done, worker.trials_lost) == (3, 1)


def test_a_refused_item_of_a_batch_completion_counts_as_lost_and_the_others_count(
    tmp_path: Path,
) -> None:
    with live_service(tmp_path, lease_seconds=1.0, reaper_interval_s=0.1, max_attempts=1) as s:
        with s.client() as admin:
            study = admin.submit(spec(n_trials=2, seeds=1))
        with s.client(s.mint(Scope.WORKER)) as client:
            request = BatchLeaseRequest(**LeaseRequest(worker_id="w:1").model_dump(), max_trials=2)
            batch = client.lease_batch(request)
            assert batch is not None and len(batch.trials) == 2
            kept, expired = batch.trials
            with Heartbeats(client, kept, interval_s=0.2):
                # Long enough for the reaper to end the other trial's lease.
                threading.Event().wait(2.5)
                worker = Worker(client, CPU, worker_id="w:1")
                seed = SeedResult(seed=0, loss=1.0, accuracy=0.5, diverged=False, steps=40)
                results = [
                    (a, TrialResult(lease_token=a.lease_token, state="completed", seeds=[seed]))
                    for a in batch.trials
                ]
                worker._deliver(results)
        with s.client() as admin:
            states = {t.id: t.state for t in admin.trials(study.id)}

    assert states == {kept.trial_id: TrialState.COMPLETED, expired.trial_id: TrialState.FAILED}
    assert (worker.trials_done, worker.trials_lost) == (1, 1)
