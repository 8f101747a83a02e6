"""A study goes in over HTTP, real worker processes train it, results land in the database
(SQLite and PostgreSQL)."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import optuna
import pytest

from api_schemas import StudySpec, TrialState, contains
from tests.e2e.conftest import TINY_WORKLOAD, Service
from tests.postgres import query

pytestmark = pytest.mark.e2e

SPEC: dict[str, Any] = {
    "name": "e2e",
    "workload": TINY_WORKLOAD,
    "n_trials": 8,
    "seeds_per_trial": 2,
    "sampler": {"type": "random", "seed": 7},
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam", "sgd"]},
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        "warmup_steps": {"type": "categorical", "choices": [0, 10]},
        "beta2": {
            "type": "categorical",
            "choices": [0.98, 0.999],
            "condition": {"param": "optimizer", "in": ["adam", "radam"]},
        },
        "momentum": {
            "type": "float",
            "low": 0.5,
            "high": 0.95,
            "condition": {"param": "optimizer", "in": ["sgd"]},
        },
    },
}


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.backends
def test_study_runs_end_to_end_with_two_workers(service: Service) -> None:
    with service.client() as client:
        study = client.submit(SPEC)
        workers = [service.start_worker("--burst"), service.start_worker("--burst")]
        for worker in workers:
            assert worker.wait(timeout=180) == 0
        study = client.study(study.id)
        trials = client.trials(study.id)

    assert study.state == "finished"
    assert len(trials) == 8
    assert all(t.state == TrialState.COMPLETED for t in trials)
    spec = StudySpec.model_validate(SPEC)
    for trial in trials:
        assert contains(spec.search_space, trial.params), trial.params
        assert [s.seed for s in trial.seeds] == [0, 1]
        assert trial.value == pytest.approx(statistics.fmean(s.loss for s in trial.seeds))
    assert {t.worker_id for t in trials} and len({t.worker_id for t in trials}) == 2
    best = min(trials, key=lambda t: t.value or float("inf"))
    assert study.best_trial is not None and study.best_trial.id == best.id

    # The results are in the database, read without the service.
    stored = optuna.load_study(study_name=None, storage=service.database_url)
    assert [t.state for t in stored.trials] == [optuna.trial.TrialState.COMPLETE] * 8
    assert stored.best_value == pytest.approx(best.value)
    assert {t.number: t.value for t in stored.trials} == {t.number: t.value for t in trials}
    ((spec_json,),) = query(service.database_url, "SELECT spec_json FROM hps_studies")
    ((values,),) = query(service.database_url, "SELECT COUNT(*) FROM trial_values")
    assert StudySpec.model_validate_json(spec_json) == spec
    assert values == 8


@pytest.mark.backends
def test_sigterm_mid_trial_fails_the_trial_with_a_reason(service: Service) -> None:
    long_run = {
        **SPEC,
        "name": "sigterm",
        "n_trials": 1,
        "workload": {**TINY_WORKLOAD, "config": {**TINY_WORKLOAD["config"], "steps": 100_000}},
    }
    with service.client() as client:
        study = client.submit(long_run)
        worker = service.start_worker()

        def reported() -> bool:
            trials = client.trials(study.id)
            return bool(trials) and trials[0].last_step is not None

        wait_for(reported, 60, "the first report")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        first, *rest = client.trials(study.id)

    assert first.state == TrialState.FAILED
    assert first.failure is not None and first.failure.kind == "interrupted"
    assert "SIGTERM" in first.failure.message
    # The worker going away says nothing about the parameters: they are queued to run again.
    assert [(t.state, t.params, t.attempt) for t in rest] == [(TrialState.WAITING, first.params, 2)]


def test_cli_submit_wait_and_status(service: Service, tmp_path: Any) -> None:
    import yaml

    spec_file = tmp_path / "study.yaml"
    spec_file.write_text(yaml.safe_dump({**SPEC, "name": "cli", "n_trials": 3}))
    hps = [sys.executable, "-m", "hps"]
    service.start_worker()
    done = subprocess.run(
        [*hps, "submit", str(spec_file), "--url", service.url, "--wait"],
        capture_output=True,
        text=True,
        timeout=180,
        env=service.cli_env,
    )
    assert done.returncode == 0, done.stderr
    study_id = int(done.stdout.split()[0])
    assert "best trial" in done.stdout

    status = subprocess.run(
        [*hps, "status", str(study_id), "--url", service.url],
        capture_output=True,
        text=True,
        env=service.cli_env,
    )
    assert status.returncode == 0 and "finished" in status.stdout

    bad = spec_file.with_name("bad.yaml")
    bad.write_text(yaml.safe_dump({**SPEC, "search_space": {"lr": SPEC["search_space"]["lr"]}}))
    rejected = subprocess.run(
        [*hps, "submit", str(bad), "--url", service.url],
        capture_output=True,
        text=True,
        env=service.cli_env,
    )
    assert rejected.returncode == 2
    assert "search_space.optimizer is required" in rejected.stderr
