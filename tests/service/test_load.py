"""Under load: 32 simulated workers against one real service for a bounded time, on SQLite and
on PostgreSQL.

Each simulated worker is a thread with its own httpx client and a worker-scope token. It leases,
reports three times, sends a heartbeat and completes, over and over; one trial in seven it
fails instead ("interrupted"), so that re-queueing runs under load too. Then the books must
balance: no 5xx and no "database is locked", no trial handed out twice, every completion
recorded exactly once in the API and in Optuna's own tables.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_schemas.tokens import Scope
from tests.live_server import LiveService, live_service
from tests.postgres import query

pytestmark = pytest.mark.backends  # and on PostgreSQL (tests/postgres.py)

N_WORKERS = 32
DURATION_S = 20.0
REPORTS = 3
FAIL_EVERY = 7


def load_spec(name: str) -> dict[str, Any]:
    # A budget no run of DURATION_S can use up: the test is bounded by time, not by work.
    return {
        "name": name,
        "workload": {"name": "postln_transformer"},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        },
        "sampler": {"type": "random", "seed": 0},
        "n_trials": 50_000,
        "seeds_per_trial": 1,
    }


@dataclass
class Books:
    """What the simulated workers saw, kept under one lock."""

    leased: list[int] = field(default_factory=list)
    completed: dict[int, float] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, response: httpx.Response, route: str, *expected: int) -> bool:
        with self.lock:
            self.statuses[route, response.status_code] += 1
            if response.status_code not in expected:
                self.problems.append(f"{route}: {response.status_code} {response.text[:300]}")
                return False
        return True


def simulated_worker(url: str, token: str, index: int, deadline: float, books: Books) -> None:
    """Work until the deadline; a trial in hand is always finished, never abandoned."""
    rng = random.Random(index)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            n = 0
            while time.monotonic() < deadline:
                response = http.post("/v1/leases", json={"worker_id": f"sim-{index}"})
                if not books.answer(response, "lease", 200):
                    continue
                a = response.json()
                trial_id, token_ = a["trial_id"], a["lease_token"]
                with books.lock:
                    books.leased.append(trial_id)
                base = f"/v1/trials/{trial_id}"
                for step in range(1, REPORTS + 1):
                    body = {"lease_token": token_, "step": step, "value": rng.random()}
                    books.answer(http.post(f"{base}/reports", json=body), "report", 200)
                beat = http.post(f"{base}/heartbeat", json={"lease_token": token_})
                books.answer(beat, "heartbeat", 200)
                n += 1
                if (index + n) % FAIL_EVERY == 0:  # staggered: some fail their first trial
                    result: dict[str, Any] = {
                        "lease_token": token_,
                        "state": "failed",
                        "failure": {"kind": "interrupted", "message": f"sim-{index} stopped"},
                    }
                else:
                    loss = rng.uniform(0.1, 2.0)
                    seeds = [
                        {"seed": s, "loss": loss, "diverged": False, "steps": REPORTS}
                        for s in a["seeds"]
                    ]
                    result = {"lease_token": token_, "state": "completed", "seeds": seeds}
                if books.answer(http.post(f"{base}/complete", json=result), "complete", 200):
                    with books.lock:
                        if result["state"] == "failed":
                            books.failed.add(trial_id)
                        else:
                            books.completed[trial_id] = loss
    except Exception as error:  # a transport error is a failure of the service: report it
        with books.lock:
            books.problems.append(f"sim-{index}: {error!r}")


def run_workers(service: LiveService, token: str, duration_s: float) -> Books:
    books = Books()
    deadline = time.monotonic() + duration_s
    threads = [
        threading.Thread(target=simulated_worker, args=(service.url, token, i, deadline, books))
        for i in range(N_WORKERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration_s + 180)
        assert not thread.is_alive(), "a simulated worker hung"
    return books


def test_32_workers_against_one_service(tmp_path: Path, database_url: str) -> None:
    # Leases far longer than the run: any expiry would be a bug here, not load.
    # Every interrupted trial is queued again however often it was interrupted before (a re-run
    # may land on a worker whose next trial fails too): no attempt cap in play.
    settings = {"lease_seconds": 600.0, "reaper_interval_s": 0.5, "max_attempts": 1000}
    with live_service(tmp_path, database_url, **settings) as service:
        worker_token = service.mint(Scope.WORKER, name="load")
        with service.client() as client:
            studies = [client.submit(load_spec(f"load-{i}")) for i in range(2)]
        started = time.monotonic()
        books = run_workers(service, worker_token, DURATION_S)
        elapsed = time.monotonic() - started
        with service.client() as client:
            trials = [t for s in studies for t in client.trials(s.id)]
            retried = sum(client.study(s.id).counts.retried for s in studies)
        log = service.log.text()

    requests = sum(books.statuses.values())
    rate = requests / elapsed
    print(f"{requests} requests ({rate:.0f}/s), {len(books.leased)} trials in {elapsed:.1f} s")
    assert not books.problems, books.problems[:10]
    assert all(status < 500 for _, status in books.statuses), books.statuses
    assert "database is locked" not in log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert len(books.leased) >= N_WORKERS, "the load never reached every worker"
    assert books.failed, "no trial failed: re-queueing went untested"

    # No trial handed out twice, and every one handed out got its final answer.
    assert len(books.leased) == len(set(books.leased))
    assert set(books.leased) == set(books.completed) | books.failed
    assert not set(books.completed) & books.failed

    # The service's books agree with the workers', trial by trial.
    by_state: dict[str, set[int]] = {}
    for trial in trials:
        by_state.setdefault(trial.state, set()).add(trial.id)
    assert by_state.get("completed", set()) == set(books.completed)
    assert by_state.get("failed", set()) == books.failed
    assert "running" not in by_state
    values = {t.id: t.value for t in trials if t.state == "completed"}
    assert values == books.completed
    # Every interrupted trial was queued again; what is still waiting is exactly those re-runs.
    assert len(by_state.get("waiting", set())) <= len(books.failed)
    assert retried == len(books.failed)

    # And Optuna's own tables, read without the service: one value per completion, the three
    # reports of every trial handed out, one released lease per trial.
    def by_trial(statement: str) -> dict[int, int]:
        return {int(k): int(v) for k, v in query(service.database_url, statement)}

    stored = by_trial("SELECT trial_id, COUNT(*) FROM trial_values GROUP BY trial_id")
    reports = by_trial("SELECT trial_id, COUNT(*) FROM trial_intermediate_values GROUP BY trial_id")
    leases = by_trial("SELECT trial_id, released FROM hps_leases")
    assert stored == dict.fromkeys(books.completed, 1)
    assert reports == dict.fromkeys(books.leased, REPORTS)
    assert leases == dict.fromkeys(books.leased, 1)
