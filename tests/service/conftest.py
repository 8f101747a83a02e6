"""The service in-process on a temporary SQLite file, a clock the tests move, and a worker played
by hand through the HTTP API (no trainer is involved).

Tests that use ``make_api`` or ``api`` in a module marked ``backends`` run on SQLite and on
PostgreSQL (tests/postgres.py); the others on SQLite only.

Auth is on, as by default: the client sends the admin token the service wrote to its token file,
and the worker helpers (lease, report, complete) a worker token minted through the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.postgres import query

Json = dict[str, Any]


class FakeClock:
    """The service's notion of now; only ``advance`` moves it."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def study_spec(**overrides: Any) -> Json:
    """A small valid spec: free search over optimizer and lr, 4 trials of 2 seeds."""
    spec: Json = {
        "name": "warmup-check",
        "workload": {"name": "postln_transformer"},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        },
        "sampler": {"type": "random", "seed": 0},
        "n_trials": 4,
        "seeds_per_trial": 2,
    }
    spec.update(overrides)
    return spec


def seed_results(seeds: list[int], losses: list[float] | float) -> list[Json]:
    if isinstance(losses, float | int):
        losses = [float(losses)] * len(seeds)
    return [
        {"seed": s, "loss": loss, "diverged": False, "steps": 100}
        for s, loss in zip(seeds, losses, strict=True)
    ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """The HTTP API as a worker and a user see it. Helpers assert the status they expect."""

    def __init__(
        self, client: TestClient, database: Path, clock: FakeClock, database_url: str
    ) -> None:
        self.client = client
        self.database = database
        """The SQLite file (on PostgreSQL: unused; the token file sits beside it)."""
        self.database_url = database_url
        self.clock = clock
        self._worker_token: str | None = None

    def mint(self, *scopes: str, name: str = "test") -> str:
        """A new token with ``scopes``, created by the admin; returns its secret."""
        response = self.client.post("/v1/tokens", json={"name": name, "scopes": list(scopes)})
        assert response.status_code == 201, response.text
        secret: str = response.json()["token"]
        return secret

    @property
    def as_worker(self) -> dict[str, str]:
        """Headers that authenticate as a worker (scope ``worker`` only)."""
        if self._worker_token is None:
            self._worker_token = self.mint("worker", name="test-worker")
        return bearer(self._worker_token)

    def create(self, **overrides: Any) -> Json:
        response = self.client.post("/v1/studies", json=study_spec(**overrides))
        assert response.status_code == 201, response.text
        return response.json()

    def study(self, study_id: int) -> Json:
        response = self.client.get(f"/v1/studies/{study_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def trials(self, study_id: int) -> list[Json]:
        response = self.client.get(f"/v1/studies/{study_id}/trials")
        assert response.status_code == 200, response.text
        return response.json()

    def trial(self, study_id: int, trial_id: int) -> Json:
        (trial,) = [t for t in self.trials(study_id) if t["id"] == trial_id]
        return trial

    def lease(self, worker_id: str = "test-worker:1") -> Json | None:
        """The next assignment, or None on 204."""
        body = {"worker_id": worker_id}
        response = self.client.post("/v1/leases", json=body, headers=self.as_worker)
        assert response.status_code in (200, 204), response.text
        return response.json() if response.status_code == 200 else None

    def report(self, assignment: Json, step: int, value: float, token: str | None = None) -> Any:
        body = {"lease_token": token or assignment["lease_token"], "step": step, "value": value}
        path = f"/v1/trials/{assignment['trial_id']}/reports"
        return self.client.post(path, json=body, headers=self.as_worker)

    def complete(self, assignment: Json, losses: list[float] | float = 1.0, **fields: Any) -> Any:
        body: Json = {
            "lease_token": assignment["lease_token"],
            "state": "completed",
            "seeds": seed_results(assignment["seeds"], losses),
        }
        body.update(fields)
        path = f"/v1/trials/{assignment['trial_id']}/complete"
        return self.client.post(path, json=body, headers=self.as_worker)

    def fail(self, assignment: Json, kind: str, message: str = "worker stopped") -> Any:
        return self.complete(
            assignment, state="failed", seeds=[], failure={"kind": kind, "message": message}
        )

    def post_raw(self, path: str, body: bytes) -> Any:
        return self.client.post(path, content=body, headers={"content-type": "application/json"})

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Read the database directly, not through the service (``:name`` parameters)."""
        return query(self.database_url, statement, **params)

    def intermediate_values(self, trial_id: int) -> list[tuple[int, float]]:
        return [
            (int(step), float(value))
            for step, value in self.sql(
                "SELECT step, intermediate_value FROM trial_intermediate_values"
                " WHERE trial_id = :trial_id ORDER BY step",
                trial_id=trial_id,
            )
        ]


def start_service(
    database: Path, clock: FakeClock, database_url: str | None = None, **settings: Any
) -> Api:
    """The service on ``database_url`` (by default the SQLite file ``database``), lifespan
    started; the reaper is slowed down unless asked for.

    Its token file sits beside ``database``; the client sends the admin token from it.
    The caller ends it with ``api.client.__exit__(None, None, None)``.
    """
    settings.setdefault("reaper_interval_s", 3600.0)
    settings.setdefault("token_file", database.with_name("hps.token"))
    database_url = database_url or f"sqlite:///{database}"
    config = Settings(database_url=database_url, **settings)
    client = TestClient(create_app(config, clock=clock))
    client.__enter__()
    if config.auth:
        client.headers.update(bearer(config.token_file.read_text().strip()))
    return Api(client, database, clock, database_url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_api(tmp_path: Path, clock: FakeClock, database_url: str) -> Iterator[Callable[..., Api]]:
    """Start the service with these settings; every call on the same database."""
    started: list[Api] = []

    def start(**settings: Any) -> Api:
        started.append(start_service(tmp_path / "hps.db", clock, database_url, **settings))
        return started[-1]

    yield start
    for api in reversed(started):
        api.client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture(scope="module")
def empty_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One service for a module's tests that must leave the database empty (rejected submits).

    Starting the service costs about half a second; these tests share one to stay fast.
    """
    api = start_service(tmp_path_factory.mktemp("empty") / "hps.db", FakeClock())
    yield api
    api.client.__exit__(None, None, None)


CONDITIONAL_SPACE: dict[str, Any] = {
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "warmup_steps": {"type": "int", "low": 0, "high": 200, "step": 50},
    "beta2": {
        "type": "float",
        "low": 0.9,
        "high": 0.999,
        "condition": {"param": "optimizer", "in": ["adam"]},
    },
    "momentum": {
        "type": "categorical",
        "choices": [0.0, 0.9],
        "condition": {"param": "optimizer", "in": ["sgd"]},
    },
}
"""Every parameter kind, with parameters that exist only under a condition."""
