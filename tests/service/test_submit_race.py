"""Issue 16: two replicas racing on one Idempotency-Key create one study, never a 500.

Each replica serialises its own submits, but two replicas both find a new key unknown, both
create a study, and both store the key: the second insert failed on the primary key (a 500),
leaving its study in Optuna's tables, unlisted by hps but shown by the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from api_schemas import StudySpec
from tests.service.conftest import Api, study_spec

pytestmark = pytest.mark.backends  # and on PostgreSQL (tests/postgres.py)


def dashboard_names(api: Api) -> list[str]:
    """Every study in Optuna's tables, as the dashboard lists them."""
    return [s["study_name"] for s in api.client.get("/api/studies").json()["study_summaries"]]


def test_the_replica_that_loses_the_race_answers_with_the_winners_study(
    make_api: Callable[..., Api],
) -> None:
    first, second = make_api(), make_api()  # two replicas on one database
    spec = study_spec(name="raced")
    won = first.client.post("/v1/studies", json=spec, headers={"Idempotency-Key": "race-1"})
    assert won.status_code == 201, won.text
    # The second replica looked the key up before the first stored it, found nothing, and
    # creates its own study now (the step after the lookup, as the interleaving runs it).
    studies = second.client.app.state.studies  # type: ignore[attr-defined]
    lost = studies._create(StudySpec.model_validate(spec), "race-1")
    assert lost.id == won.json()["id"]
    assert [s["id"] for s in second.client.get("/v1/studies").json()] == [lost.id]
    assert len(dashboard_names(second)) == 1, "the losing replica's study is deleted again"
    # And the key still refuses another spec, whichever replica is asked.
    other = second.client.post(
        "/v1/studies", json=study_spec(name="other"), headers={"Idempotency-Key": "race-1"}
    )
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"


def test_concurrent_submits_with_one_key_on_two_replicas_make_one_study(
    make_api: Callable[..., Api],
) -> None:
    replicas = [make_api(), make_api()]
    spec = study_spec(name="stampede")

    def submit(n: int) -> tuple[int, int]:
        response = replicas[n % 2].client.post(
            "/v1/studies", json=spec, headers={"Idempotency-Key": "stampede"}
        )
        return response.status_code, response.json().get("id", -1)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(16)))
    assert {status for status, _ in answers} == {201}, answers
    assert len({study for _, study in answers}) == 1, answers
    assert len(replicas[0].client.get("/v1/studies").json()) == 1
    assert len(dashboard_names(replicas[1])) == 1
