"""A lease draws exactly what ``Trial.suggest_*`` would: same sampler calls, same order.

``service.sampling.sample`` draws into a trial that is not stored yet (the lease writes it with
its parameters in one transaction). On a fixed seed it must give the very parameters Optuna's
own ask-and-suggest gives, for the random sampler and for TPE (past its startup trials, so that
its model of the history is used), conditional parameters included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from api_schemas import StudySpec
from api_schemas.search_space import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    is_active,
    sampling_order,
)
from service.sampling import sample
from service.store import Store, build_sampler
from tests.service.conftest import CONDITIONAL_SPACE, Api, study_spec

SPACE = {
    **CONDITIONAL_SPACE,
    "eps": {"type": "fixed", "value": 1e-8},
}


def spec(sampler: str, n_trials: int) -> StudySpec:
    return StudySpec.model_validate(
        study_spec(search_space=SPACE, sampler={"type": sampler, "seed": 7}, n_trials=n_trials)
    )


def suggested(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """The parameters as ``Trial.suggest_*`` draws them (what the service did before)."""
    params: dict[str, Any] = {}
    for name in sampling_order(spec.search_space):
        param = spec.search_space[name]
        if not is_active(param, params):
            continue
        if isinstance(param, FloatParam):
            params[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
        elif isinstance(param, IntParam):
            params[name] = trial.suggest_int(
                name, param.low, param.high, step=param.step, log=param.log
            )
        elif isinstance(param, CategoricalParam | FixedParam):
            choices = param.choices if isinstance(param, CategoricalParam) else [param.value]
            params[name] = trial.suggest_categorical(name, choices)
    return params


def loss(params: dict[str, Any]) -> float:
    """A made-up objective with a clear optimum, so that TPE has something to model."""
    return (math.log10(params["lr"]) + 2.5) ** 2 + (params["optimizer"] == "sgd")


def blank(number: int) -> FrozenTrial:
    return FrozenTrial(
        number=number,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_sample_draws_what_trial_suggest_draws(sampler: str) -> None:
    n = 30  # TPE samples from its model after 10 startup trials
    the_spec = spec(sampler, n)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reference = optuna.create_study(sampler=build_sampler(the_spec, n_existing=0))
    ours = optuna.create_study(sampler=build_sampler(the_spec, n_existing=0))
    for number in range(n):
        trial = reference.ask()
        expected = suggested(trial, the_spec)
        reference.tell(trial, loss(expected))

        frozen = blank(number)
        with Store.sampling(ours, frozen) as drawing:  # as a lease does
            got = sample(drawing, frozen, the_spec)
        assert got == expected, number
        distributions: dict[str, BaseDistribution] = frozen.distributions
        assert distributions == trial.distributions
        ours.add_trial(
            optuna.trial.create_trial(
                params=frozen.params,
                distributions=distributions,
                value=loss(got),
                system_attrs=frozen.system_attrs,
            )
        )


def test_a_queued_trial_keeps_its_fixed_params_and_draws_the_rest() -> None:
    the_spec = spec("random", 2)
    study = optuna.create_study(sampler=build_sampler(the_spec, n_existing=0))
    frozen = blank(0)
    frozen.system_attrs = {"fixed_params": {"optimizer": "sgd", "lr": 0.01}}
    with Store.sampling(study, frozen) as drawing:
        got = sample(drawing, frozen, the_spec)
    assert (got["optimizer"], got["lr"]) == ("sgd", 0.01)
    assert "momentum" in got and "beta2" not in got  # the condition follows the fixed parent


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_leases_draw_what_optuna_ask_and_suggest_draw(
    make_api: Callable[..., Api], sampler: str
) -> None:
    """Through the service and its database: the same sequence as raw Optuna on the same seed."""
    n = 14
    api = make_api()
    study = api.create(search_space=SPACE, sampler={"type": sampler, "seed": 7}, n_trials=n)
    the_spec = StudySpec.model_validate(study["spec"])
    reference = optuna.create_study(sampler=build_sampler(the_spec, n_existing=0))
    for _ in range(n):
        assignment = api.lease()
        assert assignment is not None
        trial = reference.ask()
        expected = suggested(trial, the_spec)
        assert assignment["params"] == expected
        reference.tell(trial, loss(expected))
        assert api.complete(assignment, loss(assignment["params"])).status_code == 200
    assert api.study(study["id"])["state"] == "finished"
