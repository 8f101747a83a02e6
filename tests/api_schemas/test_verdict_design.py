"""Design rules of a verdict study, checked at submit (SCIENCE.md, "Design")."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api_schemas import StudySpec

GRID: dict[str, Any] = {
    "name": "design",
    "workload": {"name": "postln_transformer"},
    "sampler": {"type": "grid"},
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
        "lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
        "warmup_steps": {"type": "categorical", "choices": [0, 50]},
    },
}


@pytest.mark.parametrize("pruner", ["median", "percentile"])
def test_a_grid_refuses_a_pruner_and_says_why(pruner: str) -> None:
    with pytest.raises(ValidationError) as raised:
        StudySpec.model_validate(GRID | {"pruner": {"type": pruner}})
    (error,) = raised.value.errors()
    assert error["ctx"]["problems"][0]["field"] == "pruner.type"
    assert "implicit warmup" in error["msg"]


def test_a_grid_without_a_pruner_and_free_search_with_one_are_accepted() -> None:
    assert StudySpec.model_validate(GRID | {"pruner": {"type": "none"}}).pruner.type == "none"
    free = GRID | {"sampler": {"type": "tpe"}, "n_trials": 4, "pruner": {"type": "median"}}
    assert StudySpec.model_validate(free).pruner.type == "median"
