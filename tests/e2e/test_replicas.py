"""Two service replicas (real ``hps serve`` processes) on one PostgreSQL database, one study,
simulated workers in threads that lease from either replica and report and complete on either.

Some workers complete the same trial on both replicas at once (a retry that raced the first
try); some abandon their trial, so that both replicas' reapers race to expire it. Then: no trial
handed out twice, none lost, every completion recorded once, exactly ``n_trials`` counted.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_schemas.tokens import Scope
from hps.client import Client
from tests.e2e.conftest import environment, free_port
from tests.postgres import query

pytestmark = [pytest.mark.e2e, pytest.mark.postgresql]

N_TRIALS = 60
N_WORKERS = 8
ABANDON_EVERY = 9
"""A worker walks away from every 9th trial it takes: a reaper must expire and re-queue it."""
DOUBLE_EVERY = 5
"""Every 5th completion is sent to both replicas at once."""
LEASE_S = "3"


def serve(directory: Path, database_url: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    directory.mkdir()
    env = environment(
        HPS_DATABASE_URL=database_url,
        HPS_LEASE_SECONDS=LEASE_S,
        HPS_MAX_ATTEMPTS="100",  # a re-run may be abandoned again: every one is re-queued
        HPS_REAPER_INTERVAL_S="0.3",
        HPS_TOKEN_FILE=str(directory / "hps.token"),
    )
    log = (directory / "service.log").open("wb")
    cmd = [sys.executable, "-m", "hps", "serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=directory)
    url = f"http://127.0.0.1:{port}"
    with Client(url, retries=0) as probe:
        deadline = time.monotonic() + 60
        while not probe.health():
            assert process.poll() is None, (directory / "service.log").read_text()
            assert time.monotonic() < deadline, "a replica did not come up"
            time.sleep(0.1)
    return url, process


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[list[tuple[str, str]]]:
    """Two replicas on one database: (url, admin token) each. The second starts once the first
    has created the tables (creating Optuna's tables is not safe to race)."""
    started = []
    try:
        for name in ("a", "b"):
            url, process = serve(tmp_path / name, postgres_url)
            started.append((url, process, (tmp_path / name / "hps.token").read_text().strip()))
        yield [(url, token) for url, _, token in started]
    finally:
        for _, process, _ in started:
            process.terminate()
            process.wait(timeout=30)
        for name in ("a", "b"):
            log = tmp_path / name / "service.log"
            if log.exists():
                text = log.read_text()
                assert "Traceback" not in text, text[-3000:]


class Books:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.leased: list[int] = []
        self.completed: dict[int, float] = {}
        self.abandoned: set[int] = set()
        self.problems: list[str] = []

    def problem(self, what: str) -> None:
        with self.lock:
            self.problems.append(what)


def worker(urls: list[str], token: str, index: int, books: Books, stop: threading.Event) -> None:
    rng = random.Random(index)
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=u, headers=headers, timeout=60) for u in urls]
    try:
        n = 0
        while not stop.is_set():
            http = rng.choice(clients)
            response = http.post("/v1/leases", json={"worker_id": f"sim-{index}"})
            if response.status_code == 204:
                time.sleep(0.2)  # nothing to do now; abandoned trials come back after expiry
                continue
            if response.status_code != 200:
                books.problem(f"lease: {response.status_code} {response.text[:200]}")
                continue
            a = response.json()
            trial_id, lease = a["trial_id"], a["lease_token"]
            with books.lock:
                books.leased.append(trial_id)
            n += 1
            path = f"/v1/trials/{trial_id}"
            report = {"lease_token": lease, "step": 1, "value": rng.random()}
            if rng.choice(clients).post(f"{path}/reports", json=report).status_code != 200:
                books.problem(f"report on {trial_id} refused")
            if n % ABANDON_EVERY == index % ABANDON_EVERY:
                with books.lock:
                    books.abandoned.add(trial_id)
                continue
            loss = rng.uniform(0.1, 2.0)
            seeds = [{"seed": s, "loss": loss, "diverged": False, "steps": 1} for s in a["seeds"]]
            body = {"lease_token": lease, "state": "completed", "seeds": seeds}
            targets = clients if n % DOUBLE_EVERY == 0 else [rng.choice(clients)]
            with ThreadPoolExecutor(len(targets)) as pool:
                sent = [pool.submit(c.post, f"{path}/complete", json=body) for c in targets]
                answers = [f.result() for f in sent]
            if any(r.status_code != 200 for r in answers):
                books.problem(f"complete {trial_id}: {[(r.status_code, r.text) for r in answers]}")
            elif len({r.text for r in answers}) != 1:
                books.problem(f"complete {trial_id} answered differently: {answers}")
            else:
                with books.lock:
                    books.completed[trial_id] = answers[0].json()["value"]
    except Exception as error:
        books.problem(f"sim-{index}: {error!r}")
    finally:
        for client in clients:
            client.close()


def test_two_replicas_serve_one_study_without_double_or_lost_trials(
    replicas: list[tuple[str, str]], postgres_url: str
) -> None:
    (url_a, admin_a), (url_b, _) = replicas
    with Client(url_a, token=admin_a) as admin:
        token = admin.create_token("sims", [Scope.WORKER]).token
        study = admin.submit(
            {
                "name": "replicas",
                "workload": {"name": "postln_transformer"},
                "search_space": {
                    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                },
                "sampler": {"type": "random", "seed": 0},
                "n_trials": N_TRIALS,
                "seeds_per_trial": 1,
            }
        )
        books = Books()
        stop = threading.Event()
        threads = [
            threading.Thread(target=worker, args=([url_a, url_b], token, i, books, stop))
            for i in range(N_WORKERS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 180
        while admin.study(study.id).state != "finished" and not books.problems:
            assert time.monotonic() < deadline, "the study did not finish"
            time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        final = admin.study(study.id)
        trials = admin.trials(study.id)

    assert not books.problems, books.problems[:5]
    # No trial handed out twice; every one handed out was completed or abandoned, not both.
    assert len(books.leased) == len(set(books.leased))
    assert set(books.leased) == set(books.completed) | books.abandoned
    assert books.abandoned, "no worker walked away: expiry across replicas went untested"
    assert not set(books.completed) & books.abandoned

    assert final.state == "finished", [(t.id, t.state, t.attempt) for t in trials]
    summary = [(t.id, t.state, t.attempt, t.failure) for t in trials if t.state != "completed"]
    assert (final.counts.completed, final.counts.retried) == (N_TRIALS, len(books.abandoned)), (
        summary,
        books.abandoned,
    )
    assert {t.id: t.value for t in trials if t.state == "completed"} == books.completed
    assert {t.id for t in trials if t.state == "failed"} == books.abandoned
    assert all(
        t.failure is not None and t.failure.kind == "lease_expired"
        for t in trials
        if t.state == "failed"
    )

    # Optuna's tables, read without the service: each abandoned trial failed and re-queued once,
    # one value per completion, exactly n_trials counted.
    def rows(statement: str, **params: Any) -> list[tuple[Any, ...]]:
        return query(postgres_url, statement, **params)

    states = dict(rows("SELECT state, COUNT(*) FROM trials GROUP BY state"))
    assert states == {"COMPLETE": N_TRIALS, "FAIL": len(books.abandoned)}
    ((retried,),) = rows("SELECT COUNT(*) FROM trial_user_attributes WHERE key = 'retried'")
    assert retried == len(books.abandoned)
    values = rows("SELECT trial_id, COUNT(*) FROM trial_values GROUP BY trial_id")
    assert dict(values) == dict.fromkeys(books.completed, 1)
    leases = rows("SELECT trial_id, released FROM hps_leases")
    assert dict(leases) == dict.fromkeys(books.leased, True)
