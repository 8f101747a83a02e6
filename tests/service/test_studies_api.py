"""Submitting and reading studies: a valid spec is stored whole, an invalid one not at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from api_schemas import ErrorBody, StudySpec, grid_cells
from tests.service.conftest import Api, study_spec


def test_create_study_then_read_it_back(api: Api) -> None:
    response = api.client.post("/v1/studies", json=study_spec(seed=7))
    assert response.status_code == 201, response.text
    created = response.json()

    assert created["name"] == "warmup-check"
    assert created["state"] == "running"
    assert created["best_trial"] is None
    assert created["counts"] == {
        "waiting": 0,
        "running": 0,
        "completed": 0,
        "pruned": 0,
        "failed": 0,
        "retried": 0,
    }
    # The stored spec is the validated one, defaults filled in.
    assert created["spec"]["objective"] == {"metric": "loss", "direction": "minimize"}
    assert created["spec"]["seed"] == 7
    assert StudySpec.model_validate(created["spec"]) == StudySpec.model_validate(study_spec(seed=7))

    assert api.study(created["id"]) == created
    assert [s["id"] for s in api.client.get("/v1/studies").json()] == [created["id"]]
    assert api.trials(created["id"]) == []


def test_list_and_counts_follow_the_trials(api: Api) -> None:
    first = api.create(name="first", n_trials=3, seeds_per_trial=1)
    second = api.create(name="second", n_trials=2, seeds_per_trial=1)
    listed = api.client.get("/v1/studies").json()
    assert [(s["id"], s["name"]) for s in listed] == [
        (first["id"], "first"),
        (second["id"], "second"),
    ]

    a = api.lease()
    b = api.lease()
    assert a is not None and b is not None
    assert api.complete(a, 0.5).status_code == 200
    counts = {s["id"]: s["counts"] for s in api.client.get("/v1/studies").json()}
    assert counts[a["study_id"]]["completed"] == 1
    assert counts[a["study_id"]]["running"] == 0
    assert counts[b["study_id"]]["running"] == 1
    assert counts[b["study_id"]]["completed"] == 0


def test_grid_study_counts_every_cell_as_waiting(api: Api) -> None:
    space = {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam", "sgd"]},
        "lr": {"type": "fixed", "value": 0.01},
        "warmup_steps": {"type": "int", "low": 0, "high": 100, "step": 50},
    }
    study = api.create(search_space=space, sampler={"type": "grid"}, n_trials=None)
    assert study["spec"]["n_trials"] == 3 * 3
    assert study["counts"]["waiting"] == 3 * 3
    assert len(api.trials(study["id"])) == 9


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of a spec: set the dotted ``path`` to ``value``."""

    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


_FLOAT = {"type": "float", "low": 0.8, "high": 0.99}
_ADAM_ONLY = {"param": "optimizer", "in": ["adam"]}

INVALID_SPECS = [
    pytest.param(
        _set("search_space.beta2", {"type": "float", "low": 0.9, "high": 1.0}),
        "search_space.beta2.high",
        "search_space.beta2.high must be < 1",
        id="beta2-high",
    ),
    pytest.param(
        _set("search_space.lr", {"type": "float", "low": 0.0, "high": 0.1, "log": True}),
        "search_space.lr.low",
        "search_space.lr.low must be > 0 when log is true",
        id="log-low",
    ),
    pytest.param(
        _set("search_space.optimizer", {"type": "categorical", "choices": ["adam", "adamx"]}),
        "search_space.optimizer.choices[1]",
        "unknown optimizer 'adamx'; choose from adam, adamw, radam, sgd",
        id="unknown-optimizer",
    ),
    pytest.param(
        _set("search_space.beta_2", _FLOAT),
        "search_space.beta_2",
        "search_space.beta_2 is not a known parameter",
        id="unknown-param",
    ),
    pytest.param(
        _set("search_space.weight_decay", {"type": "float", "low": 0.1, "high": 0.01}),
        "search_space.weight_decay.low",
        "search_space.weight_decay.low must be <= high",
        id="low-above-high",
    ),
    pytest.param(
        _set("search_space.beta1", {**_FLOAT, "condition": {"param": "momentum", "in": [0.9]}}),
        "search_space.beta1.condition.param",
        "names 'momentum', which is not in search_space",
        id="condition-missing-parent",
    ),
    pytest.param(
        _set("search_space.beta1", {**_FLOAT, "condition": {"param": "optimizer", "in": ["lamb"]}}),
        "search_space.beta1.condition.in[0]",
        "'lamb' is not a choice of optimizer",
        id="condition-value-not-a-choice",
    ),
    pytest.param(
        _drop("search_space.lr"),
        "search_space.lr",
        "search_space.lr is required",
        id="lr-missing",
    ),
    pytest.param(
        _set("search_space.lr", {"type": "fixed", "value": 0.01, "condition": _ADAM_ONLY}),
        "search_space.lr.condition",
        "search_space.lr.condition is not allowed",
        id="lr-conditional",
    ),
    pytest.param(
        _set("sampler", {"type": "grid"}),
        "search_space.lr",
        "search_space.lr must be categorical, fixed or int for sampler grid",
        id="grid-with-float",
    ),
    pytest.param(
        _set("n_trials", None),
        "n_trials",
        "n_trials is required unless sampler.type is grid",
        id="n-trials-missing",
    ),
    pytest.param(
        _set("objective", {"metric": "loss", "direction": "maximize"}),
        "objective",
        "direction must be 'minimize' for metric 'loss'",
        id="direction-mismatch",
    ),
    pytest.param(
        _set("workload.config", {"d_model": 63, "n_heads": 4}),
        "workload.config",
        "d_model (63) must be a multiple of n_heads (4)",
        id="heads-do-not-divide-width",
    ),
    pytest.param(
        _set("n_trials", "ten"), "n_trials", "n_trials: Input should be a valid integer", id="type"
    ),
    pytest.param(
        _set("search_space.lr.low", "small"),
        "search_space.lr.low",
        "search_space.lr.low: Input should be a valid number",
        id="type-in-param",
    ),
    pytest.param(
        _set("workload.config.d_model", 64.5),
        "workload.config.d_model",
        "workload.config.d_model:",
        id="type-in-workload",
    ),
    pytest.param(
        _set("seeds_per_trial", 0),
        "seeds_per_trial",
        "seeds_per_trial: Input should be greater than or equal to 1",
        id="range",
    ),
    pytest.param(
        _set("budget", 10), "budget", "budget: Extra inputs are not permitted", id="extra-field"
    ),
]


def _stored_studies(api: Api) -> tuple[int, int, int]:
    """Rows of Optuna's studies and trials tables and of hps_studies, read from the file."""
    ((optuna_studies,),) = api.sql("SELECT COUNT(*) FROM studies")
    ((optuna_trials,),) = api.sql("SELECT COUNT(*) FROM trials")
    ((hps_studies,),) = api.sql("SELECT COUNT(*) FROM hps_studies")
    return optuna_studies, optuna_trials, hps_studies


def _assert_nothing_stored(api: Api) -> None:
    assert api.client.get("/v1/studies").json() == []
    assert _stored_studies(api) == (0, 0, 0)


@pytest.mark.parametrize(("mutate", "field", "text"), INVALID_SPECS)
def test_invalid_spec_is_rejected_naming_its_field_and_nothing_is_stored(
    empty_api: Api, mutate: Callable[[dict[str, Any]], None], field: str, text: str
) -> None:
    spec = study_spec()
    mutate(spec)
    response = empty_api.client.post("/v1/studies", json=spec)

    assert response.status_code == 422, response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error == "invalid_request"
    matching = [e for e in body.errors if e.field == field]
    assert matching, f"no error names {field!r}: {body.errors}"
    assert any(text in e.message for e in matching), body.errors
    assert text in body.message
    _assert_nothing_stored(empty_api)


def test_every_problem_of_a_spec_is_reported_at_once(empty_api: Api) -> None:
    spec = study_spec()
    spec["search_space"]["beta2"] = {"type": "float", "low": 0.9, "high": 1.0}
    spec["search_space"]["eps"] = {"type": "float", "low": -1.0, "high": 1e-8}
    response = empty_api.client.post("/v1/studies", json=spec)
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"search_space.beta2.high", "search_space.eps.low"}
    _assert_nothing_stored(empty_api)


@pytest.mark.parametrize(
    "body",
    [b'{"name": "x", ', b"not json at all", b'{"name": "x"} trailing'],
    ids=["truncated", "garbage", "trailing"],
)
def test_malformed_json_is_rejected(empty_api: Api, body: bytes) -> None:
    response = empty_api.post_raw("/v1/studies", body)
    assert response.status_code == 422
    error = ErrorBody.model_validate(response.json())
    assert error.error == "invalid_request"
    assert [e.field for e in error.errors] == [""]
    assert "not valid JSON" in error.errors[0].message
    _assert_nothing_stored(empty_api)


def test_body_that_is_not_an_object_is_rejected(empty_api: Api) -> None:
    response = empty_api.client.post("/v1/studies", json=[study_spec()])
    assert response.status_code == 422
    assert ErrorBody.model_validate(response.json()).error == "invalid_request"
    _assert_nothing_stored(empty_api)


def test_grid_n_trials_must_match_the_grid(empty_api: Api) -> None:
    space = {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "categorical", "choices": [0.1, 0.01, 0.001]},
    }
    response = empty_api.client.post(
        "/v1/studies", json=study_spec(search_space=space, sampler={"type": "grid"}, n_trials=5)
    )
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "n_trials"
    assert "must equal the grid size (6)" in error["message"]
    _assert_nothing_stored(empty_api)


@pytest.mark.parametrize(
    "path", ["/v1/studies/12345", "/v1/studies/12345/trials"], ids=["study", "trials"]
)
def test_unknown_study_is_404(api: Api, path: str) -> None:
    api.create()
    response = api.client.get(path)
    assert response.status_code == 404
    body = ErrorBody.model_validate(response.json())
    assert body.error == "not_found"
    assert "12345" in body.message


def test_study_id_that_is_not_a_number_is_422(empty_api: Api) -> None:
    response = empty_api.client.get("/v1/studies/abc")
    assert response.status_code == 422
    assert ErrorBody.model_validate(response.json()).errors[0].field.endswith("study_id")


def test_unknown_route_answers_with_an_error_body(empty_api: Api) -> None:
    response = empty_api.client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert ErrorBody.model_validate(response.json()).error == "not_found"


def test_health(empty_api: Api) -> None:
    response = empty_api.client.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_restarted_service_continues_the_study(make_api: Callable[..., Api]) -> None:
    first = make_api()
    study = first.create(n_trials=3, seeds_per_trial=1)
    done = first.lease()
    in_flight = first.lease()
    assert done is not None and in_flight is not None
    assert first.complete(done, 0.25).status_code == 200
    first.client.__exit__(None, None, None)

    second = make_api()
    assert second.study(study["id"])["counts"]["completed"] == 1
    # The lease taken before the restart is still honoured.
    assert second.complete(in_flight, 0.5).status_code == 200
    last = second.lease()
    assert last is not None
    assert last["trial_id"] not in {done["trial_id"], in_flight["trial_id"]}
    assert second.complete(last, 0.75).status_code == 200
    after = second.study(study["id"])
    assert after["state"] == "finished"
    assert after["best_trial"]["id"] == done["trial_id"]
    assert second.lease() is None


@pytest.mark.backends  # the bulk insert speaks each driver's parameter style
def test_grid_cells_are_enqueued_in_the_spec_order(api: Api) -> None:
    space = {
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "lr": {"type": "categorical", "choices": [0.1, 0.01]},
    }
    study = api.create(search_space=space, sampler={"type": "grid"}, n_trials=None)
    spec = StudySpec.model_validate(study["spec"])
    params = [t["params"] for t in api.trials(study["id"])]
    assert params == grid_cells(spec.search_space)
    leased = [api.lease() for _ in params]
    assert [a["params"] for a in leased if a is not None] == params
    assert api.lease() is None


def test_a_100k_cell_grid_is_queued_in_seconds(api: Api) -> None:
    """Issue 16: cells were enqueued one transaction each (6,000 took 31 s)."""
    import time

    space = {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam", "sgd", "adamw"]},
        "lr": {"type": "categorical", "choices": [10 ** (-i / 50) for i in range(1, 251)]},
        "warmup_steps": {"type": "int", "low": 0, "high": 990, "step": 10},
    }
    started = time.perf_counter()
    study = api.create(search_space=space, sampler={"type": "grid"}, n_trials=None)
    elapsed = time.perf_counter() - started
    assert study["counts"]["waiting"] == study["spec"]["n_trials"] == 100_000
    assert elapsed < 10, f"{elapsed:.1f} s"
    first = api.lease()
    assert first is not None
    assert first["params"] == {"optimizer": "adam", "lr": 10 ** (-1 / 50), "warmup_steps": 0}
    assert first["trial_number"] == 0


def test_a_retried_submit_with_its_idempotency_key_creates_one_study(api: Api) -> None:
    """Issue 16: a submit that timed out had created its study, and a retry made a second."""
    key = {"Idempotency-Key": "2b9c6c1e-retry"}
    first = api.client.post("/v1/studies", json=study_spec(), headers=key)
    again = api.client.post("/v1/studies", json=study_spec(), headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    assert len(api.client.get("/v1/studies").json()) == 1
    # Without a key, or with another, a submit is a new study.
    assert api.client.post("/v1/studies", json=study_spec()).json()["id"] != first.json()["id"]
    other = api.client.post("/v1/studies", json=study_spec(), headers={"Idempotency-Key": "b"})
    assert other.json()["id"] not in (first.json()["id"],)
    assert len(api.client.get("/v1/studies").json()) == 3


def test_an_idempotency_key_reused_for_another_spec_is_a_422(api: Api) -> None:
    key = {"Idempotency-Key": "k"}
    assert api.client.post("/v1/studies", json=study_spec(), headers=key).status_code == 201
    response = api.client.post("/v1/studies", json=study_spec(name="other"), headers=key)
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert len(api.client.get("/v1/studies").json()) == 1
