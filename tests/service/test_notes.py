"""Issue 16: the dashboard shows the answer. A study's optuna-dashboard note holds its verdict,
statement and per-arm table; its objective is named and its name is readable."""

from __future__ import annotations

from typing import Any

from tests.service.conftest import Api

GRID: dict[str, Any] = {
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
        "lr": {"type": "categorical", "choices": [0.001, 0.01, 0.1]},
        "warmup_steps": {"type": "categorical", "choices": [0, 100]},
    },
    "sampler": {"type": "grid"},
    "n_trials": None,
    "seeds_per_trial": 4,
    "analysis": {"margin": 0.05},
}


def loss(params: dict[str, Any]) -> list[float]:
    """Adam needs warmup at a high lr; RAdam does not."""
    base = {0.001: 1.2, 0.01: 0.8, 0.1: 1.0}[params["lr"]]
    if params["optimizer"] == "adam" and params["warmup_steps"] == 0 and params["lr"] >= 0.01:
        base += 1.0
    return [base, base + 0.01, base - 0.01, base + 0.02]


def run_grid(api: Api) -> dict[str, Any]:
    study = api.create(name="note-check", **GRID)
    while (assignment := api.lease()) is not None:
        assert api.complete(assignment, loss(assignment["params"])).status_code == 200
    return study


def dashboard_study(api: Api, study_id: int) -> dict[str, Any]:
    response = api.client.get(f"/api/studies/{study_id}")
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def test_a_study_is_listed_by_a_readable_name_with_its_objective_named(api: Api) -> None:
    study = api.create()
    (summary,) = api.client.get("/api/studies").json()["study_summaries"]
    assert summary["study_name"] == "warmup-check (2030-01-01 12:00:00)"
    detail = dashboard_study(api, study["id"])
    assert detail["objective_names"] == ["held-out loss (mean over seeds)"]
    # A second submit in the same second still gets a name of its own.
    api.create()
    names = [s["study_name"] for s in api.client.get("/api/studies").json()["study_summaries"]]
    assert names == ["warmup-check (2030-01-01 12:00:00)", "warmup-check (2030-01-01 12:00:00) #2"]


def test_the_note_holds_the_verdict_and_the_arms_on_demand(api: Api) -> None:
    study = run_grid(api)
    response = api.client.post(f"/v1/studies/{study['id']}/note")
    assert response.status_code == 200, response.text
    analysis = response.json()
    note = dashboard_study(api, study["id"])["note"]["body"]
    assert analysis["statement"] in note
    assert f"Verdict: {analysis['verdict']['outcome']}" in note
    for workload in analysis["workloads"]:
        for arm in workload["arms"]:
            assert f"| {arm['arm']} |" in note
    # Writing again replaces hps's note instead of stacking copies.
    assert api.client.post(f"/v1/studies/{study['id']}/note").status_code == 200
    assert dashboard_study(api, study["id"])["note"]["body"].count("Verdict:") == 1


def test_a_finished_studys_note_is_written_by_the_service(api: Api) -> None:
    study = run_grid(api)
    notes = api.client.app.state.notes  # type: ignore[attr-defined]
    # A read that finds the study done first does not rob it of its note.
    assert api.study(study["id"])["state"] == "finished"
    assert notes.write_finished() == [study["id"]]
    assert "Verdict:" in dashboard_study(api, study["id"])["note"]["body"]
    assert notes.write_finished() == []  # once


def test_the_note_needs_submit_scope_and_a_real_study(api: Api) -> None:
    study = api.create()
    reader = api.mint("read", name="reader")
    refused = api.client.post(
        f"/v1/studies/{study['id']}/note", headers={"Authorization": f"Bearer {reader}"}
    )
    assert refused.status_code == 403
    assert api.client.post("/v1/studies/999/note").status_code == 404
