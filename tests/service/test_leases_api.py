"""The worker protocol: lease, report, complete; retries, expiry, pruning and fair share."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import pytest

from api_schemas import ErrorBody, StudySpec, TrialAssignment, contains, grid_cells
from tests.service.conftest import CONDITIONAL_SPACE, Api, Json, seed_results, study_spec

pytestmark = pytest.mark.backends  # and on PostgreSQL (tests/postgres.py)

FIXED_SPACE = {
    "optimizer": {"type": "fixed", "value": "adam"},
    "lr": {"type": "fixed", "value": 0.01},
    "warmup_steps": {"type": "fixed", "value": 20},
}


def lease(api: Api) -> Json:
    assignment = api.lease()
    assert assignment is not None, "expected work, got 204"
    return assignment


def error_code(response: httpx.Response) -> str:
    return ErrorBody.model_validate(response.json()).error


# --- lease ---------------------------------------------------------------------------------


def test_lease_hands_out_a_point_of_the_space_with_the_paired_seeds(make_api: Callable) -> None:
    api = make_api(lease_seconds=90.0)
    space = CONDITIONAL_SPACE
    study = api.create(search_space=space, n_trials=4, seed=11, seeds_per_trial=3)
    spec = StudySpec.model_validate(study["spec"])
    seen = []
    for _ in range(4):
        body = lease(api)
        assignment = TrialAssignment.model_validate(body)
        assert contains(spec.search_space, assignment.params), assignment.params
        assert assignment.seeds == [11, 12, 13]
        assert assignment.study_id == study["id"]
        assert assignment.attempt == 1
        assert assignment.workload == spec.workload
        assert assignment.lease_expires_at == api.clock.now + timedelta(seconds=90)
        seen.append(assignment.trial_id)
    assert len(set(seen)) == 4
    assert api.lease() is None
    assert api.study(study["id"])["counts"]["running"] == 4


def test_lease_request_is_validated(api: Api) -> None:
    api.create()
    response = api.client.post("/v1/leases", json={"worker_id": ""})
    assert response.status_code == 422
    assert [e.field for e in ErrorBody.model_validate(response.json()).errors] == ["worker_id"]
    assert api.trials(api.client.get("/v1/studies").json()[0]["id"]) == []


def test_no_study_means_no_work(api: Api) -> None:
    assert api.lease() is None


def test_a_space_optuna_would_refuse_is_refused_at_submit(api: Api) -> None:
    # Optuna's IntDistribution refuses log with step > 1: accepted, no lease could ever succeed.
    warmup = {"type": "int", "low": 10, "high": 1000, "step": 10, "log": True}
    space = {**FIXED_SPACE, "warmup_steps": warmup}
    response = api.client.post("/v1/studies", json=study_spec(search_space=space, n_trials=1))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["search_space.warmup_steps.step"]
    assert api.lease() is None


# --- report --------------------------------------------------------------------------------


def test_report_records_the_value_and_answers_do_not_prune(api: Api) -> None:
    study = api.create(n_trials=1)
    a = lease(api)
    response = api.report(a, step=5, value=2.5)
    assert response.status_code == 200
    assert response.json() == {"prune": False}
    assert api.intermediate_values(a["trial_id"]) == [(5, 2.5)]
    assert api.trial(study["id"], a["trial_id"])["last_step"] == 5


def test_report_under_a_wrong_token_is_409_and_records_nothing(api: Api) -> None:
    api.create(n_trials=1)
    a = lease(api)
    assert api.report(a, step=1, value=3.0).status_code == 200
    response = api.report(a, step=2, value=1.0, token="not-the-token")
    assert response.status_code == 409
    assert error_code(response) == "lease_conflict"
    assert api.intermediate_values(a["trial_id"]) == [(1, 3.0)]


@pytest.mark.parametrize(
    "body",
    [
        b'{"lease_token":"x","step":1,"value":NaN}',
        b'{"lease_token":"x","step":1,"value":Infinity}',
        b'{"lease_token":"x","step":1,"value":-Infinity}',
    ],
    ids=["nan", "inf", "-inf"],
)
def test_non_finite_report_is_422(api: Api, body: bytes) -> None:
    api.create(n_trials=1)
    a = lease(api)
    raw = body.replace(b'"x"', f'"{a["lease_token"]}"'.encode())
    response = api.post_raw(f"/v1/trials/{a['trial_id']}/reports", raw)
    assert response.status_code == 422
    assert [e.field for e in ErrorBody.model_validate(response.json()).errors] == ["value"]
    assert api.intermediate_values(a["trial_id"]) == []


@pytest.mark.parametrize("endpoint", ["reports", "complete"])
def test_unknown_trial_is_404(api: Api, endpoint: str) -> None:
    api.create(n_trials=1)
    a = lease(api)
    body: Json = {"lease_token": a["lease_token"], "step": 1, "value": 1.0}
    if endpoint == "complete":
        body = {"lease_token": a["lease_token"], "state": "completed"}
        body["seeds"] = seed_results(a["seeds"], 1.0)
    response = api.client.post(f"/v1/trials/{a['trial_id'] + 1000}/{endpoint}", json=body)
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_a_trial_that_is_not_leased_is_409(api: Api) -> None:
    space = {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "fixed", "value": 0.01},
    }
    study = api.create(search_space=space, sampler={"type": "grid"}, n_trials=None)
    waiting = api.trials(study["id"])[0]
    assert waiting["state"] == "waiting"
    response = api.client.post(
        f"/v1/trials/{waiting['id']}/reports", json={"lease_token": "t", "step": 1, "value": 1.0}
    )
    assert response.status_code == 409
    assert api.intermediate_values(waiting["id"]) == []


# --- complete ------------------------------------------------------------------------------


def test_complete_stores_the_mean_over_seeds(api: Api) -> None:
    study = api.create(n_trials=2, seeds_per_trial=3, seed=4)
    a = lease(api)
    losses = [0.5, 0.75, 1.5]
    response = api.complete(a, losses, device="cpu", steps_per_second=12.5)
    assert response.status_code == 200, response.text
    trial = response.json()
    assert trial["state"] == "completed"
    assert trial["value"] == pytest.approx(statistics.fmean(losses))
    assert [s["seed"] for s in trial["seeds"]] == [4, 5, 6]
    assert [s["loss"] for s in trial["seeds"]] == losses
    assert trial["steps_per_second"] == 12.5
    assert trial["worker_id"] == "test-worker:1"
    assert api.trial(study["id"], a["trial_id"]) == trial


def test_completing_twice_gives_the_same_answer(api: Api) -> None:
    study = api.create(n_trials=2)
    a = lease(api)
    first = api.complete(a, [0.5, 0.25])
    again = api.complete(a, [0.5, 0.25])
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert api.study(study["id"])["counts"]["completed"] == 1


def test_completion_under_another_token_is_409(api: Api) -> None:
    study = api.create(n_trials=2)
    a = lease(api)
    forged = {**a, "lease_token": "forged"}
    response = api.complete(forged, 0.1)
    assert response.status_code == 409
    assert error_code(response) == "lease_conflict"
    assert api.trial(study["id"], a["trial_id"])["state"] == "running"
    # And after the real completion a forged one is still refused, not answered.
    assert api.complete(a, 0.3).status_code == 200
    assert api.complete(forged, 0.1).status_code == 409
    assert api.trial(study["id"], a["trial_id"])["value"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    "seeds",
    [[0], [0, 1, 2], [0, 2], [1, 1]],
    ids=["too-few", "too-many", "wrong-seed", "repeated"],
)
def test_completion_with_other_seeds_is_422_and_the_trial_stays_running(
    api: Api, seeds: list[int]
) -> None:
    study = api.create(n_trials=1, seeds_per_trial=2, seed=0)
    a = lease(api)
    response = api.complete({**a, "seeds": seeds}, 0.5)
    assert response.status_code == 422
    assert error_code(response) == "invalid_result"
    trial = api.trial(study["id"], a["trial_id"])
    assert trial["state"] == "running"
    assert trial["value"] is None
    assert trial["seeds"] == []
    # The lease is intact: the right result is still accepted.
    assert api.complete(a, 0.5).status_code == 200


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity"])
def test_non_finite_completion_is_422(api: Api, literal: bytes) -> None:
    study = api.create(n_trials=1, seeds_per_trial=1, seed=0)
    a = lease(api)
    body = (
        b'{"lease_token":"%s","state":"completed",'
        b'"seeds":[{"seed":0,"loss":%s,"diverged":true,"steps":3}]}'
    ) % (a["lease_token"].encode(), literal)
    response = api.post_raw(f"/v1/trials/{a['trial_id']}/complete", body)
    assert response.status_code == 422
    assert [e.field for e in ErrorBody.model_validate(response.json()).errors] == ["seeds[0].loss"]
    assert api.trial(study["id"], a["trial_id"])["state"] == "running"


def test_study_finishes_when_every_trial_is_final_and_names_the_best(api: Api) -> None:
    study = api.create(n_trials=3, seeds_per_trial=1)
    losses = {}
    for loss in (0.7, 0.2, 0.9):
        a = lease(api)
        assert api.study(study["id"])["state"] == "running"
        assert api.complete(a, loss).status_code == 200
        losses[a["trial_id"]] = loss
    finished = api.study(study["id"])
    assert finished["state"] == "finished"
    assert finished["counts"]["completed"] == 3
    assert finished["best_trial"]["id"] == min(losses, key=losses.__getitem__)
    assert finished["best_trial"]["value"] == pytest.approx(min(losses.values()))
    assert api.lease() is None


def test_accuracy_objective_picks_the_highest(api: Api) -> None:
    study = api.create(n_trials=2, seeds_per_trial=1, objective={"metric": "accuracy"})
    accuracies = {}
    for accuracy in (0.4, 0.8):
        a = lease(api)
        assert a["metric"] == "accuracy"
        seeds = [{**seed_results(a["seeds"], 1.0)[0], "accuracy": accuracy}]
        assert api.complete(a, seeds=seeds).status_code == 200
        accuracies[a["trial_id"]] = accuracy
    best = api.study(study["id"])["best_trial"]
    assert best["id"] == max(accuracies, key=accuracies.__getitem__)


# --- pruning -------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup", [0, 20])
def test_pruning_never_happens_inside_the_trials_warmup(api: Api, warmup: int) -> None:
    space = {**FIXED_SPACE, "warmup_steps": {"type": "fixed", "value": warmup}}
    study = api.create(
        search_space=space,
        n_trials=3,
        seeds_per_trial=1,
        pruner={"type": "median", "n_startup_trials": 0, "n_warmup_steps": 0},
    )
    for _ in range(2):  # two good trials set the median at every step
        good = lease(api)
        for step in (10, 30):
            assert api.report(good, step, 1.0).json() == {"prune": False}
        assert api.complete(good, 1.0).status_code == 200

    bad = lease(api)
    early = api.report(bad, 10, 100.0)
    assert early.status_code == 200
    # Step 10 is as bad as step 30; only the trial's own warmup keeps it alive.
    assert early.json() == {"prune": warmup <= 10}
    assert api.report(bad, 30, 100.0).json() == {"prune": True}
    assert api.intermediate_values(bad["trial_id"]) == [(10, 100.0), (30, 100.0)]

    response = api.complete(bad, state="pruned", seeds=[])
    assert response.status_code == 200
    assert response.json()["state"] == "pruned"
    after = api.study(study["id"])
    assert after["counts"]["pruned"] == 1
    assert after["state"] == "finished"


# --- failures and retries ------------------------------------------------------------------


def test_interrupted_trial_is_retried_with_the_same_params(api: Api) -> None:
    study = api.create(n_trials=2, seeds_per_trial=1)
    first = lease(api)
    response = api.fail(first, "interrupted", "SIGTERM while training")
    assert response.status_code == 200
    failed = response.json()
    assert failed["state"] == "failed"
    assert failed["failure"] == {"kind": "interrupted", "message": "SIGTERM while training"}

    retry = lease(api)
    assert retry["trial_id"] != first["trial_id"]
    assert retry["params"] == first["params"]
    assert retry["attempt"] == 2
    counts = api.study(study["id"])["counts"]
    assert counts["retried"] == 1
    assert counts["failed"] == 1

    assert api.complete(retry, 0.5).status_code == 200
    # The retried failure does not use up the budget: one more trial is still owed.
    assert api.study(study["id"])["state"] == "running"
    last = lease(api)
    assert last["attempt"] == 1
    assert api.complete(last, 0.6).status_code == 200
    done = api.study(study["id"])
    assert done["state"] == "finished"
    assert done["counts"] == {
        "waiting": 0,
        "running": 0,
        "completed": 2,
        "pruned": 0,
        "failed": 1,
        "retried": 1,
    }
    assert api.lease() is None


@pytest.mark.parametrize("kind", ["error", "time_limit"])
def test_a_failure_of_the_trial_itself_is_not_retried(api: Api, kind: str) -> None:
    study = api.create(n_trials=2, seeds_per_trial=1)
    first = lease(api)
    assert api.fail(first, kind, "boom").status_code == 200
    second = lease(api)
    assert second["attempt"] == 1
    assert api.study(study["id"])["counts"]["retried"] == 0
    assert api.complete(second, 0.5).status_code == 200
    done = api.study(study["id"])
    assert done["state"] == "finished"
    assert (done["counts"]["completed"], done["counts"]["failed"]) == (1, 1)
    assert api.lease() is None


def test_max_attempts_stops_retrying(make_api: Callable) -> None:
    api = make_api(max_attempts=2)
    study = api.create(n_trials=1, seeds_per_trial=1)
    first = lease(api)
    assert api.fail(first, "interrupted").status_code == 200
    second = lease(api)
    assert (second["attempt"], second["params"]) == (2, first["params"])
    assert api.fail(second, "interrupted").status_code == 200
    assert api.lease() is None
    done = api.study(study["id"])
    assert done["state"] == "finished"
    assert (done["counts"]["failed"], done["counts"]["retried"]) == (2, 1)


# --- lease expiry --------------------------------------------------------------------------


def test_reports_renew_the_lease(make_api: Callable) -> None:
    api = make_api(lease_seconds=60.0)
    study = api.create(n_trials=1)
    a = lease(api)
    api.clock.advance(50)
    assert api.report(a, 1, 1.0).status_code == 200
    api.clock.advance(50)  # 100 s after the lease, 50 s after the report
    assert api.client.app.state.leases.expire() == 0
    assert api.report(a, 2, 1.0).status_code == 200
    assert api.complete(a, 0.5).status_code == 200
    assert api.study(study["id"])["state"] == "finished"


def test_expired_lease_fails_the_trial_and_requeues_its_params(make_api: Callable) -> None:
    api = make_api(lease_seconds=60.0)
    study = api.create(n_trials=1)
    stale = lease(api)
    assert api.report(stale, 1, 2.0).status_code == 200
    api.clock.advance(61)

    fresh = lease(api)  # asking for work expires the lost worker's lease first
    assert fresh["trial_id"] != stale["trial_id"]
    assert fresh["params"] == stale["params"]
    assert fresh["attempt"] == 2
    old = api.trial(study["id"], stale["trial_id"])
    assert old["state"] == "failed"
    assert old["failure"]["kind"] == "lease_expired"

    # The stale worker comes back: it is refused and changes nothing.
    report = api.report(stale, 2, 0.1)
    assert report.status_code == 409
    completion = api.complete(stale, 0.1)
    assert completion.status_code == 409
    assert error_code(completion) == "lease_conflict"
    assert api.intermediate_values(stale["trial_id"]) == [(1, 2.0)]
    assert api.trial(study["id"], stale["trial_id"]) == old
    assert api.study(study["id"])["counts"]["completed"] == 0

    assert api.complete(fresh, 0.3).status_code == 200
    assert api.study(study["id"])["state"] == "finished"


def test_expire_reaps_only_leases_past_their_time(make_api: Callable) -> None:
    api = make_api(lease_seconds=60.0)
    study = api.create(n_trials=3)
    early = lease(api)
    api.clock.advance(30)
    late = lease(api)
    api.clock.advance(31)  # early: 61 s old, late: 31 s old
    assert api.client.app.state.leases.expire() == 1
    states = {t["id"]: t["state"] for t in api.trials(study["id"])}
    assert states[early["trial_id"]] == "failed"
    assert states[late["trial_id"]] == "running"
    assert api.complete(late, 0.4).status_code == 200
    assert api.complete(early, 0.4).status_code == 409


def test_completion_refused_at_the_expiry_instant_fails_the_trial(make_api: Callable) -> None:
    api = make_api(lease_seconds=60.0)
    study = api.create(n_trials=1)
    a = lease(api)
    api.clock.now = datetime.fromisoformat(a["lease_expires_at"])
    assert api.complete(a, 0.5).status_code == 409
    assert api.trial(study["id"], a["trial_id"])["state"] == "failed"


def test_the_reaper_expires_leases_without_any_request(make_api: Callable) -> None:
    api = make_api(lease_seconds=60.0, reaper_interval_s=0.05)
    study = api.create(n_trials=1)
    a = lease(api)
    api.clock.advance(61)
    deadline = time.monotonic() + 5
    while api.trial(study["id"], a["trial_id"])["state"] == "running":
        assert time.monotonic() < deadline, "the reaper never expired the lease"
        time.sleep(0.05)
    assert api.trial(study["id"], a["trial_id"])["failure"]["kind"] == "lease_expired"
    # The re-run is queued just after the trial fails (Optuna's tell, then its enqueue).
    while api.study(study["id"])["counts"]["waiting"] != 1:
        assert time.monotonic() < deadline, "the reaper never queued the trial again"
        time.sleep(0.05)


# --- grids, fair share, concurrency --------------------------------------------------------


def test_grid_study_runs_every_cell_once(api: Api) -> None:
    space = {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "fixed", "value": 0.01},
        "warmup_steps": {"type": "int", "low": 0, "high": 10, "step": 10},
        "beta2": {
            "type": "categorical",
            "choices": [0.99, 0.999],
            "condition": {"param": "optimizer", "in": ["adam"]},
        },
        "nesterov": {
            "type": "categorical",
            "choices": [True, False],
            "condition": {"param": "optimizer", "in": ["sgd"]},
        },
    }
    study = api.create(search_space=space, sampler={"type": "grid"}, n_trials=None)
    cells = grid_cells(StudySpec.model_validate(study["spec"]).search_space)
    assert len(cells) == 2 * (2 + 2)  # warmup x (adam x beta2 + sgd x nesterov)

    leased = []
    while (a := api.lease()) is not None:
        leased.append(a["params"])
        assert api.complete(a, 1.0).status_code == 200
    assert len(leased) == len(cells)
    as_set = {frozenset(p.items()) for p in leased}
    assert as_set == {frozenset(c.items()) for c in cells}
    assert all(type(p.get("nesterov", False)) is bool for p in leased)
    assert api.study(study["id"])["state"] == "finished"


def test_a_grid_queued_by_one_service_is_leased_in_order_by_another(
    make_api: Callable[..., Api],
) -> None:
    # A replica, or the same service after a restart, finds the queued cells in the database,
    # oldest first: its own Optuna cache has never seen them.
    first = make_api()
    space = {
        "optimizer": {"type": "fixed", "value": "adam"},
        "lr": {"type": "categorical", "choices": [0.001, 0.01, 0.1]},
    }
    study = first.create(search_space=space, sampler={"type": "grid"}, n_trials=None)
    second = make_api()
    got = [lease(second) for _ in range(3)]
    assert [a["trial_number"] for a in got] == [0, 1, 2]
    assert {a["params"]["lr"] for a in got} == {0.001, 0.01, 0.1}
    assert second.lease() is None
    for assignment in got:
        assert second.complete(assignment, 1.0).status_code == 200
    assert first.study(study["id"])["state"] == "finished"


def test_leases_alternate_between_running_studies(api: Api) -> None:
    first = api.create(name="first", n_trials=3, seeds_per_trial=1)
    second = api.create(name="second", n_trials=3, seeds_per_trial=1)
    got = [lease(api) for _ in range(4)]
    ids = [first["id"], second["id"]]
    assert [a["study_id"] for a in got] == ids * 2
    # Finishing one of first's trials makes it the study with the fewest in flight.
    assert api.complete(got[0], 0.5).status_code == 200
    assert lease(api)["study_id"] == first["id"]
    # first has used its budget; second's last trial is all that is left.
    assert lease(api)["study_id"] == second["id"]
    assert api.lease() is None


def test_concurrent_workers_never_share_a_trial(api: Api) -> None:
    n_trials = 16
    study = api.create(n_trials=n_trials, seeds_per_trial=1)
    handed_out: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        try:
            while True:
                response = api.client.post("/v1/leases", json={"worker_id": f"w{worker}"})
                if response.status_code == 204:
                    return
                assert response.status_code == 200, response.text
                a = response.json()
                with lock:
                    handed_out.append(a["trial_id"])
                assert api.report(a, 1, 1.0).status_code == 200
                assert api.complete(a, 0.5).status_code == 200
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(handed_out) == n_trials
    assert len(set(handed_out)) == n_trials
    done = api.study(study["id"])
    assert done["state"] == "finished"
    assert done["counts"]["completed"] == n_trials
    assert {t["worker_id"] for t in api.trials(study["id"])} <= {f"w{i}" for i in range(8)}


@pytest.mark.parametrize("field", ["worker_id", "device"])
def test_a_nul_character_in_a_lease_request_is_422_and_starts_nothing(api: Api, field: str) -> None:
    # PostgreSQL cannot store NUL in text; SQLite can. Both refuse it the same way, before any
    # trial is started (a 500 here once left a RUNNING trial without a lease).
    study = api.create(n_trials=1)
    body = {"worker_id": "host:1", field: "bad\x00name"}
    response = api.client.post("/v1/leases", json=body, headers=api.as_worker)
    assert response.status_code == 422, response.text
    assert api.study(study["id"])["counts"]["running"] == 0
    assert lease(api)["trial_number"] == 0  # the study is untouched and leases as before
