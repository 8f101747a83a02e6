"""Every optimizer and warmup schedule, and a third-party workload, through the real service.

The workers are real ``hps worker`` processes; the plugin workload is registered by entry point
(``tests/plugins``), found by the workers and never imported by the service.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from api_schemas import TrialState
from hps.client import ApiError
from tests.e2e.conftest import TINY_WORKLOAD, Service

pytestmark = pytest.mark.e2e

OPTIMIZERS = ["adam", "radam", "radam_reference", "adam_warmup_reference", "sgd"]
SCHEDULES = ["none", "linear", "untuned_linear", "untuned_exponential"]
PLUGINS = Path(__file__).parents[1] / "plugins"


def test_every_optimizer_under_every_warmup_schedule(service: Service) -> None:
    spec: dict[str, Any] = {
        "name": "zoo",
        "workload": TINY_WORKLOAD,
        "seeds_per_trial": 1,
        "sampler": {"type": "grid"},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": OPTIMIZERS},
            "warmup_schedule": {"type": "categorical", "choices": SCHEDULES},
            "lr": {"type": "fixed", "value": 3e-3},
            "warmup_steps": {"type": "fixed", "value": 10},
            "beta2": {
                "type": "fixed",
                "value": 0.98,
                "condition": {"param": "optimizer", "in": OPTIMIZERS[:4]},
            },
        },
    }
    with service.client() as client:
        study = client.submit(spec)
        workers = [service.start_worker("--burst"), service.start_worker("--burst")]
        for worker in workers:
            assert worker.wait(timeout=240) == 0
        study = client.study(study.id)
        trials = client.trials(study.id)

    assert study.state == "finished"
    cells = sorted((t.params["optimizer"], t.params["warmup_schedule"]) for t in trials)
    assert cells == sorted(itertools.product(OPTIMIZERS, SCHEDULES))
    assert all(t.state == TrialState.COMPLETED for t in trials), [t.failure for t in trials]
    chance = math.log(TINY_WORKLOAD["config"]["vocab"])
    for trial in trials:
        (seed,) = trial.seeds
        assert seed.steps == TINY_WORKLOAD["config"]["steps"] or seed.diverged
        assert 0 <= seed.loss <= chance
    # The optimizer in the params is the one that trained: their learning curves differ.
    stored = optuna.load_study(study_name=None, storage=service.database_url)
    curves = {
        t.params["optimizer"]: tuple(t.intermediate_values.values())
        for t in stored.trials
        if t.params["warmup_schedule"] == "none"
    }
    assert len(set(curves.values())) == len(OPTIMIZERS), curves


def test_a_plugin_workload_runs_through_a_study(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {
        "name": "plugin",
        "workload": {
            "name": "example.parity",
            "config": {"bits": 4, "steps": 60, "report_every": 20, "batch_size": 32},
        },
        "n_trials": 2,
        "seeds_per_trial": 2,
        "sampler": {"type": "random", "seed": 3},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
    }
    # The workers, not the service, install the plugin: it is on their path only.
    monkeypatch.setenv("PYTHONPATH", f"{PLUGINS}:{Path.cwd()}")
    with service.client() as client:
        study = client.submit(spec)
        assert service.start_worker("--burst").wait(timeout=120) == 0
        trials = client.trials(study.id)

    assert [t.state for t in trials] == [TrialState.COMPLETED] * 2, [t.failure for t in trials]
    for trial in trials:
        assert [s.seed for s in trial.seeds] == [0, 1]
        assert all(0 <= s.loss <= math.log(2) and s.steps == 60 for s in trial.seeds)


def test_a_misspelt_workload_is_refused_at_submit(service: Service) -> None:
    spec = {
        "name": "typo",
        "workload": {"name": "postln_transfomer"},
        "n_trials": 1,
        "search_space": {
            "optimizer": {"type": "fixed", "value": "adam"},
            "lr": {"type": "fixed", "value": 1e-3},
        },
    }
    with service.client() as client, pytest.raises(ApiError) as error:
        client.submit(spec)
    assert error.value.status == 422
    (problem,) = error.value.body.errors
    assert problem.field == "workload.name" and "postln_transformer" in problem.message
