"""Search spaces: one typed entry per trial parameter, each optionally conditional on another.

A search space is a mapping from parameter name to one of :class:`FloatParam`, :class:`IntParam`,
:class:`CategoricalParam` or :class:`FixedParam` (told apart by ``type``). A parameter with a
``condition`` exists in a trial only when the named parent parameter took one of the listed
values, e.g. ``beta1`` only when ``optimizer`` is in the Adam family.

:func:`check_search_space` lists every problem with the dotted path of the offending field, so
that a submit can be rejected with all of them at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from api_schemas.params import PARAMS, REQUIRED_PARAMS

Scalar = StrictBool | StrictInt | float | str
"""A parameter value. Strict so that ``true`` stays a bool and ``3`` stays an int."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Condition(_Model):
    """The parameter exists only when parameter ``param`` took one of the values ``in``."""

    param: str
    in_: list[Scalar] = Field(alias="in", min_length=1)


class _Param(_Model):
    condition: Condition | None = None

    def in_values(self) -> list[Scalar]:
        """The parent's values that switch this parameter on (none without a condition)."""
        return [] if self.condition is None else self.condition.in_


class FloatParam(_Param):
    """A float drawn from [low, high], log-uniformly when ``log`` is true."""

    type: Literal["float"] = "float"
    low: StrictFloat
    high: StrictFloat
    log: StrictBool = False


class IntParam(_Param):
    """An integer drawn from [low, high] in multiples of ``step``."""

    type: Literal["int"] = "int"
    low: StrictInt
    high: StrictInt
    step: StrictInt = Field(default=1, ge=1)
    log: StrictBool = False


class CategoricalParam(_Param):
    """One of the listed ``choices``."""

    type: Literal["categorical"] = "categorical"
    choices: list[Scalar] = Field(min_length=1)


class FixedParam(_Param):
    """Always ``value``: documents a setting without searching it."""

    type: Literal["fixed"] = "fixed"
    value: Scalar


Param = Annotated[
    FloatParam | IntParam | CategoricalParam | FixedParam, Field(discriminator="type")
]
SearchSpace = dict[str, Param]
PARAM_TYPES: frozenset[str] = frozenset({"float", "int", "categorical", "fixed"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: the dotted path of the field and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field} {self.message}"


def n_values(param: Param) -> int | None:
    """How many values ``param`` can take (see :func:`values_of`), without listing them."""
    if isinstance(param, CategoricalParam):
        return len(param.choices)
    if isinstance(param, FixedParam):
        return 1
    if isinstance(param, IntParam) and not param.log:
        return len(range(param.low, param.high + 1, param.step))
    return None


def values_of(param: Param) -> list[Scalar] | None:
    """The finite list of values ``param`` can take, or None for a continuous range.

    An int range is listed in full: check its size with :func:`n_values` first.
    """
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if isinstance(param, FixedParam):
        return [param.value]
    if isinstance(param, IntParam) and not param.log:
        return list(range(param.low, param.high + 1, param.step))
    return None


def _check_param(name: str, param: Param) -> Iterator[Problem]:
    path = f"search_space.{name}"
    domain = PARAMS.get(name)
    if domain is None:
        known = ", ".join(sorted(PARAMS))
        yield Problem(path, f"is not a known parameter; choose from {known}")
        return
    if isinstance(param, FloatParam | IntParam):
        if domain.kind not in ("float", "int"):
            yield Problem(f"{path}.type", f"must be categorical or fixed for {name}")
            return
        if domain.kind == "int" and isinstance(param, FloatParam):
            yield Problem(f"{path}.type", "must be int, categorical or fixed for an integer")
            return
        if param.low > param.high:
            yield Problem(f"{path}.low", "must be <= high")
        if param.log and param.low <= 0:
            yield Problem(f"{path}.low", "must be > 0 when log is true")
        if isinstance(param, IntParam) and param.log and param.step != 1:
            yield Problem(f"{path}.step", "must be 1 when log is true")
        for bound in ("low", "high"):
            problem = domain.problem(getattr(param, bound))
            if problem:
                yield Problem(f"{path}.{bound}", problem)
    elif isinstance(param, CategoricalParam):
        for i, choice in enumerate(param.choices):
            problem = domain.problem(choice)
            if problem:
                yield Problem(f"{path}.choices[{i}]", problem)
        # By value, but with bools apart: 0 and 0.0 repeat each other, False and 0 do not.
        if len({(type(c) is bool, c) for c in param.choices}) != len(param.choices):
            yield Problem(f"{path}.choices", "must not repeat a value")
    else:
        problem = domain.problem(param.value)
        if problem:
            yield Problem(f"{path}.value", problem)


def _check_condition(name: str, param: Param, space: Mapping[str, Param]) -> Iterator[Problem]:
    condition = param.condition
    if condition is None:
        return
    path = f"search_space.{name}.condition"
    if name in REQUIRED_PARAMS:
        yield Problem(path, f"is not allowed: every trial needs {name}")
        return
    parent = space.get(condition.param)
    if parent is None:
        yield Problem(f"{path}.param", f"names {condition.param!r}, which is not in search_space")
        return
    if not isinstance(parent, CategoricalParam | FixedParam):
        yield Problem(f"{path}.param", "must name a categorical or fixed parameter")
        return
    # A set, not the list: both lists can be as long as the body allows. Membership is by
    # value, as in ``is_active`` (hashing agrees with ==, so 1 and True still match).
    choices = set(values_of(parent) or ())
    for i, value in enumerate(condition.in_):
        if value not in choices:
            yield Problem(f"{path}.in[{i}]", f"{value!r} is not a choice of {condition.param}")


def sampling_order(space: Mapping[str, Param]) -> list[str]:
    """Parameter names with every condition's parent before its children.

    Raises ValueError naming a parameter on a cycle of conditions.
    """
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(name)
        state[name] = "visiting"
        condition = space[name].condition
        if condition is not None and condition.param in space:
            visit(condition.param)
        state[name] = "done"
        order.append(name)

    for name in space:
        visit(name)
    return order


def check_search_space(space: Mapping[str, Param]) -> list[Problem]:
    """Every problem with ``space``, each naming its field; empty when the space is valid."""
    problems: list[Problem] = []
    for name in REQUIRED_PARAMS:
        if name not in space:
            problems.append(Problem(f"search_space.{name}", "is required"))
    for name, param in space.items():
        problems.extend(_check_param(name, param))
        problems.extend(_check_condition(name, param, space))
    try:
        sampling_order(space)
    except ValueError as cycle:
        problems.append(Problem(f"search_space.{cycle}.condition", "forms a cycle"))
    # One problem per field: the first is the most specific ("> 0 when log is true").
    return list({p.field: p for p in reversed(problems)}.values())[::-1]


def is_active(param: Param, params: Mapping[str, Scalar]) -> bool:
    """Whether ``param`` exists in a trial whose parameters so far are ``params``."""
    condition = param.condition
    return condition is None or (
        condition.param in params and params[condition.param] in condition.in_
    )


def grid_size(space: Mapping[str, Param]) -> int | None:
    """``len(grid_cells(space))``, computed from the space without building a cell.

    A parameter's values each multiply in the cells of the parameters conditional on it that
    they switch on; a switched-off child contributes one way (absent). None when a parameter has
    no finite list of values. Cost: one pass over the values, however many cells they make.
    """
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for name, param in space.items():
        if n_values(param) is None:
            return None
        if param.condition is None:
            roots.append(name)
        else:
            children.setdefault(param.condition.param, []).append(name)

    def size(name: str) -> int:
        param = space[name]
        kids = [(set(space[c].in_values()), c) for c in children.get(name, [])]
        if not kids or isinstance(param, IntParam):  # an int parent is refused by the check
            return n_values(param) or 0
        sizes = {c: size(c) for _, c in kids}
        values = values_of(param) or []
        return sum(math.prod(sizes[c] if v in on else 1 for on, c in kids) for v in values)

    # A parameter on a cycle of conditions is reached from no root: no cell has it (and
    # check_search_space refuses the space).
    return math.prod(size(name) for name in roots)


def grid_cells(space: Mapping[str, Param]) -> list[dict[str, Scalar]]:
    """Every combination of values, honouring conditions (an inactive parameter is absent).

    Every parameter must have a finite list of values (see :func:`values_of`).
    """
    cells: list[dict[str, Scalar]] = [{}]
    for name in sampling_order(space):
        param = space[name]
        values = values_of(param)
        if values is None:
            raise ValueError(f"{name} has no finite list of values")
        cells = [
            {**cell, name: value} if is_active(param, cell) else cell
            for cell, value in itertools.product(cells, values)
            if is_active(param, cell) or value == values[0]
        ]
    return cells


def contains(space: Mapping[str, Param], params: Mapping[str, Scalar]) -> bool:
    """Whether ``params`` is a point of ``space``: active parameters present and in range."""
    for name, param in space.items():
        active = is_active(param, params)
        if not active:
            if name in params:
                return False
            continue
        if name not in params:
            return False
        value = params[name]
        choices = values_of(param)
        if choices is not None:
            if (type(value) is bool, value) not in {(type(c) is bool, c) for c in choices}:
                return False
        elif isinstance(param, FloatParam | IntParam):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if math.isnan(value) or not param.low <= value <= param.high:
                return False
            if isinstance(param, IntParam) and not float(value).is_integer():
                return False
    return set(params) <= set(space)
