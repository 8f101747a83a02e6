"""Issue 16: bad values at the edge are 422s, never a 500 later (numpy, fmean, matplotlib), and
numbers are strict (``true`` is no trial count, ``"1.0"`` is no loss)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from api_schemas import IntermediateReport, StudySpec, TrialResult
from api_schemas.studies import MAX_SAMPLER_SEED, MAX_SEED
from api_schemas.trials import MAX_LOSS


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "s",
        "workload": {"name": "preln_transformer"},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        },
        "n_trials": 3,
    }
    body.update(overrides)
    return body


def refused(model: type[BaseModel], body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(body))


@pytest.mark.parametrize("seed", [-1, 2**32, 10**30, MAX_SAMPLER_SEED + 1, True, "1"])
def test_sampler_seeds_outside_numpys_range_are_refused(seed: object) -> None:
    refused(StudySpec, spec(sampler={"type": "tpe", "seed": seed}))


def test_the_largest_sampler_seed_is_taken() -> None:
    body = spec(sampler={"type": "random", "seed": MAX_SAMPLER_SEED})
    assert StudySpec.model_validate_json(json.dumps(body)).sampler.seed == MAX_SAMPLER_SEED


@pytest.mark.parametrize("seed", [-1, 10**30, MAX_SEED + 1, 1.0, "0"])
def test_study_seeds_beyond_31_bits_are_refused(seed: object) -> None:
    refused(StudySpec, spec(seed=seed))


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_trials", True),
        ("n_trials", "3"),
        ("n_trials", 3.0),
        ("seeds_per_trial", True),
        ("trial_time_limit_s", "60"),
        ("trial_time_limit_s", True),
    ],
)
def test_no_bool_or_string_passes_for_a_number(field: str, value: object) -> None:
    refused(StudySpec, spec(**{field: value}))


def test_search_space_bounds_are_numbers_not_strings() -> None:
    space = {
        "optimizer": {"type": "fixed", "value": "adam"},
        "lr": {"type": "float", "low": "0.001", "high": 0.1},
    }
    refused(StudySpec, spec(search_space=space))


@pytest.mark.parametrize("value", ["1.0", True, 1.7e308, -2 * MAX_LOSS, MAX_LOSS * 1.5])
def test_report_values_are_finite_bounded_numbers(value: object) -> None:
    refused(IntermediateReport, {"lease_token": "t", "step": 1, "value": value})


def test_a_report_value_may_be_an_integer() -> None:
    report = IntermediateReport.model_validate_json('{"lease_token": "t", "step": 1, "value": 2}')
    assert report.value == 2.0


def result(*seeds: dict[str, Any], state: str = "completed") -> dict[str, Any]:
    return {"lease_token": "t", "state": state, "seeds": list(seeds)}


def seed(number: int = 0, loss: object = 1.0) -> dict[str, Any]:
    return {"seed": number, "loss": loss, "diverged": False, "steps": 10}


@pytest.mark.parametrize("loss", [1.7e308, -1.7e308, "1.0", True])
def test_final_losses_are_bounded(loss: object) -> None:
    refused(TrialResult, result(seed(0, loss)))


@pytest.mark.parametrize("number", [-1, 2**31, 10**30])
def test_seed_ids_are_31_bit(number: int) -> None:
    refused(TrialResult, result(seed(number), state="pruned"))
