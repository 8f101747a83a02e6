"""The analysis and the report through the HTTP API, on a grid run by hand-played workers."""

from __future__ import annotations

import math
import random
import warnings
from html import escape
from typing import Any

import pytest

from service.report import FIGURES
from tests.service.conftest import Api, Json

CHANCE = math.log(32)
GRID = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
    "warmup_steps": {"type": "categorical", "choices": [0, 100]},
    "beta2": {"type": "fixed", "value": 0.98},
}
CONTROL = {"role": "negative", "label": "mlp", "workload": {"name": "digits_mlp"}}


def planted(params: Json) -> float | None:
    """Post-LN: Adam at lr 1e-2 without warmup fails (None); RAdam does not need warmup.
    The MLP control: warmup changes nothing."""
    lr, warm = params["lr"], params["warmup_steps"] > 0
    if params.get("workload") == "mlp":
        return 0.3 if lr < 1e-2 else 0.2
    if params["optimizer"] == "adam":
        return (0.9 if warm else 1.0) if lr < 1e-2 else (0.5 if warm else None)
    return (1.0 if warm else 1.1) if lr < 1e-2 else (0.5 if warm else 0.52)


def run_study(api: Api, **overrides: Any) -> Json:
    """Lease every trial, check its workload, report a curve and complete it as planted."""
    study = api.create(search_space=GRID, sampler={"type": "grid"}, n_trials=None, **overrides)
    noise = random.Random(0)
    while (assignment := api.lease()) is not None:
        params = assignment["params"]
        label = params.get("workload", "postln_transformer")
        assert assignment["workload"]["name"] == {"mlp": "digits_mlp"}.get(label, label)
        mean = planted(params)
        for step in (10, 20):
            api.report(assignment, step, CHANCE if mean is None else mean + 1 / step)
        seeds = [
            {"seed": s, "loss": CHANCE, "diverged": True, "steps": 20}
            if mean is None
            else {
                "seed": s,
                "loss": mean + 0.01 * s + noise.gauss(0, 0.002),
                "diverged": False,
                "steps": 20,
            }
            for s in assignment["seeds"]
        ]
        response = api.complete(assignment, seeds=seeds)
        assert response.status_code == 200, response.text
    return study


def approx(value: float) -> Any:
    return pytest.approx(value, abs=0.01)


def analysis(api: Api, study_id: int) -> Json:
    response = api.client.get(f"/v1/studies/{study_id}/analysis")
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def test_a_grid_with_a_negative_control_gets_a_verdict(api: Api) -> None:
    study = run_study(api, seeds_per_trial=6, controls=[CONTROL], analysis={"margin": 0.1})
    assert study["spec"]["n_trials"] == 16
    result = analysis(api, study["id"])

    assert result["design"] == "grid" and result["complete"]
    verdict = result["verdict"]
    assert verdict["outcome"] == "REMOVES", result["statement"]
    assert (verdict["radam_arm"], verdict["adam_arm"]) == ("radam", "adam")
    assert verdict["adam_regret"]["estimate"] == approx(0.5)
    assert verdict["radam_regret"]["estimate"] == approx(0.02)
    assert verdict["gap"]["estimate"] == approx(0.02) and verdict["gap"]["high"] < 0.1
    assert verdict["margin"] == 0.1  # as the spec fixed it
    assert [c["passed"] for c in verdict["controls"]] == [True, True]
    subject, mlp = result["workloads"]
    assert (subject["role"], mlp["role"], mlp["workload"]) == ("subject", "negative", "digits_mlp")
    adam = subject["arms"][0]
    assert adam["failure_rate_w0"]["failures"] == 6 and adam["failure_rate_w0"]["runs"] == 12
    assert subject["counts"]["diverged_seeds"] == 6
    assert [c["warmup"] for c in adam["curves"]] == ["0", "100"]
    assert adam["curves"][0]["loss"] == [CHANCE, CHANCE]
    assert result["statement"].startswith("RAdam removes the need to tune warmup")


def test_a_failed_trial_is_counted_as_a_failure_at_chance(api: Api) -> None:
    study = api.create(search_space=GRID, sampler={"type": "grid"}, n_trials=None)
    first = api.lease()
    assert first is not None
    assert api.fail(first, "error", "the workload raised").status_code == 200
    result = analysis(api, study["id"])
    counts = result["workloads"][0]["counts"]
    assert counts["failed"] == {"error": 1} and counts["pending"] == 7
    assert counts["failed_seed_runs"] == counts["seed_runs"] == 2
    assert not result["complete"]


def test_free_search_says_why_the_verdict_needs_a_grid(api: Api) -> None:
    study = api.create()
    while (assignment := api.lease()) is not None:
        api.complete(assignment, 1.0)
    result = analysis(api, study["id"])
    assert result["design"] == "free" and result["verdict"] is None
    assert "balanced grid" in result["verdict_unavailable"]


def test_the_report_is_one_html_page_with_the_verdict_and_inlined_figures(api: Api) -> None:
    study = run_study(api, seeds_per_trial=4, analysis={"margin": 0.1})
    response = api.client.get(f"/v1/studies/{study['id']}/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page.index("REMOVES") < page.index("<img")  # the verdict comes first
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    for shown in ("Γ: RAdam w=0 - tuned Adam", "lr50, w=0", "warmup effect", "Published findings"):
        assert escape(shown) in page, shown
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_a_study_without_results_yet_has_an_analysis_and_a_report(api: Api) -> None:
    study = api.create(search_space=GRID, sampler={"type": "grid"}, n_trials=None)
    result = analysis(api, study["id"])
    assert result["verdict"] is None and "finished yet" in result["verdict_unavailable"]
    assert result["workloads"][0]["counts"]["pending"] == 8 and not result["complete"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no empty-legend or layout warnings either
        response = api.client.get(f"/v1/studies/{study['id']}/report")
    assert response.status_code == 200 and "No verdict" in response.text


def test_unknown_studies_are_404(api: Api) -> None:
    for path in ("analysis", "report"):
        response = api.client.get(f"/v1/studies/999/{path}")
        assert response.status_code == 404 and response.json()["error"] == "not_found"
