"""A real ``hps worker`` process leases a grid study's trials in batches and trains each batch
as one stack, on the real service and a real SQLite file: every trial finishes, several of
them trained at once on the one worker."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import pytest

from api_schemas import TrialState
from tests.e2e.conftest import TINY_WORKLOAD, Service

pytestmark = pytest.mark.e2e

GRID: dict[str, Any] = {
    "name": "batches-e2e",
    "workload": TINY_WORKLOAD,
    "seeds_per_trial": 2,
    "sampler": {"type": "grid"},
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
        "lr": {"type": "categorical", "choices": [1e-3, 3e-3, 1e-2]},
        "warmup_steps": {"type": "categorical", "choices": [0, 10]},
    },
}
"""12 cells of two seeds: after its first trial, a worker's stack of 64 holds the rest."""


def test_one_worker_trains_a_grid_in_stacked_batches(service: Service) -> None:
    with service.client() as client:
        study = client.submit(GRID)
        worker = service.start_worker("--burst")
        assert worker.wait(timeout=240) == 0
        study = client.study(study.id)
        trials = client.trials(study.id)

    log = service.log.with_name("worker0.log").read_text()
    assert study.state == "finished"
    assert len(trials) == 12
    assert all(t.state == TrialState.COMPLETED for t in trials), [t.state for t in trials]
    assert all(t.last_step == 40 and len(t.seeds) == 2 for t in trials)
    # The first lease is one trial; it shows the stack holds 32 trials of two seeds, and the
    # next lease takes the 11 left, trained as one stack of 22 models.
    assert "11 trials leased together" in log, log
    assert re.search(r"trials [\d, ]+: stacked: 11 trials' 22 seeds stacked \(1 stack", log), log
    # The service saw it too: those trials ran at once on the one worker.
    assert len({t.worker_id for t in trials}) == 1
    windows = []
    for t in trials:
        assert t.started_at is not None and t.finished_at is not None
        windows.append((t.started_at, t.finished_at))
    overlapping = [(a, b) for a, b in combinations(windows, 2) if a[0] < b[1] and b[0] < a[1]]
    assert len(overlapping) >= 11 * 10 // 2
