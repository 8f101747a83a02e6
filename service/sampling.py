"""Draw a trial's parameters from the study's sampler without writing anything.

Optuna's ``Trial.suggest_*`` writes each parameter in its own transaction as it draws it. A
lease instead draws them all into the ``FrozenTrial`` it will store, then writes the trial, its
parameters, attributes and the lease in one transaction (``Store.start_trial``). ``sample``
makes the sampler calls ``Trial`` makes, in the same order (``before_trial``, then the relative
space and sample, lazily, then ``sample_independent`` per parameter; fixed and single-valued
parameters take their value without the sampler), so a seeded sampler draws exactly what
``Trial.suggest_*`` would (``tests/service/test_sampling.py``).

What a sampler writes to the trial while it draws (Optuna's multivariate TPE with the constant
liar shares its relative sample as system attributes) is kept on the ``FrozenTrial`` by
``Store.sampling`` and written with the trial.
"""

from __future__ import annotations

from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial

from api_schemas.search_space import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    Scalar,
    is_active,
    sampling_order,
)
from api_schemas.studies import WORKLOAD_PARAM, StudySpec


class _Draw:
    """``optuna.Trial._suggest`` over a FrozenTrial that is not stored yet."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._study = study
        self._trial = trial
        self._fixed: dict[str, Any] = trial.system_attrs.get("fixed_params", {})
        self._relative_space: dict[str, BaseDistribution] | None = None
        self._relative: dict[str, Any] | None = None
        study.sampler.before_trial(study, trial)

    def _relative_params(self) -> dict[str, Any]:
        if self._relative is None:
            sampler = self._study.sampler
            self._relative_space = sampler.infer_relative_search_space(self._study, self._trial)
            self._relative = sampler.sample_relative(self._study, self._trial, self._relative_space)
        return self._relative

    def __call__(self, name: str, distribution: BaseDistribution) -> Any:
        trial = self._trial
        if name in trial.distributions:
            check_distribution_compatibility(trial.distributions[name], distribution)
            return trial.params[name]
        if name in self._fixed:
            value = self._fixed[name]
        elif distribution.single():
            value = _single_value(distribution)
        elif name in self._relative_params():
            assert self._relative_space is not None
            check_distribution_compatibility(self._relative_space[name], distribution)
            value = self._relative_params()[name]
        else:
            value = self._study.sampler.sample_independent(self._study, trial, name, distribution)
        distribution.to_internal_repr(value)  # validates, as Trial._suggest does
        trial.distributions[name] = distribution
        trial.params[name] = value
        return value


def _single_value(distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0]
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    return distribution.low


def sample(study: optuna.Study, trial: FrozenTrial, spec: StudySpec) -> dict[str, Scalar]:
    """Draw every active parameter of ``spec`` into ``trial`` (its ``params`` and
    ``distributions``), parents before the parameters conditional on them; returns them.

    A study with controls first draws which workload to train (a grid's cell fixes it).
    """
    draw = _Draw(study, trial)
    params: dict[str, Scalar] = {}
    if spec.controls:
        params[WORKLOAD_PARAM] = draw(WORKLOAD_PARAM, CategoricalDistribution(list(spec.workloads)))
    space = spec.search_space
    for name in sampling_order(space):
        param = space[name]
        if not is_active(param, params):
            continue
        if isinstance(param, FloatParam):
            params[name] = float(
                draw(name, FloatDistribution(param.low, param.high, log=param.log))
            )
        elif isinstance(param, IntParam):
            distribution = IntDistribution(param.low, param.high, log=param.log, step=param.step)
            params[name] = int(draw(name, distribution))
        elif isinstance(param, CategoricalParam | FixedParam):
            choices = param.choices if isinstance(param, CategoricalParam) else [param.value]
            # Choices are never None (Scalar excludes it), so neither is the draw.
            params[name] = cast(Scalar, draw(name, CategoricalDistribution(choices)))
    return params
