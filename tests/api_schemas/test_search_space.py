"""Search-space and study-spec validation: every problem names its field and says what is wrong;
grid_cells and contains agree with conditions."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import hypothesis
import pytest
from pydantic import TypeAdapter, ValidationError

from api_schemas import (
    OPTIMIZERS,
    PARAMS,
    CategoricalParam,
    FloatParam,
    IntParam,
    Scalar,
    SearchSpace,
    StudySpec,
    contains,
    grid_cells,
    grid_size,
)
from api_schemas.search_space import check_search_space, is_active, sampling_order

SPACE = TypeAdapter(SearchSpace)

BASE: dict[str, Any] = {
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}
ADAM_ONLY = {"param": "optimizer", "in": ["adam"]}


def problems(**params: Any) -> dict[str, str]:
    """``{field: "field message"}`` for BASE updated with ``params`` (None removes one)."""
    raw = {**BASE, **params}
    space = SPACE.validate_python({k: v for k, v in raw.items() if v is not None})
    return {p.field: str(p) for p in check_search_space(space)}


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "s",
        "workload": {"name": "preln_transformer"},
        "search_space": BASE,
        "n_trials": 3,
    }
    body.update(overrides)
    return body


def spec_problems(**overrides: Any) -> dict[str, str]:
    """The problems StudySpec reports, by field (the ctx the service turns into 422 errors)."""
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(spec(**overrides))
    found: dict[str, str] = {}
    for error in caught.value.errors():
        for problem in (error.get("ctx") or {}).get("problems", []):
            found[problem["field"]] = problem["message"]
    assert found, caught.value
    return found


def test_base_space_is_valid() -> None:
    assert problems() == {}
    assert StudySpec.model_validate(spec()).n_trials == 3


# --- one problem each --------------------------------------------------------------------


def test_beta2_must_stay_below_one() -> None:
    found = problems(beta2={"type": "float", "low": 0.9, "high": 1.0})
    assert found == {"search_space.beta2.high": "search_space.beta2.high must be < 1"}


def test_log_range_must_start_above_zero() -> None:
    found = problems(lr={"type": "float", "low": 0.0, "high": 0.1, "log": True})
    assert found == {"search_space.lr.low": "search_space.lr.low must be > 0 when log is true"}


def test_log_int_range_must_start_above_zero() -> None:
    found = problems(warmup_steps={"type": "int", "low": 0, "high": 100, "log": True})
    assert found["search_space.warmup_steps.low"].endswith("must be > 0 when log is true")


def test_unknown_optimizer_lists_the_choices() -> None:
    found = problems(optimizer={"type": "categorical", "choices": ["adam", "adamx"]})
    message = found["search_space.optimizer.choices[1]"]
    assert "unknown optimizer 'adamx'" in message
    assert message.endswith(f"choose from {', '.join(OPTIMIZERS)}")
    assert ", ".join(OPTIMIZERS).startswith("adam, adamw, radam, sgd")


def test_unknown_parameter_name_lists_the_known_ones() -> None:
    found = problems(beta_2={"type": "float", "low": 0.9, "high": 0.99})
    message = found["search_space.beta_2"]
    assert "is not a known parameter" in message
    assert all(name in message for name in PARAMS)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("weight_decay", {"type": "float", "low": 0.1, "high": 0.01}),
        ("warmup_steps", {"type": "int", "low": 100, "high": 10}),
    ],
)
def test_low_above_high(param: str, value: dict[str, Any]) -> None:
    found = problems(**{param: value})
    assert found == {f"search_space.{param}.low": f"search_space.{param}.low must be <= high"}


@pytest.mark.parametrize(
    ("param", "value", "field", "text"),
    [
        ("eps", {"type": "fixed", "value": 0.0}, "value", "must be > 0"),
        ("warmup_steps", {"type": "int", "low": -5, "high": 10}, "low", "must be >= 0"),
        ("momentum", {"type": "categorical", "choices": [0.5, 1.5]}, "choices[1]", "must be < 1"),
        ("nesterov", {"type": "fixed", "value": 1}, "value", "must be true or false"),
        ("lr", {"type": "categorical", "choices": ["fast"]}, "choices[0]", "must be a number"),
        ("warmup_steps", {"type": "fixed", "value": 2.5}, "value", "must be a whole number"),
    ],
)
def test_values_outside_the_parameter_domain(
    param: str, value: dict[str, Any], field: str, text: str
) -> None:
    found = problems(**{param: value})
    assert text in found[f"search_space.{param}.{field}"]


@pytest.mark.parametrize(
    ("param", "value", "text"),
    [
        ("warmup_steps", {"type": "float", "low": 0, "high": 10}, "must be int, categorical or"),
        ("nesterov", {"type": "int", "low": 0, "high": 1}, "must be categorical or fixed"),
        ("optimizer", {"type": "float", "low": 0, "high": 1}, "must be categorical or fixed"),
    ],
)
def test_range_types_must_suit_the_parameter(param: str, value: dict[str, Any], text: str) -> None:
    found = problems(**{param: value})
    assert text in found[f"search_space.{param}.type"]


def test_repeated_choice() -> None:
    found = problems(optimizer={"type": "categorical", "choices": ["adam", "sgd", "adam"]})
    assert found["search_space.optimizer.choices"].endswith("must not repeat a value")


# --- conditions ---------------------------------------------------------------------------


def test_condition_on_a_missing_parent() -> None:
    beta1 = {
        "type": "float",
        "low": 0.8,
        "high": 0.9,
        "condition": {"param": "momentum", "in": [0]},
    }
    found = problems(beta1=beta1)
    assert found == {
        "search_space.beta1.condition.param": (
            "search_space.beta1.condition.param names 'momentum', which is not in search_space"
        )
    }


def test_condition_value_not_among_the_parents_choices() -> None:
    condition = {"param": "optimizer", "in": ["adam", "lamb"]}
    found = problems(beta1={"type": "float", "low": 0.8, "high": 0.9, "condition": condition})
    assert found == {
        "search_space.beta1.condition.in[1]": (
            "search_space.beta1.condition.in[1] 'lamb' is not a choice of optimizer"
        )
    }


def test_condition_on_a_continuous_parent() -> None:
    momentum = {"type": "float", "low": 0.0, "high": 0.9}
    condition = {"param": "momentum", "in": [0.5]}
    found = problems(
        momentum=momentum, nesterov={"type": "fixed", "value": True, "condition": condition}
    )
    assert (
        "must name a categorical or fixed parameter"
        in found["search_space.nesterov.condition.param"]
    )


def test_condition_cycle() -> None:
    beta1 = {"type": "categorical", "choices": [0.9], "condition": {"param": "beta2", "in": [0.99]}}
    beta2 = {"type": "categorical", "choices": [0.99], "condition": {"param": "beta1", "in": [0.9]}}
    found = problems(beta1=beta1, beta2=beta2)
    cycles = {field: m for field, m in found.items() if m.endswith("forms a cycle")}
    assert len(cycles) == 1
    assert set(cycles) <= {"search_space.beta1.condition", "search_space.beta2.condition"}


def test_sampling_order_puts_parents_first() -> None:
    space = SPACE.validate_python(
        {
            "nesterov": {
                "type": "fixed",
                "value": True,
                "condition": {"param": "momentum", "in": [0.9]},
            },
            "momentum": {
                "type": "categorical",
                "choices": [0.0, 0.9],
                "condition": {"param": "optimizer", "in": ["sgd"]},
            },
            **BASE,
        }
    )
    order = sampling_order(space)
    assert sorted(order) == sorted(space)
    assert order.index("optimizer") < order.index("momentum") < order.index("nesterov")


# --- required parameters ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["optimizer", "lr"])
def test_required_parameter_missing(name: str) -> None:
    found = problems(**{name: None})
    assert found == {f"search_space.{name}": f"search_space.{name} is required"}


@pytest.mark.parametrize("name", ["optimizer", "lr"])
def test_required_parameter_may_not_be_conditional(name: str) -> None:
    param = {**BASE[name], "condition": {"param": "nesterov", "in": [True]}}
    found = problems(**{name: param}, nesterov={"type": "categorical", "choices": [True, False]})
    assert found[f"search_space.{name}.condition"].endswith(
        f"is not allowed: every trial needs {name}"
    )


# --- study specs --------------------------------------------------------------------------


def test_spec_problems_carry_the_field_and_the_sentence() -> None:
    space = {**BASE, "beta2": {"type": "float", "low": 0.9, "high": 1.0}}
    assert spec_problems(search_space=space) == {
        "search_space.beta2.high": "search_space.beta2.high must be < 1"
    }


def test_all_problems_at_once() -> None:
    space = {
        "optimizer": {"type": "categorical", "choices": ["adamx"]},
        "beta2": {"type": "float", "low": 0.9, "high": 1.0},
    }
    assert set(spec_problems(search_space=space)) == {
        "search_space.lr",
        "search_space.optimizer.choices[0]",
        "search_space.beta2.high",
    }


def test_grid_rejects_a_continuous_parameter() -> None:
    found = spec_problems(sampler={"type": "grid"}, n_trials=None)
    assert found == {
        "search_space.lr": "search_space.lr must be categorical, fixed or int for sampler grid"
    }


GRID_SPACE = {
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "lr": {"type": "categorical", "choices": [0.1, 0.01, 0.001]},
    "warmup_steps": {"type": "int", "low": 0, "high": 100, "step": 50},
}


def test_grid_n_trials_defaults_to_the_number_of_cells() -> None:
    parsed = StudySpec.model_validate(
        spec(search_space=GRID_SPACE, sampler={"type": "grid"}, n_trials=None)
    )
    assert parsed.n_trials == 2 * 3 * 3
    explicit = spec(search_space=GRID_SPACE, sampler={"type": "grid"}, n_trials=18)
    assert StudySpec.model_validate(explicit).n_trials == 18


@pytest.mark.parametrize("n_trials", [1, 17, 19])
def test_grid_n_trials_must_equal_the_grid(n_trials: int) -> None:
    found = spec_problems(search_space=GRID_SPACE, sampler={"type": "grid"}, n_trials=n_trials)
    assert found == {"n_trials": "n_trials must equal the grid size (18) or be omitted"}


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_n_trials_required_for_free_search(sampler: str) -> None:
    found = spec_problems(sampler={"type": sampler}, n_trials=None)
    assert found == {"n_trials": "n_trials is required unless sampler.type is grid"}


@pytest.mark.parametrize(
    ("metric", "direction", "expected"),
    [("loss", "maximize", "minimize"), ("accuracy", "minimize", "maximize")],
)
def test_objective_direction_must_match_the_metric(
    metric: str, direction: str, expected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(spec(objective={"metric": metric, "direction": direction}))
    (error,) = caught.value.errors()
    assert error["loc"] == ("objective",)
    assert f"direction must be '{expected}' for metric '{metric}'" in error["msg"]
    filled = StudySpec.model_validate(spec(objective={"metric": metric}))
    assert filled.objective.direction == expected


def test_workload_width_must_be_a_multiple_of_heads() -> None:
    workload = {"name": "postln_transformer", "config": {"d_model": 63, "n_heads": 4}}
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(spec(workload=workload))
    (error,) = caught.value.errors()
    assert error["loc"] == ("workload", "postln_transformer", "config")
    assert "d_model (63) must be a multiple of n_heads (4)" in error["msg"]
    ok = {"name": "postln_transformer", "config": {"d_model": 64, "n_heads": 4}}
    assert StudySpec.model_validate(spec(workload=ok)).workload.config.d_model == 64


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(spec(budget=3))
    assert [e["type"] for e in caught.value.errors()] == ["extra_forbidden"]


def test_seeds_are_consecutive_from_the_study_seed() -> None:
    parsed = StudySpec.model_validate(spec(seed=40, seeds_per_trial=4))
    assert parsed.seeds == [40, 41, 42, 43]


def test_spec_round_trips_through_json_with_conditions() -> None:
    space = {**BASE, "beta1": {"type": "float", "low": 0.8, "high": 0.95, "condition": ADAM_ONLY}}
    parsed = StudySpec.model_validate(spec(search_space=space))
    again = StudySpec.model_validate_json(parsed.model_dump_json(by_alias=True))
    assert again == parsed
    assert again.search_space["beta1"].condition is not None
    assert again.search_space["beta1"].condition.in_ == ["adam"]


def test_scalars_keep_their_type() -> None:
    space = SPACE.validate_python(
        {"nesterov": {"type": "categorical", "choices": [True, 1, 1.5, "x"]}}
    )
    choices = space["nesterov"].choices  # type: ignore[union-attr]
    assert [type(c) for c in choices] == [bool, int, float, str]


# --- grid_cells ---------------------------------------------------------------------------

CONDITIONAL = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam", "sgd"]},
    "lr": {"type": "fixed", "value": 0.01},
    "warmup_steps": {"type": "int", "low": 0, "high": 30, "step": 10},
    "beta1": {
        "type": "categorical",
        "choices": [0.8, 0.9],
        "condition": {"param": "optimizer", "in": ["adam", "radam"]},
    },
    "momentum": {
        "type": "categorical",
        "choices": [0.0, 0.5, 0.9],
        "condition": {"param": "optimizer", "in": ["sgd"]},
    },
    "nesterov": {
        "type": "categorical",
        "choices": [False, True],
        "condition": {"param": "momentum", "in": [0.9]},
    },
}


def test_grid_cells_honour_conditions() -> None:
    space = SPACE.validate_python(CONDITIONAL)
    cells = grid_cells(space)

    expected = []
    for optimizer, warmup in itertools.product(["adam", "radam", "sgd"], [0, 10, 20, 30]):
        base = {"optimizer": optimizer, "lr": 0.01, "warmup_steps": warmup}
        if optimizer in ("adam", "radam"):
            expected += [{**base, "beta1": b} for b in (0.8, 0.9)]
        else:
            expected += [{**base, "momentum": m} for m in (0.0, 0.5)]
            expected += [{**base, "momentum": 0.9, "nesterov": n} for n in (False, True)]
    # warmup x (adam and radam x beta1 + sgd x (two momenta + momentum 0.9 x nesterov))
    assert len(cells) == 4 * (2 * 2 + 2 + 2) == 32
    assert len({frozenset(c.items()) for c in cells}) == len(cells)
    assert {frozenset(c.items()) for c in cells} == {frozenset(c.items()) for c in expected}
    assert all(contains(space, cell) for cell in cells)


def test_grid_cells_refuse_a_continuous_parameter() -> None:
    with pytest.raises(ValueError, match="lr has no finite list of values"):
        grid_cells(SPACE.validate_python(BASE))


# --- contains -----------------------------------------------------------------------------


def sample(space: dict[str, Any], rng: random.Random) -> dict[str, Scalar]:
    """A point of ``space`` drawn the way a sampler would, parents first."""
    point: dict[str, Scalar] = {}
    for name in sampling_order(space):
        param = space[name]
        if not is_active(param, point):
            continue
        if isinstance(param, FloatParam):
            if param.log:
                value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
            else:
                value = rng.uniform(param.low, param.high)
            # exp(log(high)) may round past high; samplers clip, so does this one.
            point[name] = min(max(value, param.low), param.high)
        elif isinstance(param, IntParam):
            point[name] = rng.randrange(param.low, param.high + 1, param.step)
        elif isinstance(param, CategoricalParam):
            point[name] = rng.choice(param.choices)
        else:
            point[name] = param.value
    return point


MIXED = {
    **BASE,
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "warmup_steps": {"type": "int", "low": 0, "high": 500, "step": 50},
    "beta2": {"type": "float", "low": 0.9, "high": 0.999, "condition": ADAM_ONLY},
    "momentum": {
        "type": "categorical",
        "choices": [0.0, 0.9],
        "condition": {"param": "optimizer", "in": ["sgd"]},
    },
    "weight_decay": {"type": "fixed", "value": 0.01},
}


def test_contains_accepts_sampled_points() -> None:
    space = SPACE.validate_python(MIXED)
    rng = random.Random(1)
    points = [sample(space, rng) for _ in range(200)]
    assert {p["optimizer"] for p in points} == {"adam", "sgd"}
    assert all(contains(space, p) for p in points)


ADAM_POINT = {
    "optimizer": "adam",
    "lr": 0.01,
    "warmup_steps": 100,
    "beta2": 0.95,
    "weight_decay": 0.01,
}


@pytest.mark.parametrize(
    "change",
    [
        {"lr": 0.5},
        {"lr": 1e-5},
        {"lr": float("nan")},
        {"lr": "0.01"},
        {"beta2": 0.9999},
        {"warmup_steps": 75},
        {"warmup_steps": 550},
        {"optimizer": "radam"},
        {"weight_decay": 0.02},
        {"momentum": 0.9},
        {"nesterov": True},
        {"beta2": None},
        {"lr": None},
    ],
    ids=repr,
)
def test_contains_rejects(change: dict[str, Any]) -> None:
    space = SPACE.validate_python(MIXED)
    assert contains(space, ADAM_POINT)
    point = {**ADAM_POINT, **change}
    point = {k: v for k, v in point.items() if v is not None}
    assert not contains(space, point)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ({"type": "int", "low": 0, "high": 1}, True),
        ({"type": "int", "low": 1, "high": 100, "log": True}, 2.5),
    ],
    ids=["bool-for-int", "fraction-for-log-int"],
)
def test_contains_rejects_a_value_of_the_wrong_type(param: dict[str, Any], value: Scalar) -> None:
    space = SPACE.validate_python({**BASE, "warmup_steps": param})
    assert not contains(space, {"optimizer": "adam", "lr": 0.01, "warmup_steps": value})


def test_log_int_with_a_step_is_rejected() -> None:
    warmup = {"type": "int", "low": 10, "high": 1000, "step": 10, "log": True}
    assert "search_space.warmup_steps.step" in problems(warmup_steps=warmup)


def test_numerically_equal_choices_do_not_make_duplicate_grid_cells() -> None:
    space = {**BASE, "lr": {"type": "fixed", "value": 0.01}}
    space["weight_decay"] = {"type": "categorical", "choices": [0, 0.0]}
    with pytest.raises(
        ValidationError, match=r"search_space\.weight_decay\.choices must not repeat"
    ):
        StudySpec.model_validate(spec(search_space=space, sampler={"type": "grid"}, n_trials=None))


# --- properties ---------------------------------------------------------------------------


st = hypothesis.strategies


@st.composite
def spaces(draw: Any, finite: bool) -> dict[str, Any]:
    """Valid search spaces: required params, optional Adam/SGD params conditional on optimizer.

    ``finite`` keeps to categorical, fixed and non-log int parameters (a grid's kind of space).
    """
    unit = st.floats(0.0, 0.99, allow_nan=False)
    positive = st.floats(1e-6, 10.0, allow_nan=False)

    def float_param(values: Any) -> Any:
        categorical = st.lists(values, min_size=1, max_size=3, unique=True).map(
            lambda cs: {"type": "categorical", "choices": cs}
        )
        fixed = values.map(lambda v: {"type": "fixed", "value": v})
        if finite:
            return categorical | fixed
        ranged = st.tuples(values, values, st.booleans()).map(
            lambda t: {
                "type": "float",
                "low": min(t[:2]),
                "high": max(t[:2]),
                "log": t[2] and min(t[:2]) > 0,
            }
        )
        return categorical | fixed | ranged

    optimizers = draw(st.lists(st.sampled_from(OPTIMIZERS), min_size=1, max_size=4, unique=True))
    space: dict[str, Any] = {
        "optimizer": {"type": "categorical", "choices": optimizers},
        "lr": draw(float_param(positive)),
    }
    low = draw(st.integers(0, 50))
    step = draw(st.integers(1, 20))
    space["warmup_steps"] = {
        "type": "int",
        "low": low,
        "high": low + step * draw(st.integers(0, 4)),
        "step": step,
    }
    for name, values in (("beta1", unit), ("beta2", unit), ("momentum", unit)):
        if draw(st.booleans()):
            param = draw(float_param(values))
            if draw(st.booleans()):
                parents = draw(st.lists(st.sampled_from(optimizers), min_size=1, unique=True))
                param["condition"] = {"param": "optimizer", "in": parents}
            space[name] = param
    if draw(st.booleans()):
        nesterov: dict[str, Any] = {"type": "categorical", "choices": [True, False]}
        if "momentum" in space and space["momentum"]["type"] != "float":
            parent = space["momentum"]
            choices = parent["choices"] if parent["type"] == "categorical" else [parent["value"]]
            nesterov["condition"] = {"param": "momentum", "in": choices[:1]}
        space["nesterov"] = nesterov
    return space


@hypothesis.settings(max_examples=150, deadline=None, database=None)
@hypothesis.given(spaces(finite=True))
def test_every_grid_cell_is_a_distinct_point_of_its_space(raw: dict[str, Any]) -> None:
    space = SPACE.validate_python(raw)
    assert check_search_space(space) == []
    cells = grid_cells(space)
    assert cells
    assert grid_size(space) == len(cells)
    assert len({frozenset(c.items()) for c in cells}) == len(cells)
    for cell in cells:
        assert contains(space, cell), cell
        for name, param in space.items():
            assert (name in cell) == is_active(param, cell)


@hypothesis.settings(max_examples=150, deadline=None, database=None)
@hypothesis.given(spaces(finite=False), st.randoms(use_true_random=False))
def test_every_sampled_point_is_in_its_space(raw: dict[str, Any], rng: random.Random) -> None:
    space = SPACE.validate_python(raw)
    assert check_search_space(space) == []
    point = sample(space, rng)
    assert contains(space, point)
    # Dropping any active parameter leaves a point that is no longer in the space.
    for name in point:
        assert not contains(space, {k: v for k, v in point.items() if k != name})


# --- size, counted before anything is built ---------------------------------------------------


def test_grid_size_counts_conditional_cells_without_building_them() -> None:
    space = SPACE.validate_python(
        {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "radam"]},
            "lr": {"type": "categorical", "choices": [0.1, 0.01]},
            "beta2": {
                "type": "categorical",
                "choices": [0.9, 0.99, 0.999],
                "condition": {"param": "optimizer", "in": ["adam", "radam"]},
            },
            "momentum": {
                "type": "fixed",
                "value": 0.9,
                "condition": {"param": "optimizer", "in": ["sgd"]},
            },
            "nesterov": {
                "type": "categorical",
                "choices": [True, False],
                "condition": {"param": "momentum", "in": [0.9]},
            },
        }
    )
    assert grid_size(space) == len(grid_cells(space)) == (3 + 3 + 2) * 2


def test_grid_size_of_a_huge_int_range_is_arithmetic() -> None:
    space = SPACE.validate_python(
        {**BASE, "warmup_steps": {"type": "int", "low": 0, "high": 2**62}}
    )
    assert grid_size(space) is None  # lr is a float range: no grid
    finite = {**space, "lr": SPACE.validate_python({"lr": {"type": "fixed", "value": 0.1}})["lr"]}
    assert grid_size(finite) == 2 * (2**62 + 1)


def test_a_condition_on_a_huge_int_range_is_refused_without_listing_it() -> None:
    found = problems(
        warmup_steps={"type": "int", "low": 0, "high": 2**62},
        beta1={"type": "fixed", "value": 0.9, "condition": {"param": "warmup_steps", "in": [1]}},
    )
    assert "categorical or fixed" in found["search_space.beta1.condition.param"]


def huge_grid(cells_per_axis: int) -> dict[str, Any]:
    return spec(
        sampler={"type": "grid"},
        n_trials=None,
        search_space={
            "optimizer": {"type": "fixed", "value": "adam"},
            "lr": {"type": "categorical", "choices": [10.0**-i for i in range(1, 301)]},
            "warmup_steps": {"type": "int", "low": 0, "high": cells_per_axis - 1},
            "beta2": {
                "type": "categorical",
                "choices": [0.5 + i / 4000 for i in range(1000)],
            },
        },
    )


@pytest.mark.parametrize("cells_per_axis", [10**6, 2**60])
def test_an_oversized_grid_is_refused_in_milliseconds(cells_per_axis: int) -> None:
    """Issue 16: a 3000 x 3000 grid was built whole (8.6 s, 2 GB) before its size was checked."""
    import time

    body = huge_grid(cells_per_axis)
    timings = []
    for _ in range(3):  # the best of three: a loaded machine may stall any one of them
        started = time.perf_counter()
        with pytest.raises(ValidationError, match="grid cells"):
            StudySpec.model_validate(body)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.05, timings
