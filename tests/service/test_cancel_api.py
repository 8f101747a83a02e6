"""Cancelling a study: nothing more is leased, running trials stop, their results are kept."""

from __future__ import annotations

from tests.service.conftest import Api

SPACE = {
    "optimizer": {"type": "fixed", "value": "adam"},
    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
}


def test_a_cancelled_study_leases_nothing_and_prunes_what_runs(api: Api) -> None:
    study = api.create(search_space=SPACE, n_trials=4)
    running = api.lease()
    assert running is not None
    done = api.lease()
    assert done is not None and api.complete(done, 0.5).status_code == 200

    response = api.client.post(f"/v1/studies/{study['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"

    assert api.lease() is None  # the other two trials are never handed out
    decision = api.report(running, step=10, value=1.0)
    assert decision.status_code == 200 and decision.json() == {"prune": True}
    assert api.complete(running, 0.9, state="pruned").status_code == 200

    after = api.study(study["id"])
    assert after["state"] == "cancelled"  # a final trial does not turn it into "finished"
    assert after["counts"]["completed"] == 1 and after["counts"]["pruned"] == 1
    assert after["best_trial"]["id"] == done["trial_id"]


def test_cancelling_twice_or_a_finished_study_changes_nothing(api: Api) -> None:
    study = api.create(search_space=SPACE, n_trials=1)
    assignment = api.lease()
    assert assignment is not None and api.complete(assignment, 0.5).status_code == 200
    assert api.study(study["id"])["state"] == "finished"
    response = api.client.post(f"/v1/studies/{study['id']}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "finished"


def test_cancelling_an_unknown_study_is_404(api: Api) -> None:
    response = api.client.post("/v1/studies/999/cancel")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_cancelling_needs_the_submit_scope(api: Api) -> None:
    study = api.create(search_space=SPACE, n_trials=1)
    reader = {"Authorization": f"Bearer {api.mint('read')}"}
    response = api.client.post(f"/v1/studies/{study['id']}/cancel", headers=reader)
    assert response.status_code == 403
