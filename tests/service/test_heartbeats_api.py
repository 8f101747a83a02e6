"""Heartbeats renew a lease between reports; a stale one is refused; re-runs keep their history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import optuna
import pytest
from sqlalchemy import text

from api_schemas import ErrorBody, LeaseRenewal, TrialAssignment
from tests.service.conftest import Api, Json, bearer

pytestmark = pytest.mark.backends  # and on PostgreSQL (tests/postgres.py)


def lease(api: Api, worker_id: str = "test-worker:1") -> Json:
    assignment = api.lease(worker_id)
    assert assignment is not None, "expected work, got 204"
    return assignment


def heartbeat(api: Api, assignment: Json, token: str | None = None) -> httpx.Response:
    body = {"lease_token": token or assignment["lease_token"]}
    path = f"/v1/trials/{assignment['trial_id']}/heartbeat"
    return api.client.post(path, json=body, headers=api.as_worker)


def expires_at(api: Api, trial_id: int) -> datetime:
    ((stored,),) = api.sql("SELECT expires_at FROM hps_leases WHERE trial_id = :id", id=trial_id)
    # SQLite hands back text, PostgreSQL a datetime.
    return stored if isinstance(stored, datetime) else datetime.fromisoformat(stored)


def assert_conflict(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert ErrorBody.model_validate(response.json()).error == "lease_conflict"


def test_the_assignment_says_how_long_the_lease_lasts(make_api: Callable[..., Api]) -> None:
    api = make_api(lease_seconds=45.0)
    api.create(n_trials=1)
    assignment = TrialAssignment.model_validate(lease(api))
    assert assignment.lease_seconds == 45.0
    assert assignment.lease_expires_at == api.clock.now + timedelta(seconds=45)


def test_heartbeats_keep_a_trial_without_reports_alive(make_api: Callable[..., Api]) -> None:
    api = make_api(lease_seconds=60.0)
    study = api.create(n_trials=1)
    a = lease(api)
    for _ in range(5):  # 250 s without a single report
        api.clock.advance(50)
        response = heartbeat(api, a)
        assert response.status_code == 200, response.text
        renewed = LeaseRenewal.model_validate(response.json()).lease_expires_at
        assert renewed == api.clock.now + timedelta(seconds=60)
        assert api.client.app.state.leases.expire() == 0
    assert api.trial(study["id"], a["trial_id"])["state"] == "running"
    # A heartbeat is not a report: no intermediate value, no step.
    assert api.intermediate_values(a["trial_id"]) == []
    assert api.trial(study["id"], a["trial_id"])["last_step"] is None
    assert api.complete(a, 0.5).status_code == 200
    assert api.study(study["id"])["state"] == "finished"


def test_a_heartbeat_after_the_lease_ran_out_is_409_and_revives_nothing(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(lease_seconds=60.0)
    study = api.create(n_trials=1)
    a = lease(api)
    api.clock.advance(60)  # the expiry instant itself is already too late
    before = expires_at(api, a["trial_id"])
    assert_conflict(heartbeat(api, a))
    assert expires_at(api, a["trial_id"]) == before
    # The reaper still takes it: the refused heartbeat did not renew anything.
    assert api.client.app.state.leases.expire() == 1
    old = api.trial(study["id"], a["trial_id"])
    assert old["state"] == "failed"
    assert old["failure"]["kind"] == "lease_expired"
    assert_conflict(heartbeat(api, a))
    assert api.trial(study["id"], a["trial_id"]) == old


def test_a_heartbeat_for_a_re_queued_trial_does_not_touch_the_new_lease(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(lease_seconds=60.0)
    api.create(n_trials=1)
    stale = lease(api, "slow-worker:1")
    api.clock.advance(61)
    fresh = lease(api, "fast-worker:2")
    assert fresh["params"] == stale["params"]
    fresh_expiry = expires_at(api, fresh["trial_id"])
    assert_conflict(heartbeat(api, stale))
    # Nor may the stale worker's token renew the new lease.
    assert_conflict(heartbeat(api, fresh, token=stale["lease_token"]))
    assert expires_at(api, fresh["trial_id"]) == fresh_expiry


def test_a_heartbeat_under_a_foreign_token_is_409(make_api: Callable[..., Api]) -> None:
    api = make_api(lease_seconds=60.0)
    api.create(n_trials=2)
    mine, theirs = lease(api), lease(api)
    before = expires_at(api, mine["trial_id"])
    api.clock.advance(10)
    assert_conflict(heartbeat(api, mine, token="forged"))
    assert_conflict(heartbeat(api, mine, token=theirs["lease_token"]))
    assert expires_at(api, mine["trial_id"]) == before


def test_a_heartbeat_after_completion_is_409(api: Api) -> None:
    api.create(n_trials=1)
    a = lease(api)
    assert api.complete(a, 0.5).status_code == 200
    assert_conflict(heartbeat(api, a))


def test_a_heartbeat_for_an_unknown_trial_is_404(api: Api) -> None:
    api.create(n_trials=1)
    a = lease(api)
    response = heartbeat(api, {**a, "trial_id": a["trial_id"] + 1000})
    assert response.status_code == 404
    assert ErrorBody.model_validate(response.json()).error == "not_found"


def test_a_heartbeat_needs_the_worker_scope(api: Api) -> None:
    api.create(n_trials=1)
    a = lease(api)
    path = f"/v1/trials/{a['trial_id']}/heartbeat"
    body = {"lease_token": a["lease_token"]}
    reader = bearer(api.mint("read", name="reader"))
    assert api.client.post(path, json=body, headers=reader).status_code == 403
    unknown = api.client.post(path, json=body, headers=bearer("hps_not-a-token"))
    assert unknown.status_code == 401


def test_a_heartbeat_body_is_validated(api: Api) -> None:
    api.create(n_trials=1)
    a = lease(api)
    path = f"/v1/trials/{a['trial_id']}/heartbeat"
    for body in ({}, {"lease_token": a["lease_token"], "step": 3}):
        response = api.client.post(path, json=body, headers=api.as_worker)
        assert response.status_code == 422, body


def test_a_re_queued_trial_keeps_the_history_of_its_earlier_runs(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(lease_seconds=60.0, max_attempts=3)
    study = api.create(n_trials=1)
    first = lease(api, "host-a:1")
    assert api.fail(first, "interrupted", "SIGTERM at step 7").status_code == 200
    second = lease(api, "host-b:2")
    api.clock.advance(61)
    third = lease(api, "host-c:3")  # expires the second run on the way
    assert [a["params"] for a in (second, third)] == [first["params"]] * 2
    assert third["attempt"] == 3

    expected = [
        {
            "attempt": 1,
            "kind": "interrupted",
            "message": "SIGTERM at step 7",
            "worker_id": "host-a:1",
        },
        {
            "attempt": 2,
            "kind": "lease_expired",
            "message": "lease expired: no word from worker 'host-b:2' in time",
            "worker_id": "host-b:2",
        },
    ]
    trials = {t["id"]: t for t in api.trials(study["id"])}
    assert trials[first["trial_id"]]["history"] == []
    assert trials[second["trial_id"]]["history"] == expected[:1]
    assert trials[third["trial_id"]]["history"] == expected
    # The history is an Optuna user attribute, so it is in the database file for any reader.
    stored = optuna.load_study(study_name=None, storage=api.database_url)
    (rerun,) = [t for t in stored.trials if t.number == trials[third["trial_id"]]["number"]]
    assert rerun.user_attrs["history"] == expected

    assert api.complete(third, 0.5).status_code == 200
    done = api.study(study["id"])
    assert done["state"] == "finished"
    assert (done["counts"]["completed"], done["counts"]["retried"]) == (1, 2)


def test_completion_is_answered_again_after_a_crash_before_the_lease_was_released(
    api: Api,
) -> None:
    # The service ends a trial and releases its lease in two transactions; a SIGKILL between
    # them leaves a finished trial under a live lease. The worker's retry must get the result.
    study = api.create(n_trials=2)
    a = lease(api)
    first = api.complete(a, 0.25)
    assert first.status_code == 200
    with api.client.app.state.store.session() as session:
        session.execute(
            text("UPDATE hps_leases SET released = :no WHERE trial_id = :t"),
            {"t": a["trial_id"], "no": False},
        )
    again = api.complete(a, 0.25)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert api.study(study["id"])["counts"]["completed"] == 1
