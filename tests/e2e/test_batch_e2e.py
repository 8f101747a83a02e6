"""Batch leases of 8 through the real service (uvicorn, a real database file and PostgreSQL),
with the real client: workers that lease concurrently never share a trial, every trial is
leased once, batch completions finish the study."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from api_schemas.trials import (
    BatchCompletion,
    BatchLeaseRequest,
    BatchResultItem,
    LeaseBatch,
    SeedResult,
    TrialAssignment,
)
from hps.client import Client
from tests.e2e.conftest import TINY_WORKLOAD, Service
from tests.postgres import query

pytestmark = [pytest.mark.e2e, pytest.mark.backends]

SPEC: dict[str, Any] = {
    "name": "batches",
    "workload": TINY_WORKLOAD,
    "n_trials": 40,
    "seeds_per_trial": 2,
    "sampler": {"type": "tpe", "seed": 3},
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    },
}


def item(assignment: TrialAssignment, token: str | None = None) -> BatchResultItem:
    seeds = [SeedResult(seed=s, loss=1.0, diverged=False, steps=40) for s in assignment.seeds]
    return BatchResultItem(
        trial_id=assignment.trial_id,
        lease_token=token or assignment.lease_token,
        state="completed",
        seeds=seeds,
    )


def test_workers_lease_and_complete_in_batches_of_eight(service: Service) -> None:
    with service.client() as admin:
        study = admin.submit(SPEC)
    leased: list[list[TrialAssignment]] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with Client(service.url, token=service.worker_token, retries=2) as client:
                request = BatchLeaseRequest(worker_id=f"batch:{n}", max_trials=8)
                while (batch := client.lease_batch(request)) is not None:
                    assert isinstance(batch, LeaseBatch) and 1 <= len(batch.trials) <= 8
                    leased.append(batch.trials)
                    done = client.complete_batch(
                        BatchCompletion(results=[item(a) for a in batch.trials])
                    )
                    assert [o.status for o in done.results] == [200] * len(batch.trials)
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    ids = [a.trial_id for batch in leased for a in batch]
    assert len(ids) == len(set(ids)) == 40  # each trial once, none shared
    assert max(len(batch) for batch in leased) == 8
    with service.client() as admin:
        final = admin.study(study.id)
    assert final.state == "finished"
    assert final.counts.completed == 40
    orphans = query(
        service.database_url,
        "SELECT count(*) FROM trials t LEFT JOIN hps_leases l ON l.trial_id = t.trial_id"
        " WHERE t.state = 'RUNNING' OR (l.released IS NOT TRUE AND l.trial_id IS NOT NULL)",
    )
    assert orphans == [(0,)]


def test_a_batch_completion_resent_with_a_stale_item_answers_each_as_before(
    service: Service,
) -> None:
    with service.client() as admin:
        study = admin.submit({**SPEC, "n_trials": 3})
    with Client(service.url, token=service.worker_token, retries=2) as client:
        batch = client.lease_batch(BatchLeaseRequest(worker_id="w:1", max_trials=8))
        assert batch is not None and len(batch.trials) == 3
        first, second, third = batch.trials
        body = BatchCompletion(results=[item(first), item(second, token="stale"), item(third)])
        answers = [client.complete_batch(body) for _ in range(2)]
        for answer in answers:
            assert [o.status for o in answer.results] == [200, 409, 200]
        assert answers[0] == answers[1]
        with service.client() as admin:
            assert admin.study(study.id).state == "running"
        last = client.complete_batch(BatchCompletion(results=[item(second)]))
        assert [o.status for o in last.results] == [200]
        assert client.lease_batch(BatchLeaseRequest(worker_id="w:1", max_trials=8)) is None
    with service.client() as admin:
        assert admin.study(study.id).state == "finished"
