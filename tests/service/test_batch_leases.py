"""Batch leases, reports and completions (``POST /v1/lease-batches``, ``/v1/reports``,
``/v1/completions``), on SQLite and PostgreSQL.

A batch of k is k single leases in one transaction: the same trials, the same draws from the
sampler (checked against raw Optuna's ask-and-suggest on a fixed seed), each under its own
lease. A batch report or completion answers each item as its single one would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest

from api_schemas import StudySpec
from api_schemas.studies import WORKLOAD_PARAM
from service.store import build_sampler
from tests.service.conftest import Api, Json, seed_results
from tests.service.test_sampling import SPACE, loss, suggested

pytestmark = pytest.mark.backends


def lease_batch(api: Api, max_trials: int, worker_id: str = "w:1") -> list[Json]:
    """The batch's trials; [] on 204."""
    body = {"worker_id": worker_id, "max_trials": max_trials}
    response = api.client.post("/v1/lease-batches", json=body, headers=api.as_worker)
    assert response.status_code in (200, 204), response.text
    return response.json()["trials"] if response.status_code == 200 else []


def result(assignment: Json, losses: float = 1.0, **fields: Any) -> Json:
    body: Json = {
        "trial_id": assignment["trial_id"],
        "lease_token": assignment["lease_token"],
        "state": "completed",
        "seeds": seed_results(assignment["seeds"], losses),
    }
    body.update(fields)
    return body


def complete_batch(api: Api, results: list[Json]) -> list[Json]:
    response = api.client.post("/v1/completions", json={"results": results}, headers=api.as_worker)
    assert response.status_code == 200, response.text
    outcomes: list[Json] = response.json()["results"]
    assert [o["trial_id"] for o in outcomes] == [r["trial_id"] for r in results]
    return outcomes


def test_a_batch_leases_what_is_left_of_one_study_each_under_its_own_lease(api: Api) -> None:
    study = api.create(n_trials=5)
    batch = lease_batch(api, 8)
    assert len(batch) == 5  # fewer than asked: the study has 5
    assert {a["study_id"] for a in batch} == {study["id"]}
    assert [a["trial_number"] for a in batch] == [0, 1, 2, 3, 4]
    assert len({a["lease_token"] for a in batch}) == 5
    assert len({a["trial_id"] for a in batch}) == 5
    for assignment in batch:  # each lease is live on its own
        heartbeat = {"lease_token": assignment["lease_token"]}
        path = f"/v1/trials/{assignment['trial_id']}/heartbeat"
        assert api.client.post(path, json=heartbeat, headers=api.as_worker).status_code == 200
    assert api.study(study["id"])["counts"]["running"] == 5
    assert lease_batch(api, 8) == []  # no work: 204
    assert api.lease() is None


def test_batches_share_studies_fairly_one_study_per_batch(api: Api) -> None:
    first = api.create(n_trials=6)
    second = api.create(n_trials=6)
    a = lease_batch(api, 3)
    b = lease_batch(api, 3)
    assert {t["study_id"] for t in a} == {first["id"]}
    assert {t["study_id"] for t in b} == {second["id"]}  # the one with fewer in flight


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_batch_draws_what_as_many_asks_draw(make_api: Callable[..., Api], sampler: str) -> None:
    """On a fixed seed, against raw Optuna: 12 trials one by one (TPE's startup), then batches
    of 4, each matched by 4 asks with none told yet (TPE's constant liar sees them running)."""
    api = make_api()
    n = 20
    study = api.create(search_space=SPACE, sampler={"type": sampler, "seed": 7}, n_trials=n)
    spec = StudySpec.model_validate(study["spec"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reference = optuna.create_study(sampler=build_sampler(spec, n_existing=0))
    for _ in range(12):
        (assignment,) = lease_batch(api, 1)
        trial = reference.ask()
        expected = suggested(trial, spec)
        assert assignment["params"] == expected
        reference.tell(trial, loss(expected))
        assert api.complete(assignment, loss(expected)).status_code == 200
    for _ in range(2):
        batch = lease_batch(api, 4)
        asked = [reference.ask() for _ in batch]
        assert [a["params"] for a in batch] == [suggested(t, spec) for t in asked]
        for trial in asked:
            reference.tell(trial, loss(trial.params))
        outcomes = complete_batch(api, [result(a, loss(a["params"])) for a in batch])
        assert [o["status"] for o in outcomes] == [200] * 4
    assert api.study(study["id"])["state"] == "finished"


GRID = {
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "lr": {"type": "categorical", "choices": [1e-3, 1e-2, 1e-1]},
}


def test_a_grid_batch_takes_distinct_cells_in_order(api: Api) -> None:
    study = api.create(search_space=GRID, sampler={"type": "grid"}, n_trials=None)
    cells = [t["params"] for t in api.trials(study["id"])]  # queued, in number order
    batch = lease_batch(api, 4)
    assert [a["params"] for a in batch] == cells[:4]
    rest = lease_batch(api, 4)
    assert [a["params"] for a in rest] == cells[4:]


def test_a_batch_trains_one_workload_and_the_others_follow(api: Api) -> None:
    """With a control, the grid queues the workloads in turn; a batch takes the first one's."""
    control = {"role": "negative", "label": "mlp", "workload": {"name": "digits_mlp"}}
    study = api.create(
        search_space=GRID, sampler={"type": "grid"}, n_trials=None, controls=[control]
    )
    n = study["spec"]["n_trials"]
    assert n == 12
    seen: list[tuple[str, ...]] = []
    while batch := lease_batch(api, 4):
        labels = {a["params"][WORKLOAD_PARAM] for a in batch}
        assert len(labels) == 1
        assert len({a["workload"]["name"] for a in batch}) == 1
        seen += [tuple(sorted(map(str, a["params"].items()))) for a in batch]
        assert [o["status"] for o in complete_batch(api, [result(a) for a in batch])] == [
            200
        ] * len(batch)
    assert len(seen) == len(set(seen)) == n  # every cell once
    assert api.study(study["id"])["state"] == "finished"


def test_a_sampled_trial_of_another_workload_is_queued_for_the_next_lease(api: Api) -> None:
    control = {"role": "negative", "label": "mlp", "workload": {"name": "digits_mlp"}}
    study = api.create(n_trials=30, controls=[control], sampler={"type": "random", "seed": 3})
    batch = lease_batch(api, 30)
    labels = {a["params"][WORKLOAD_PARAM] for a in batch}
    assert len(labels) == 1
    assert len(batch) < 30  # with two workloads drawn at random, one differs before long
    (queued,) = [t for t in api.trials(study["id"]) if t["state"] == "waiting"]
    assert queued["params"][WORKLOAD_PARAM] not in labels
    nxt = api.lease()
    assert nxt is not None and nxt["trial_id"] == queued["id"]
    assert nxt["params"] == queued["params"]


def test_each_item_of_a_batch_completion_is_answered_as_alone(api: Api) -> None:
    study = api.create(n_trials=3)
    first, second, third = lease_batch(api, 3)
    results = [
        result(first),
        result(second, lease_token="not-the-token"),
        result(third, seeds=seed_results([99], 1.0)),  # foreign seed: the result is invalid
        {**result(first), "trial_id": 10_000},  # no such trial
    ]
    outcomes = complete_batch(api, results)
    assert [o["status"] for o in outcomes] == [200, 409, 422, 404]
    assert outcomes[0]["trial"]["state"] == "completed"
    assert outcomes[0]["detail"] is None
    assert all(o["trial"] is None and o["detail"] for o in outcomes[1:])
    assert "another token" in outcomes[1]["detail"]
    states = {t["id"]: t["state"] for t in api.trials(study["id"])}
    assert states == {
        first["trial_id"]: "completed",
        second["trial_id"]: "running",
        third["trial_id"]: "running",
    }
    # The same batch again: the same answers (the first is not recorded twice).
    again = complete_batch(api, results)
    assert [o["status"] for o in again] == [200, 409, 422, 404]
    assert again[0]["trial"] == outcomes[0]["trial"]
    assert api.study(study["id"])["state"] == "running"
    # The single completion agrees with the batch's answer for the same item.
    assert api.complete(first).json() == outcomes[0]["trial"]
    finished = complete_batch(api, [result(second), result(third)])
    assert [o["status"] for o in finished] == [200, 200]
    assert api.study(study["id"])["state"] == "finished"  # derived from the counts


def report_batch(api: Api, reports: list[Json]) -> list[Json]:
    response = api.client.post("/v1/reports", json={"reports": reports}, headers=api.as_worker)
    assert response.status_code == 200, response.text
    outcomes: list[Json] = response.json()["results"]
    assert [o["trial_id"] for o in outcomes] == [r["trial_id"] for r in reports]
    return outcomes


def step(assignment: Json, at: int, value: float, **fields: Any) -> Json:
    body: Json = {
        "trial_id": assignment["trial_id"],
        "lease_token": assignment["lease_token"],
        "step": at,
        "value": value,
    }
    body.update(fields)
    return body


def test_each_item_of_a_batch_report_is_answered_and_recorded_as_alone(api: Api) -> None:
    study = api.create(n_trials=3)
    first, second, ended = lease_batch(api, 3)
    assert api.complete(ended).status_code == 200
    api.clock.advance(60)  # within the lease; a renewal pushes the expiry on from now
    reports = [
        step(first, 10, 2.0),
        step(second, 10, 2.0, lease_token="not-the-token"),
        step(ended, 10, 2.0),
        {**step(first, 10, 2.0), "trial_id": 10_000},
    ]
    outcomes = report_batch(api, reports)
    assert [o["status"] for o in outcomes] == [200, 409, 409, 404]
    assert outcomes[0]["prune"] is False and outcomes[0]["detail"] is None
    assert all(o["prune"] is None and o["detail"] for o in outcomes[1:])
    assert "another token" in outcomes[1]["detail"]
    assert api.intermediate_values(first["trial_id"]) == [(10, 2.0)]
    assert api.intermediate_values(second["trial_id"]) == []
    assert api.intermediate_values(ended["trial_id"]) == []
    # The valid item renewed its lease and the refused one did not: past the leases' first
    # expiry, only the renewed one is live.
    api.clock.advance(first["lease_seconds"] - 30)
    alive = report_batch(api, [step(first, 20, 1.5), step(second, 20, 1.5)])
    assert [o["status"] for o in alive] == [200, 409]
    # A resent step keeps its first value, as a single report does.
    assert [o["status"] for o in report_batch(api, [step(first, 20, 9.0)])] == [200]
    assert api.intermediate_values(first["trial_id"]) == [(10, 2.0), (20, 1.5)]
    assert api.study(study["id"])["counts"]["running"] == 2


def test_a_batch_report_answers_each_prune_decision_as_a_single_report(api: Api) -> None:
    study = api.create(
        n_trials=4,
        seeds_per_trial=1,
        pruner={"type": "median", "n_startup_trials": 0, "n_warmup_steps": 0},
    )
    good = lease_batch(api, 2)
    for at in (10, 30):
        assert [o["prune"] for o in report_batch(api, [step(t, at, 1.0) for t in good])] == [
            False,
            False,
        ]
    assert [o["status"] for o in complete_batch(api, [result(t) for t in good])] == [200, 200]
    bad, fine = lease_batch(api, 2)
    at_30 = report_batch(api, [step(bad, 30, 100.0), step(fine, 30, 0.5)])
    assert [o["prune"] for o in at_30] == [True, False]
    api.client.post(f"/v1/studies/{study['id']}/cancel")
    cancelled = report_batch(api, [step(fine, 40, 0.5)])
    assert cancelled[0]["prune"] is True  # a cancelled study stops what runs


def test_an_expired_lease_in_a_batch_is_failed_and_queued_again(api: Api) -> None:
    study = api.create(n_trials=2)
    first, second = lease_batch(api, 2)
    api.clock.advance(3600)
    outcomes = complete_batch(api, [result(first), result(second)])
    assert [o["status"] for o in outcomes] == [409, 409]
    assert all("expired" in o["detail"] for o in outcomes)
    trials = api.trials(study["id"])
    assert sorted(t["state"] for t in trials) == ["failed", "failed", "waiting", "waiting"]
    # Resent: still the expiry's answer, and nothing more queued.
    assert [o["status"] for o in complete_batch(api, [result(first)])] == [409]
    assert len(api.trials(study["id"])) == 4


def test_a_batch_of_failures_and_prunes_is_recorded_as_single_ones(api: Api) -> None:
    study = api.create(n_trials=2)
    pruned, failed = lease_batch(api, 2)
    assert api.report(pruned, 10, 2.5).status_code == 200
    failure = {"kind": "error", "message": "boom"}
    outcomes = complete_batch(
        api,
        [
            result(pruned, state="pruned", seeds=[]),
            result(failed, state="failed", seeds=[], failure=failure),
        ],
    )
    assert [o["status"] for o in outcomes] == [200, 200]
    assert outcomes[0]["trial"]["state"] == "pruned"
    assert outcomes[0]["trial"]["value"] == 2.5  # its last intermediate value, as tell gives
    assert outcomes[1]["trial"]["failure"] == failure
    assert api.study(study["id"])["state"] == "finished"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"worker_id": "w", "max_trials": 0}, "max_trials"),
        ({"worker_id": "w", "max_trials": 65}, "max_trials"),
        ({"worker_id": "w", "max_trials": "8"}, "max_trials"),
        ({"worker_id": "w"}, "max_trials"),
        ({"worker_id": "w\x00", "max_trials": 2}, "worker_id"),
    ],
)
def test_an_invalid_batch_lease_is_a_422_naming_its_field(api: Api, body: Json, field: str) -> None:
    api.create(n_trials=2)
    response = api.client.post("/v1/lease-batches", json=body, headers=api.as_worker)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert api.sql("SELECT count(*) FROM trials") == [(0,)]  # nothing leased


def test_an_invalid_batch_completion_is_a_422_naming_its_field(api: Api) -> None:
    api.create(n_trials=2)
    first, second = lease_batch(api, 2)
    cases: list[tuple[Json, str]] = [
        ({"results": []}, "results"),
        ({"results": [result(first), result(first)]}, "results"),
        ({"results": [result(first)] * 65}, "results"),
        ({"results": [{**result(first), "state": "done"}]}, "results[0].state"),
        ({"results": [{**result(first), "trial_id": 2**31}]}, "results[0].trial_id"),
        ({"results": [{**result(first), "trial_id": "1"}]}, "results[0].trial_id"),
        ({}, "results"),
    ]
    for body, field in cases:
        response = api.client.post("/v1/completions", json=body, headers=api.as_worker)
        assert response.status_code == 422, response.text
        fields = {e["field"] for e in response.json()["errors"]}
        assert fields == {field}, (body, fields)
    assert {t["state"] for t in api.trials(first["study_id"])} == {"running"}  # none recorded
    assert second["trial_id"] != first["trial_id"]


def test_an_invalid_batch_report_is_a_422_naming_its_field(api: Api) -> None:
    api.create(n_trials=2)
    first, _ = lease_batch(api, 2)
    cases: list[tuple[Json, str]] = [
        ({"reports": []}, "reports"),
        ({"reports": [step(first, 1, 1.0), step(first, 2, 1.0)]}, "reports"),
        ({"reports": [step(first, 1, 1.0)] * 65}, "reports"),
        ({"reports": [step(first, -1, 1.0)]}, "reports[0].step"),
        ({"reports": [step(first, 1, "1.0")]}, "reports[0].value"),
        ({"reports": [{**step(first, 1, 1.0), "trial_id": 0}]}, "reports[0].trial_id"),
        ({}, "reports"),
    ]
    for body, field in cases:
        response = api.client.post("/v1/reports", json=body, headers=api.as_worker)
        assert response.status_code == 422, response.text
        fields = {e["field"] for e in response.json()["errors"]}
        assert fields == {field}, (body, fields)
    assert api.intermediate_values(first["trial_id"]) == []  # none recorded


def test_batch_routes_need_a_worker_token(api: Api) -> None:
    api.create(n_trials=2)
    for path, body in [
        ("/v1/lease-batches", {"worker_id": "w", "max_trials": 2}),
        ("/v1/completions", {"results": [{"trial_id": 1, "lease_token": "x", "state": "pruned"}]}),
        ("/v1/reports", {"reports": [{"trial_id": 1, "lease_token": "x", "step": 1, "value": 1}]}),
    ]:
        response = api.client.post(path, json=body, headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401, response.text
