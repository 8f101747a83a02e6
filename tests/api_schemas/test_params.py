"""Parameter domains: choices name the parameter and list what is allowed."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from api_schemas.params import LR_DECAYS, OPTIMIZERS, PARAMS, WARMUP_SCHEDULES, ParamDomain
from api_schemas.search_space import SearchSpace, check_search_space

SPACE = TypeAdapter(SearchSpace)


@pytest.mark.parametrize(
    ("name", "choices"),
    [("optimizer", OPTIMIZERS), ("warmup_schedule", WARMUP_SCHEDULES), ("lr_decay", LR_DECAYS)],
)
def test_a_choice_names_itself_and_lists_the_choices(name: str, choices: tuple[str, ...]) -> None:
    domain = PARAMS[name]
    assert domain.kind == "choice" and domain.choices == choices
    assert all(domain.problem(choice) is None for choice in choices)
    assert domain.problem("foo") == f"has unknown {name} 'foo'; choose from {', '.join(choices)}"
    assert domain.problem(1) is not None


def test_schedule_defaults_keep_old_specs_meaning() -> None:
    # A spec with only warmup_steps meant a linear warmup and a constant lr after it.
    assert PARAMS["warmup_schedule"].default == "linear"
    assert PARAMS["lr_decay"].default == "constant"
    assert WARMUP_SCHEDULES == ("none", "linear", "untuned_linear", "untuned_exponential")
    assert LR_DECAYS == ("constant", "cosine", "linear")


def test_reference_optimizers_are_in_the_adam_family() -> None:
    assert {"radam_reference", "adam_warmup_reference"} <= set(OPTIMIZERS)
    for name in ("degenerated_to_sgd", "decoupled_weight_decay"):
        assert PARAMS[name] == ParamDomain("bool", default=False, help=PARAMS[name].help)


def test_an_unknown_schedule_in_a_search_space_is_reported_at_its_field() -> None:
    space = SPACE.validate_python(
        {
            "optimizer": {"type": "fixed", "value": "adam"},
            "lr": {"type": "fixed", "value": 0.01},
            "warmup_schedule": {"type": "categorical", "choices": ["linear", "foo"]},
            "lr_decay": {"type": "float", "low": 0, "high": 1},
        }
    )
    found = {p.field: p.message for p in check_search_space(space)}
    assert found == {
        "search_space.warmup_schedule.choices[1]": (
            f"has unknown warmup_schedule 'foo'; choose from {', '.join(WARMUP_SCHEDULES)}"
        ),
        "search_space.lr_decay.type": "must be categorical or fixed for lr_decay",
    }
