"""Controls (workloads beside the subject) and the analysis settings of a study spec."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api_schemas import WORKLOAD_PARAM, StudySpec, grid_cells
from api_schemas.studies import MAX_GRID_CELLS

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
    "warmup_steps": {"type": "categorical", "choices": [0, 100]},
}


def spec(**overrides: Any) -> StudySpec:
    body: dict[str, Any] = {
        "name": "controls",
        "workload": {"name": "postln_transformer"},
        "search_space": SPACE,
        "sampler": {"type": "grid"},
    }
    return StudySpec.model_validate(body | overrides)


def test_a_grid_runs_every_cell_on_every_workload() -> None:
    s = spec(
        controls=[
            {"role": "contrast", "workload": {"name": "preln_transformer"}},
            {"role": "negative", "label": "mlp", "workload": {"name": "digits_mlp"}},
        ]
    )
    assert list(s.workloads) == ["postln_transformer", "preln_transformer", "mlp"]
    assert s.n_trials == 8 * 3
    cells = s.grid()
    assert len(cells) == 24 and len({tuple(sorted(c.items())) for c in cells}) == 24
    assert {c[WORKLOAD_PARAM] for c in cells} == set(s.workloads)
    assert s.workload_for("mlp").name == "digits_mlp"
    assert s.workload_for(None).name == "postln_transformer"


def test_without_controls_the_grid_is_the_search_space_and_trials_name_no_workload() -> None:
    s = spec()
    assert s.grid() == grid_cells(s.search_space)
    assert s.n_trials == 8


def test_labels_must_be_distinct_and_say_which_field() -> None:
    with pytest.raises(ValidationError) as error:
        spec(controls=[{"role": "contrast", "workload": {"name": "postln_transformer"}}])
    (problem,) = error.value.errors()[0]["ctx"]["problems"]
    assert problem["field"] == "controls[0].label"
    assert "distinct label" in problem["message"]
    labelled = {
        "role": "contrast",
        "label": "postln-12",
        "workload": {"name": "postln_transformer"},
    }
    assert list(spec(controls=[labelled]).workloads) == ["postln_transformer", "postln-12"]


def test_the_grid_limit_counts_every_workload() -> None:
    lrs = [1e-4 * (i + 1) for i in range(MAX_GRID_CELLS // 4 + 1)]
    space = {
        **SPACE,
        "lr": {"type": "categorical", "choices": lrs},
        "warmup_steps": {"type": "fixed", "value": 0},
    }
    assert spec(search_space=space).n_trials == 2 * len(lrs)
    with pytest.raises(ValidationError, match="over 2 workload"):
        spec(
            search_space=space, controls=[{"role": "negative", "workload": {"name": "digits_mlp"}}]
        )


def test_the_margin_is_positive_and_optional() -> None:
    assert spec().analysis.margin is None
    assert spec(analysis={"margin": 0.1}).analysis.margin == 0.1
    with pytest.raises(ValidationError, match="greater than 0"):
        spec(analysis={"margin": 0})
